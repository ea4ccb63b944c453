"""``make drive ROM=path``: mupen64plus with the project's input plugin, polling this server.

Unlike envs/mupen (RL: headless, speed limiter off), this is for playing and
watching: a real window when there is a display (Xvfb otherwise), speed
limiter on, the user's own video/audio settings, controller 0 posting its
frames to the drive server. The command line and the process come from
common.mupen, like every other mupen64plus run in the project.
"""

from __future__ import annotations

import os
import subprocess

from common.defaults import POST_FRAME_HW
from common.mupen import EmulatorError, emulator_command, launch
from common.proc import stop
from drive.runner import DriveError


def mupen_command(rom: str | os.PathLike, port: int, host: str = "127.0.0.1", *, post_frames: bool = True,
                  frame_size: tuple[int, int] | None = POST_FRAME_HW[::-1], timeout_ms: int = 50,
                  plugin: str | os.PathLike | None = None, load_state: str | os.PathLike | None = None,
                  extra: tuple[str, ...] = ()) -> list[str]:
    """The mupen64plus command line (DriveError names what is missing); ``frame_size`` is (width, height);
    ``load_state``: the savestate to start from (the plugin loads it at its first poll)."""
    settings: dict[str, object] = {"plugged": True, "host": host, "port": port, "timeout_ms": timeout_ms,
                                   "frame": int(post_frames)}
    if post_frames and frame_size:
        settings["frame_width"], settings["frame_height"] = frame_size
    try:
        return emulator_command(rom, plugin=plugin, settings=settings, headless=False, speed_limit=True,
                                load_state=load_state, extra=extra)
    except EmulatorError as exc:
        raise DriveError(str(exc)) from exc


def run_emulator(cmd: list[str], display: str | None = None, seconds: float | None = None) -> dict:
    """Run mupen64plus (a window on ``display``) until it exits, Ctrl-C, or ``seconds`` pass."""
    # our own headless Xvfb: no sound device either
    proc = launch(cmd, display=display, dummy_audio=display != os.environ.get("DISPLAY"))
    stopped = False
    try:
        proc.wait(timeout=seconds)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        stopped = True
        stop(proc, grace=5.0)
    return {"emulator_exit": proc.returncode, "stopped": stopped, "ok": stopped or proc.returncode == 0}
