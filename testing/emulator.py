"""Run the real mupen64plus (ui-console) headless with the KartPilot plugin.

Shared by the emulator tests and bench/plugin.py: finds the GPL test ROM,
builds the plugin (and its dlopen harness), and starts mupen64plus on a given
X display with a private config dir (so the user's ~/.config is never
touched). The command line itself is common.mupen's, the one every run uses;
stop the process with common.proc.stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.mupen import (
    PLUGIN_DIR,
    PLUGIN_SO,
    ROOT,
    EmulatorError,
    emulator_command,
    launch,
    plugin_missing,
    require_mupen,
)

HARNESS = PLUGIN_DIR / "build" / "kp_harness"
TEST_ROM = ROOT.parent / "shared" / "roms" / "m64p_test_rom.v64"


def find_test_rom() -> Path | None:
    """The GPL mupen64plus test ROM: $KARTPILOT_TEST_ROM or ../shared/roms/ (None if neither exists)."""
    env = os.environ.get("KARTPILOT_TEST_ROM")
    candidates = [Path(env)] if env else []
    candidates.append(TEST_ROM)
    return next((p for p in candidates if p.is_file()), None)


def build_plugin(harness: bool = False) -> Path:
    """`make -C plugin_c all` (+ the dlopen harness): a no-op when up to date; RuntimeError with the
    compiler output."""
    targets = ["all", "harness"] if harness else ["all"]
    res = subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR), *targets], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"make -C {PLUGIN_DIR} {' '.join(targets)} failed:\n{res.stdout}{res.stderr}")
    return PLUGIN_SO


def emulator_missing(plugin: bool = True) -> str | None:
    """Why the emulator cannot run here (Xvfb, mupen64plus, with ``plugin`` also our plugin), or None."""
    if shutil.which("Xvfb") is None:
        return "Xvfb is not installed (apt-get install xvfb)"
    try:
        require_mupen()
    except EmulatorError as exc:
        return str(exc)
    return plugin_missing() if plugin else None


def start_emulator(rom: Path, config_dir: Path, display: str, **kw) -> subprocess.Popen:
    """Start mupen64plus headless on ``display`` (keywords: common.mupen.emulator_command's);
    stdout+stderr go to config_dir/emulator.log, screenshots to config_dir/shots/."""
    cmd = emulator_command(rom, config_dir=config_dir, **kw)
    return launch(cmd, display=display, log=config_dir / "emulator.log")
