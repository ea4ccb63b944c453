"""Run the real mupen64plus (ui-console) headless with the KartPilot plugin.

Shared by the plugin's emulator tests and bench/plugin.py: finds the GPL test
ROM, builds the plugin, builds the command line (Rice video, dummy audio, HLE
RSP, a private config dir so the user's ~/.config is never touched) and runs
it on a given X display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.xvfb import Xvfb  # noqa: F401  (re-exported for the plugin tests and bench)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugin_c"
PLUGIN_SO = PLUGIN_DIR / "build" / "mupen64plus-input-kartpilot.so"
HARNESS = PLUGIN_DIR / "build" / "kp_harness"
MUPEN_CANDIDATES = ("/usr/games/mupen64plus", "mupen64plus")
TEST_ROM = ROOT.parent / "shared" / "roms" / "m64p_test_rom.v64"


def find_test_rom() -> Path | None:
    """The GPL mupen64plus test ROM: $KARTPILOT_TEST_ROM or ../shared/roms/ (None if neither exists)."""
    env = os.environ.get("KARTPILOT_TEST_ROM")
    candidates = [Path(env)] if env else []
    candidates.append(TEST_ROM)
    return next((p for p in candidates if p.is_file()), None)


def mupen64plus_binary() -> str | None:
    """The ui-console front end, or None when mupen64plus is not installed."""
    for cand in MUPEN_CANDIDATES:
        found = shutil.which(cand)
        if found:
            return found
    return None


def build_plugin() -> Path:
    """`make -C plugin_c all harness`; raises CalledProcessError with the compiler output."""
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR), "all", "harness"], check=True,
                   capture_output=True, text=True)
    return PLUGIN_SO


def emulator_command(rom: Path, config_dir: Path, *, input_plugin: str | Path = PLUGIN_SO,
                     sets: dict[str, object] | None = None, testshots: int | str | None = None,
                     nospeedlimit: bool = True, emumode: int = 2) -> list[str]:
    """Command line for a headless run; ``sets`` maps 'Section[key]' -> value."""
    binary = mupen64plus_binary()
    if binary is None:
        raise FileNotFoundError("mupen64plus (ui-console) is not installed")
    cmd = [binary, "--nosaveoptions", "--noosd", "--emumode", str(emumode),
           "--configdir", str(config_dir), "--gfx", "mupen64plus-video-rice", "--audio", "dummy",
           "--rsp", "mupen64plus-rsp-hle", "--input", str(input_plugin),
           "--set", f"Core[ScreenshotPath]={config_dir / 'shots'}",
           "--set", f"Core[SaveStatePath]={config_dir / 'states'}",
           "--set", f"Core[SaveSRAMPath]={config_dir / 'sram'}"]
    if nospeedlimit:
        cmd.append("--nospeedlimit")
    for key, value in (sets or {}).items():
        cmd += ["--set", f"{key}={value}"]
    if testshots is not None:
        cmd += ["--testshots", str(testshots)]
    cmd.append(str(rom))
    return cmd


def start_emulator(rom: Path, config_dir: Path, display: str, **kw) -> subprocess.Popen:
    """Start mupen64plus on ``display``; stdout+stderr go to config_dir/emulator.log."""
    for sub in ("shots", "states", "sram"):
        (config_dir / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DISPLAY=display, SDL_AUDIODRIVER="dummy")
    log = open(config_dir / "emulator.log", "w")  # noqa: SIM115 - handed to the child
    cmd = emulator_command(rom, config_dir, **kw)
    if shutil.which("stdbuf"):  # line-buffered, so the log is readable while it runs
        cmd = ["stdbuf", "-oL", "-eL", *cmd]
    try:
        return subprocess.Popen(cmd, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        log.close()


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a child and reap it (kill if it does not stop in time)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def rom_bytes_z64(rom: Path) -> bytes:
    """ROM contents in big-endian (.z64) order, whatever the file's byte order."""
    data = rom.read_bytes()
    magic = data[:4]
    if magic == b"\x80\x37\x12\x40":
        return data
    if magic == b"\x37\x80\x40\x12":  # .v64: 16-bit byte-swapped
        swapped = bytearray(len(data))
        swapped[0::2] = data[1::2]
        swapped[1::2] = data[0::2]
        return bytes(swapped)
    if magic == b"\x40\x12\x37\x80":  # .n64: 32-bit little-endian words
        out = bytearray(len(data))
        for i in range(4):
            out[i::4] = data[3 - i::4]
        return bytes(out)
    raise ValueError(f"{rom}: not an N64 ROM (header magic {magic.hex()})")
