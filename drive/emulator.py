"""``make drive ROM=path``: mupen64plus with the project's input plugin, polling this server.

Unlike envs/mupen (RL: headless, speed limiter off), this is for playing and
watching: a real window when there is a display (Xvfb otherwise), speed
limiter on, controller 0 posting its frames to the drive server.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from drive.runner import DriveError


def mupen_command(rom: str | os.PathLike, port: int, host: str = "127.0.0.1", *, post_frames: bool = True,
                  frame_size: tuple[int, int] | None = (640, 480), timeout_ms: int = 50,
                  plugin: str | os.PathLike | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """The mupen64plus command line (errors name what is missing)."""
    from envs.mupen.process import EmulatorError, find_mupen, find_plugin

    if not Path(rom).is_file():
        raise DriveError(f"ROM not found: {rom}")
    exe = find_mupen()
    if exe is None:
        raise DriveError("mupen64plus is not installed (apt-get install mupen64plus-ui-console "
                         "mupen64plus-video-rice mupen64plus-rsp-hle)")
    try:
        so = find_plugin(plugin)
    except EmulatorError as exc:
        raise DriveError(str(exc)) from exc
    sec = "Input-KartPilot-Control0"
    sets = {f"{sec}[plugged]": "True", f"{sec}[host]": host, f"{sec}[port]": str(port),
            f"{sec}[timeout_ms]": str(timeout_ms), f"{sec}[frame]": "1" if post_frames else "0"}
    if post_frames and frame_size:
        sets[f"{sec}[frame_width]"], sets[f"{sec}[frame_height]"] = str(frame_size[0]), str(frame_size[1])
    cmd = [exe, "--nosaveoptions", "--input", str(so)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return [*cmd, *extra, str(rom)]


def run_emulator(cmd: list[str], display: str | None = None, seconds: float | None = None) -> dict:
    """Run mupen64plus (a window on ``display``) until it exits, Ctrl-C, or ``seconds`` pass."""
    env = dict(os.environ)
    if display:
        env["DISPLAY"] = display
    if display != os.environ.get("DISPLAY"):  # our own headless Xvfb: no sound device either
        env.setdefault("SDL_AUDIODRIVER", "dummy")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    stopped = False
    try:
        proc.wait(timeout=seconds)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        stopped = True
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"emulator_exit": proc.returncode, "stopped": stopped, "ok": stopped or proc.returncode == 0}
