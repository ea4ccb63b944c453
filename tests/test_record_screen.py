"""The screen recorder under a real Xvfb with a real X window, at 30 Hz, and kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.gamepad import write_event
from dataset.session import load_image, load_session, read_meta
from testing.display import animated_window, virtual_display

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not shutil.which("Xvfb") or not shutil.which("xwininfo"),
                                reason="needs Xvfb and xwininfo (apt-get install xvfb x11-utils)")


@pytest.fixture
def window():
    with virtual_display() as display, animated_window(display, size=(240, 320)) as region:
        yield display, region


def _ignore_sigint():  # as a background job of a non-interactive shell starts: SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _record(display, args, **kw):
    env = {**os.environ, "DISPLAY": display}
    return subprocess.Popen([sys.executable, "-m", "record", "--source", "screen", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_rows(out, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        csv = out / "frames.csv"
        if csv.exists() and csv.read_text().count("\n") > n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{out}: fewer than {n} rows after {timeout} s")


def test_records_the_window_at_30hz_with_the_gamepad(window, tmp_path):
    display, region = window
    pad = tmp_path / "pad"
    os.mkfifo(pad)
    out = tmp_path / "s"
    proc = _record(display, ["--window", "KartPilot-Test", "--gamepad", str(pad), "--rate", "30",
                             "--seconds", "4", "--out", str(out), "--json"])
    with open(pad, "wb", buffering=0) as fh:  # the stick goes right and A is held mid-recording
        _wait_rows(out, 10)
        write_event(fh, 3, 0, 32767)
        write_event(fh, 1, 0x130, 1)
        write_event(fh, 0, 0, 0)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["captured"] + summary["missed_ticks"] == 120  # 4 s of a 30 Hz schedule
    assert summary["frames"] + summary["dropped"] == 120  # every tick is a frame or counted as dropped
    assert {"rate_hz", "jitter_p50_ms", "jitter_p99_ms"} <= summary.keys()
    meta = read_meta(out)
    assert meta["region_from"].startswith("window:") and meta["region"] == list(region)
    assert meta["resolution"] == [240, 320] and meta["rate_hz"] == 30 and meta["source"] == "screen"
    df = load_session(out, check_images=True)
    assert len(df) == summary["frames"] and df["driver"].eq("human").all()
    assert np.all(np.diff(df["t"]) > 0)
    img = load_image(out, df["image"].iat[-1])
    assert img.shape == (240, 320, 3)
    assert tuple(img[5, 5]) == (90, 150, 230)  # the window's sky, in RGB order
    assert df["x"].iat[0] == 0 and df["x"].iat[-1] == 1.0 and df["a"].iat[-1] == 1.0
    frames = [load_image(out, df["image"].iat[i]) for i in (0, len(df) // 2)]
    assert not np.array_equal(*frames)  # it is live, not a still


def test_kill_9_loses_at_most_the_frames_in_flight(window, tmp_path):
    display, _ = window
    pad = tmp_path / "pad"
    pad.touch()
    out = tmp_path / "s"
    proc = _record(display, ["--window", "KartPilot-Test", "--gamepad", str(pad), "--rate", "30",
                             "--seconds", "60", "--out", str(out), "--writers", "2"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            csv = out / "frames.csv"
            if csv.exists() and csv.read_text().count("\n") > 30:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    df = load_session(out, check_images=True)  # loads whole: every row has its image
    assert len(df) >= 30
    assert df["frame"].tolist() == list(range(len(df)))
    for image in df["image"]:
        assert load_image(out, image).shape == (240, 320, 3)
    on_disk = sorted(p.name for p in (out / "frames").iterdir())
    rowless = [n for n in on_disk if f"frames/{n}" not in set(df["image"])]
    assert len(rowless) <= 2  # at most the frames the writer threads had in flight


def test_region_and_errors(window, tmp_path):
    display, _ = window
    pad = tmp_path / "pad"
    pad.touch()
    proc = _record(display, ["--region", "10,20,64,48", "--gamepad", str(pad), "--seconds", "0.5",
                             "--out", str(tmp_path / "r"), "--json", "--quiet"])
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert read_meta(tmp_path / "r")["resolution"] == [48, 64]
    proc = _record(display, ["--region", "700,500,640,480", "--gamepad", str(pad), "--seconds", "1",
                             "--out", str(tmp_path / "x")])
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "outside the screen" in stderr
    proc = _record(display, ["--rate", "120", "--gamepad", str(pad)])
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--rate must be in" in stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_cleanly(window, tmp_path, sig):
    display, _ = window
    pad = tmp_path / "pad"
    pad.touch()
    out = tmp_path / "s"
    # started with SIGINT ignored, as a background job of a script would be: Ctrl-C must stop it anyway
    proc = _record(display, ["--window", "KartPilot-Test", "--gamepad", str(pad), "--out", str(out), "--json"],
                   preexec_fn=_ignore_sigint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((out / "frames.csv").exists()
                                               and (out / "frames.csv").read_text().count("\n") > 10):
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped"] == ("Ctrl-C" if sig == signal.SIGINT else "SIGTERM")
    df = load_session(out, check_images=True)
    assert len(df) == summary["frames"] and read_meta(out)["summary"]["frames"] == len(df)
    assert len(list((out / "frames").iterdir())) == len(df)  # queue drained: nothing rowless


def test_one_region_format_for_record_and_drive():
    from common.screen import ScreenError, parse_region

    assert parse_region("10,20,64,48") == (10, 20, 64, 48)
    for bad, why in (("10,20,64", "x,y,w,h"), ("a,b,c,d", "x,y,w,h"), ("0,0,0,48", "positive")):
        with pytest.raises(ScreenError, match=why):
            parse_region(bad)


def test_capture_refuses_a_region_off_the_screen(xvfb):
    from common.screen import ScreenCapture, ScreenError

    with pytest.raises(ScreenError, match="outside the screen"):
        ScreenCapture((700, 500, 640, 480), display=xvfb.name)
    cap = ScreenCapture((8, 4, 64, 48), display=xvfb.name)
    try:
        assert cap.resolution == (48, 64) and cap.grab().shape == (48, 64, 3)
    finally:
        cap.close()
