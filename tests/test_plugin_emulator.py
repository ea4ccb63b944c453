"""The C plugin inside the real mupen64plus under Xvfb, with the GPL test ROM.

The demo ROM polls controller 1 every frame, so the plugin asks our test
server for input continuously. Each test bounds its emulator run and kills
it in ``finally``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from common.mupen import read_rom
from common.proc import stop
from common.xvfb import Xvfb
from testing.emulator import start_emulator
from testing.plugin_server import PluginTestServer
from testing.script_server import ScriptServer

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

# The demo ROM keeps its frame counter as a float at this RDRAM address
# (found by diffing two savestates taken 80 frames apart).
COUNTER = "counter:0x801803D8:f32"
TESTSHOT_FRAME = 120


@pytest.fixture(scope="module")
def rom(emulator_rom) -> Path:
    return emulator_rom


def _wait(predicate, timeout: float, proc=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


def _log(cfg: Path) -> str:
    path = cfg / "emulator.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _counter(req) -> float | None:
    value = req.telemetry.get("counter")
    return float(value) if value is not None else None


@pytest.fixture(scope="module")
def frame_run(rom, tmp_path_factory):
    """One emulator run posting frames with telemetry, until its --testshots frame."""
    cfg = tmp_path_factory.mktemp("plugin_frames")
    profile = ";".join([
        "w0:0x800F1800:u32", "w1:0x800F1804:s32", "h0:0x800F1800:u16", "h1:0x800F1802:u16",
        "b0:0x800F1800:u8", "b1:0x800F1801:u8", "b2:0x800F1802:u8", "b3:0x800F1803:u8",
        "sb3:0x800F1803:s8", COUNTER])
    display = Xvfb()
    srv = PluginTestServer().start()
    srv.state.keep_frames = 4
    proc = start_emulator(rom, cfg, display.name, testshots=TESTSHOT_FRAME, settings={
        "port": srv.port, "frame": 1, "timeout_ms": 2000, "profile": profile, "stats_file": cfg / "stats.json"})
    try:
        proc.wait(90)
        yield {"cfg": cfg, "requests": srv.requests(), "frames": srv.frames(), "rc": proc.returncode,
               "shots": sorted((cfg / "shots").glob("*.png"))}
    finally:
        stop(proc)
        srv.stop()
        display.close()


def test_plugin_polls_continuously(frame_run):
    reqs = frame_run["requests"]
    assert frame_run["rc"] == 0, _log(frame_run["cfg"])
    assert len(reqs) >= TESTSHOT_FRAME * 0.8, f"only {len(reqs)} polls in {TESTSHOT_FRAME} frames"
    posted = [r for r in reqs if r.method == "POST"]
    assert len(posted) >= len(reqs) - 5  # GET only before the first frame was drawn
    indexes = [r.frame_index for r in posted]
    assert indexes == sorted(indexes) and len(set(indexes)) >= TESTSHOT_FRAME * 0.7
    assert {r.path for r in reqs} == {"/0"}
    assert '"polls"' in (frame_run["cfg"] / "stats.json").read_text()


def test_posted_frames_show_the_logo(frame_run):
    from PIL import Image

    assert frame_run["shots"], f"no --testshots screenshot; log:\n{_log(frame_run['cfg'])}"
    shot = np.asarray(Image.open(frame_run["shots"][-1]).convert("RGB")).astype(np.int16)
    _idx, w, h, body = frame_run["frames"][-1]
    assert (w, h) == (shot.shape[1], shot.shape[0])
    frame = np.frombuffer(body, np.uint8).reshape(h, w, 3).astype(np.int16)
    assert frame.std() > 20  # a picture, not a blank screen
    same = np.abs(frame - shot).mean()
    flipped = np.abs(frame[::-1] - shot).mean()
    # top row first, and the same picture as the core's own screenshot
    assert same < 8, f"posted frame differs from the screenshot by {same:.1f} per channel"
    assert flipped > 3 * same


def test_telemetry_reads_rom_bytes_big_endian(frame_run, rom):
    z64 = read_rom(rom)[0x1000:0x1008]
    last = frame_run["requests"][-1].telemetry
    assert int(last["w0"]) == int.from_bytes(z64[0:4], "big")
    assert int(last["w1"]) == int.from_bytes(z64[4:8], "big", signed=True)
    assert int(last["h0"]) == int.from_bytes(z64[0:2], "big")
    assert int(last["h1"]) == int.from_bytes(z64[2:4], "big")
    assert [int(last[f"b{i}"]) for i in range(4)] == list(z64[0:4])
    assert int(last["sb3"]) == int.from_bytes(z64[3:4], "big", signed=True)
    counters = [_counter(r) for r in frame_run["requests"]]
    assert counters[-1] > counters[len(counters) // 2] > 0  # a live value, read every poll


def test_downscaled_frames(rom, tmp_path):
    from PIL import Image

    display = Xvfb()
    srv = PluginTestServer().start()
    # also: the plugin (not the command line) turns the speed limiter off
    proc = start_emulator(rom, tmp_path, display.name, testshots=60, speed_limit=True, settings={
        "port": srv.port, "frame": 1, "timeout_ms": 2000, "frame_width": 200, "frame_height": 150,
        "speed_limiter": False})
    try:
        proc.wait(90)
        frames = srv.frames()
        shots = sorted((tmp_path / "shots").glob("*.png"))
        assert frames and shots, _log(tmp_path)
        _idx, w, h, body = frames[-1]
        assert (w, h) == (200, 150)
        frame = np.frombuffer(body, np.uint8).reshape(h, w, 3).astype(np.int16)
        ref = np.asarray(Image.open(shots[-1]).convert("RGB").resize((200, 150), Image.BOX)).astype(np.int16)
        assert np.abs(frame - ref).mean() < 10
        assert "speed limiter off" in _log(tmp_path)
    finally:
        stop(proc)
        srv.stop()
        display.close()


def test_savestate_save_then_reset_restores(rom, tmp_path):
    display = Xvfb()
    srv = PluginTestServer().start()
    state = tmp_path / "reset.st"
    proc = start_emulator(rom, tmp_path, display.name, settings={
        "port": srv.port, "timeout_ms": 2000, "profile": COUNTER, "savestate": state})
    try:
        assert _wait(lambda: len(srv.requests()) >= 30, 40, proc), _log(tmp_path)
        with srv.state.lock:
            srv.state.commands.append("save")
        saved_at = _counter(srv.requests()[-1])
        assert _wait(lambda: state.exists() and _counter(srv.requests()[-1]) > saved_at + 60, 30, proc), \
            _log(tmp_path)
        before_reset = _counter(srv.requests()[-1])
        n_before = len(srv.requests())
        with srv.state.lock:
            srv.state.commands.append("reset")
        assert _wait(lambda: len(srv.requests()) > n_before + 30, 30, proc), _log(tmp_path)
        after = [_counter(r) for r in srv.requests()[n_before:]]
        restored = [c for c in after if c < before_reset - 30]
        assert restored, f"counter never went back: saved at {saved_at}, {before_reset} before reset, then {after}"
        assert abs(restored[0] - saved_at) <= 5
    finally:
        stop(proc)
        srv.stop()
        display.close()
    assert "CMD reset: load state" in _log(tmp_path)


def test_server_killed_mid_run_emulator_continues(rom, tmp_path):
    display = Xvfb()
    srv = PluginTestServer().start()
    port = srv.port
    proc = start_emulator(rom, tmp_path, display.name, settings={
        "port": port, "profile": COUNTER, "reconnect_max_ms": 200, "timeout_ms": 2000})
    try:
        assert _wait(lambda: len(srv.requests()) >= 40, 40, proc), _log(tmp_path)
        srv.stop()
        reqs = srv.requests()
        last_before = _counter(reqs[-1])
        # The outage must span many game frames on this machine, however fast it runs today: a
        # poll in flight when the server stopped may wait out timeout_ms (2 s), then the game should
        # run on neutral input for 90 frames at the pace it kept while the server answered.
        pace = (last_before - _counter(reqs[10])) / max(reqs[-1].time - reqs[10].time, 1e-3)
        time.sleep(min(2.0 + 90.0 / max(pace, 1.0), 60.0))
        assert proc.poll() is None, "emulator died while the server was down:\n" + _log(tmp_path)
        srv = PluginTestServer(port=port).start()
        assert _wait(lambda: len(srv.requests()) >= 10, 20, proc), _log(tmp_path)
        first_after = _counter(srv.requests()[0])
        assert _wait(lambda: "answering again" in _log(tmp_path), 10, proc), _log(tmp_path)
    finally:
        stop(proc)
        srv.stop()
        display.close()
    log = _log(tmp_path)
    assert "connection failed" in log or "server closed" in log, log
    neutral = int(re.search(r"server answering again after (\d+) neutral poll", log).group(1))
    # the game kept polling on neutral input while nobody answered, and kept running
    assert neutral >= 30, (neutral, log)
    assert first_after > last_before + 30, (last_before, first_after, neutral)


def _script_counter(req) -> float | None:
    for part in req.headers.get("x-telemetry", "").split(";"):
        name, _, value = part.partition("=")
        if name == "counter":
            return float(value)
    return None


def test_confirmed_commands_run_once_in_the_emulator(rom, tmp_path):
    """CMD + CMD_ID repeated in many answers (as the drive server does until
    it sees X-KartPilot-Done, and 20 more here): the game saves once and
    loads once, and every later request confirms the last id."""
    display = Xvfb()
    srv = ScriptServer(answer={}).start()
    state = tmp_path / "confirmed.st"
    proc = start_emulator(rom, tmp_path, display.name, settings={
        "port": srv.port, "timeout_ms": 2000, "profile": COUNTER, "savestate": state})
    try:
        assert _wait(lambda: len(srv.requests()) >= 30, 40, proc), _log(tmp_path)
        srv.command(0, "save", 11, resend_after_done=20)
        assert _wait(lambda: srv.pending(0).confirmed and srv.pending(0).sent >= 21, 30, proc), _log(tmp_path)
        assert _wait(state.exists, 10, proc)
        saved_at = _script_counter(next(r for r in srv.requests() if r.headers.get("x-kartpilot-done") == "11"))
        assert _wait(lambda: _script_counter(srv.requests()[-1]) > saved_at + 60, 30, proc), _log(tmp_path)
        n_before = len(srv.requests())
        srv.command(0, "reset", 12, resend_after_done=20)
        assert _wait(lambda: srv.pending(0).confirmed and srv.pending(0).sent >= 21, 30, proc), _log(tmp_path)
        assert _wait(lambda: len(srv.requests()) > n_before + 60, 30, proc), _log(tmp_path)
    finally:
        stop(proc)
        srv.stop()
        display.close()
    after = [_script_counter(r) for r in srv.requests()[n_before:]]
    drops = [i for i in range(1, len(after)) if after[i] < after[i - 1] - 30]
    assert len(drops) == 1, f"the state was loaded {len(drops)} times: {after}"
    assert abs(after[drops[0]] - saved_at) <= 5
    done = [r.headers.get("x-kartpilot-done") for r in srv.requests()]
    assert done[-1] == "12" and None not in done[done.index("11"):]
    log = _log(tmp_path)
    assert log.count("CMD save: save state CMD_ID 11") == 1, log
    assert log.count("CMD reset: load state CMD_ID 12") == 1, log
