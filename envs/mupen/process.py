"""Processes behind one env instance: its own Xvfb display and mupen64plus.

Xvfb picks a free display itself (``-displayfd``), so many instances and
parallel test runs never race for a display number. The mupen64plus command
line comes from common.mupen (headless: Rice video, dummy audio, the speed
limiter off, our input plugin configured through its ``--set`` settings).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.mupen import EmulatorError, emulator_command, launch
from common.proc import stop
from common.xvfb import Xvfb as _Xvfb
from common.xvfb import XvfbError


class Xvfb(_Xvfb):
    """The common private X display, failing with EmulatorError like the rest of this module."""

    def __init__(self, size: tuple[int, int] = (480, 640), timeout: float = 15.0):
        try:
            super().__init__(size, timeout=timeout)
        except XvfbError as exc:
            raise EmulatorError(str(exc)) from exc


class Emulator:
    """One mupen64plus process bound to a display and a bridge port."""

    def __init__(self, rom: str | os.PathLike, display: str, port: int, workdir: Path, *,
                 plugin: Path, profile: str = "", savestate: str | None = None,
                 resolution: str = "320x240", frame_size: tuple[int, int] | None = None,
                 timeout_ms: int = 10000, gfx: str = "mupen64plus-video-rice", extra_args: tuple = (),
                 cpus: set[int] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, object] = {
            "plugged": True, "host": "127.0.0.1", "port": port, "timeout_ms": timeout_ms, "frame": 1,
            "speed_limiter": False, "stats_file": workdir / "plugin_stats.json",
        }
        if frame_size:
            settings["frame_width"], settings["frame_height"] = frame_size
        if profile:
            (workdir / "profile.txt").write_text(profile.replace(";", "\n") + "\n")
            settings["profile_file"] = workdir / "profile.txt"
        if savestate:
            settings["savestate"] = savestate
        self.cmd = emulator_command(rom, plugin=plugin, settings=settings, config_dir=workdir, gfx=gfx,
                                    resolution=resolution, extra=extra_args)
        self.log_path = workdir / "mupen64plus.log"
        self.proc = launch(self.cmd, display=display, log=self.log_path, cwd=workdir, cpus=cpus)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What it logged after byte ``offset`` (:meth:`log_size` before)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def close(self) -> None:
        stop(self.proc)
