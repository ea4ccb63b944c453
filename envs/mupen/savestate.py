"""Make the reset savestate.

Interactive (the usual way, for Mario Kart 64): mupen64plus opens a window
on your display with its own keyboard/gamepad input plugin; choose Time
Trials, your character and course, drive to the start line (the countdown),
press F5 (save state) and quit with Esc. The newest state file is copied to
``--out`` and checked by booting it headless through the env.

Headless (``--after-frames N``): boot under Xvfb with our plugin, let N
polls pass with neutral input and save (how the tests make a state for the
GPL test ROM).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from common.mupen import USER_INPUT, EmulatorError, emulator_command
from envs.mupen.profiles import GameProfile


def save_headless(rom: str | Path, out: str | Path, frames: int, profile: GameProfile | None = None) -> Path:
    from envs.mupen.env import MupenEnv

    env = MupenEnv(rom, profile=profile)
    try:
        env.reset()
        for _ in range(frames):
            env.step(np.zeros(5, np.float32))
        env.save_state()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(env.state_path, out)
    finally:
        env.close()
    return out


def save_interactive(rom: str | Path, out: str | Path, gfx: str = "mupen64plus-video-rice") -> Path:
    if not os.environ.get("DISPLAY"):
        raise EmulatorError("the interactive helper needs a display (DISPLAY is not set); "
                            "use --after-frames for a headless state")
    with tempfile.TemporaryDirectory(prefix="kartpilot-state-") as tmp:
        cmd = emulator_command(rom, plugin=USER_INPUT, headless=False, speed_limit=True, gfx=gfx,
                               sets={"Core[SaveStatePath]": f"{tmp}/", "Core[CurrentStateSlot]": 0})
        print("Drive to the start line of your course in Time Trials, press F5 to save, Esc to quit.")
        subprocess.run(cmd, check=False)
        states = sorted(Path(tmp).glob("*.st*"), key=lambda p: p.stat().st_mtime)
        if not states:
            raise EmulatorError(f"no savestate was written in {tmp}: press F5 in the emulator before quitting")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(states[-1], out)
    return out


def describe_state(rom: str | Path, state: str | Path, profile: GameProfile | None = None) -> dict:
    """Boot ``state`` headless and report what the profile reads there."""
    from envs.mupen.env import MupenEnv

    env = MupenEnv(rom, profile=profile, state=state)
    try:
        _, info = env.reset()
    finally:
        env.close()
    return {k: v for k, v in info.items() if k not in ("restarts", "crashed", "idle_polls")}
