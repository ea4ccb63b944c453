"""common.mupen (finding mupen64plus and the plugin, settings, byte order, the one command line)
and common.proc.stop (the one way children are stopped), on real files and real processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import mupen
from common.mupen import (
    DUMMY,
    MAGIC_Z64,
    USER_INPUT,
    EmulatorError,
    RomError,
    emulator_command,
    launch,
    plugin_sets,
    read_rom,
    to_big_endian,
)
from common.proc import stop


@pytest.fixture
def fake_mupen(tmp_path, monkeypatch) -> Path:
    """An executable standing in for mupen64plus through $KARTPILOT_MUPEN (commands are only built)."""
    exe = tmp_path / "bin" / "my-mupen"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("KARTPILOT_MUPEN", str(exe))
    return exe


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch) -> Path:
    so = tmp_path / "plugin.so"
    so.write_bytes(b"\x7fELF")
    monkeypatch.setenv("KARTPILOT_PLUGIN", str(so))
    return so


@pytest.fixture
def rom(tmp_path) -> Path:
    path = tmp_path / "game.z64"
    path.write_bytes(MAGIC_Z64 + bytes(60))
    return path


def _sets(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--set")


def test_kartpilot_mupen_is_honoured(fake_mupen, fake_plugin, rom, monkeypatch):
    assert mupen.find_mupen() == str(fake_mupen)
    assert emulator_command(rom)[0] == str(fake_mupen)
    monkeypatch.setenv("KARTPILOT_MUPEN", str(fake_mupen.parent / "absent"))
    assert mupen.find_mupen() is None
    with pytest.raises(EmulatorError, match="KARTPILOT_MUPEN=.*absent"):
        emulator_command(rom)


def test_headless_command(fake_mupen, fake_plugin, rom, tmp_path):
    cfg = tmp_path / "cfg"
    cmd = emulator_command(rom, settings={"port": 8090, "frame": 1, "speed_limiter": False},
                           sets={"Video-General[ScreenWidth]": 320}, config_dir=cfg, resolution="320x240",
                           load_state=tmp_path / "s.st", testshots="10,20")
    assert cmd[-1] == str(rom)
    for flag in ("--noosd", "--nospeedlimit", "--nosaveoptions"):
        assert flag in cmd
    pairs = dict(zip(cmd[1:-1], cmd[2:], strict=False))
    assert pairs["--audio"] == "dummy" and pairs["--gfx"] == mupen.GFX and pairs["--rsp"] == mupen.RSP
    assert pairs["--input"] == str(fake_plugin.resolve()) and pairs["--configdir"] == str(cfg)
    assert pairs["--resolution"] == "320x240"
    # our plugin loads the start state at its first poll: the core's --savestate at boot can hang
    assert "--savestate" not in cmd
    assert pairs["--testshots"] == "10,20"
    sets = _sets(cmd)
    assert sets["Input-KartPilot-Control0[port]"] == "8090"
    assert sets["Input-KartPilot-Control0[speed_limiter]"] == "False"
    assert sets["Video-General[ScreenWidth]"] == "320"
    assert sets["Input-KartPilot-Control0[savestate]"] == str(tmp_path / "s.st")
    assert sets["Input-KartPilot-Control0[load_savestate]"] == "True"
    for key, sub in (("ScreenshotPath", "shots"), ("SaveStatePath", "states"), ("SaveSRAMPath", "sram")):
        assert sets[f"Core[{key}]"] == f"{cfg / sub}/" and (cfg / sub).is_dir()  # nothing in ~/.config


def test_play_command_leaves_the_users_settings(fake_mupen, fake_plugin, rom):
    cmd = emulator_command(rom, settings={"port": 8082}, headless=False, speed_limit=True, extra=("--fullscreen",))
    assert cmd == [str(fake_mupen), "--nosaveoptions", "--input", str(fake_plugin.resolve()),
                   "--set", "Input-KartPilot-Control0[port]=8082", "--fullscreen", str(rom)]


def test_other_input_plugins(fake_mupen, rom, monkeypatch):
    monkeypatch.setenv("KARTPILOT_PLUGIN", "/nonexistent/plugin.so")  # not needed by these
    cmd = emulator_command(rom, plugin=DUMMY)
    assert cmd[cmd.index("--input") + 1] == "dummy"
    assert "--input" not in emulator_command(rom, plugin=USER_INPUT, headless=False)
    # only the core can load a start state for another input plugin
    cmd = emulator_command(rom, plugin=DUMMY, load_state="s.st")
    assert cmd[cmd.index("--savestate") + 1] == "s.st" and not _sets(cmd)
    with pytest.raises(ValueError, match="need our plugin"):
        emulator_command(rom, plugin=DUMMY, settings={"port": 1})


def test_missing_plugin_and_rom_say_what_to_do(fake_mupen, rom, tmp_path, monkeypatch):
    monkeypatch.delenv("KARTPILOT_PLUGIN", raising=False)
    with pytest.raises(EmulatorError, match=r"absent\.so not found: build it with `make plugin`"):
        emulator_command(rom, plugin=tmp_path / "absent.so")
    monkeypatch.setenv("KARTPILOT_PLUGIN", str(tmp_path / "gone.so"))
    assert "gone.so not found" in mupen.plugin_missing()
    with pytest.raises(EmulatorError, match="ROM not found: .*nope.z64"):
        emulator_command(tmp_path / "nope.z64", plugin=DUMMY)


def test_plugin_sets_spell_the_section():
    assert plugin_sets({"plugged": True, "port": 8082}, controller=2) == {
        "Input-KartPilot-Control2[plugged]": "True", "Input-KartPilot-Control2[port]": "8082"}
    with pytest.raises(ValueError):
        mupen.section(4)


def test_byte_orders_of_the_test_rom(test_rom, tmp_path):
    z64 = read_rom(test_rom)  # the GPL test ROM is a .v64
    assert z64[:4] == MAGIC_Z64 and len(z64) == test_rom.stat().st_size
    n64 = bytearray(len(z64))
    for i in range(4):
        n64[i::4] = z64[3 - i::4]
    assert to_big_endian(bytes(n64)) == z64
    bad = tmp_path / "notes.txt"
    bad.write_text("not a rom at all")
    with pytest.raises(RomError, match="notes.txt: not an N64 ROM"):
        read_rom(bad)


def test_launch_writes_the_log_in_its_own_session(tmp_path):
    log = tmp_path / "child.log"
    proc = launch(["sh", "-c", 'echo "display=$DISPLAY audio=$SDL_AUDIODRIVER"'], display=":77", log=log)
    assert os.getpgid(proc.pid) == proc.pid  # not reaped yet: its own group, away from our Ctrl-C
    assert proc.wait(30) == 0
    assert "display=:77 audio=dummy" in log.read_text()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for init
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_stop_takes_the_whole_group_and_kills_the_stubborn(tmp_path):
    # a shell that ignores SIGTERM, with a grandchild: both go, the shell by SIGKILL after the grace
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & echo $!; wait"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    grandchild = int(proc.stdout.readline())
    assert stop(proc, grace=0.5) == -9
    assert _wait_gone(grandchild)
    proc.stdout.close()


def test_stop_without_a_group_and_after_exit():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # our process group
    assert stop(proc) == -15
    assert stop(proc) == -15 and stop(None) is None  # again: nothing to do


def test_spread_cpus_gives_each_instance_its_own_cpu_or_pins_none():
    import os

    from common.mupen import spread_cpus

    cpus = sorted(os.sched_getaffinity(0))
    mine = [spread_cpus(i, len(cpus)) for i in range(len(cpus))]
    assert [c for s in mine for c in s] == cpus  # one instance per CPU, each CPU once
    # more instances than CPUs: a round-robin would load some CPUs twice; none is pinned
    assert all(spread_cpus(i, len(cpus) + 1) is None for i in range(len(cpus) + 1))


def test_savestate_whole_tells_a_part_written_state(tmp_path):
    """The core creates a savestate empty, then writes its gzip stream from a thread: only a stream
    that ends with its trailer is whole (an empty file reads as nothing in gzip, without error)."""
    import gzip

    from common.mupen import savestate_whole

    whole = tmp_path / "whole.st"
    whole.write_bytes(gzip.compress(b"M64+SAVE" + bytes(range(256)) * 4096))
    data = whole.read_bytes()
    cases = {"whole": (data, True), "empty": (b"", False), "header only": (data[:10], False),
             "cut": (data[: len(data) // 2], False), "not gzip": (b"M64+SAVE" * 100, False)}
    for name, (content, expected) in cases.items():
        path = tmp_path / f"{name}.st"
        path.write_bytes(content)
        assert savestate_whole(path) is expected, name
    assert not savestate_whole(tmp_path / "missing.st")
