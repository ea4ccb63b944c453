"""Processes behind one env instance: its own Xvfb display and mupen64plus.

Xvfb picks a free display itself (``-displayfd``), so many instances and
parallel test runs never race for a display number. mupen64plus runs the
ui-console with the Rice video plugin, dummy audio, the speed limiter off
and our input plugin configured through ``--set Input-KartPilot-Control0[..]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.xvfb import Xvfb as _Xvfb
from common.xvfb import XvfbError, parse_size, stop_group

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PLUGIN = ROOT / "plugin_c" / "build" / "mupen64plus-input-kartpilot.so"
MUPEN = "mupen64plus"
MUPEN_FALLBACK = "/usr/games/mupen64plus"


class EmulatorError(RuntimeError):
    """mupen64plus or Xvfb is missing, or failed to start (names what and why)."""


def find_mupen() -> str | None:
    exe = os.environ.get("KARTPILOT_MUPEN") or shutil.which(MUPEN)
    if exe:
        return exe
    return MUPEN_FALLBACK if os.access(MUPEN_FALLBACK, os.X_OK) else None


def find_plugin(path: str | os.PathLike | None = None) -> Path:
    """The input plugin: ``path``, $KARTPILOT_PLUGIN or plugin_c/build/."""
    cand = Path(path or os.environ.get("KARTPILOT_PLUGIN") or DEFAULT_PLUGIN)
    if not cand.is_file():
        raise EmulatorError(f"input plugin {cand} not found: build it with `make plugin`")
    return cand.resolve()


_stop = stop_group  # processes here run in their own session: stop the whole group


class Xvfb(_Xvfb):
    """The common private X display, failing with EmulatorError like the rest of this module."""

    def __init__(self, size: str = "640x480x24", timeout: float = 15.0):
        try:
            super().__init__(*parse_size(size), timeout=timeout)
        except XvfbError as exc:
            raise EmulatorError(str(exc)) from exc


class Emulator:
    """One mupen64plus process bound to a display and a bridge port."""

    def __init__(self, rom: str | os.PathLike, display: str, port: int, workdir: Path, *,
                 plugin: Path, profile: str = "", savestate: str | None = None, load_state: bool = False,
                 resolution: str = "320x240", frame_size: tuple[int, int] | None = None,
                 timeout_ms: int = 10000, gfx: str = "mupen64plus-video-rice", extra_args: tuple = ()):
        exe = find_mupen()
        if exe is None:
            raise EmulatorError("mupen64plus is not installed (apt-get install mupen64plus-ui-console "
                                "mupen64plus-video-rice mupen64plus-rsp-hle)")
        workdir.mkdir(parents=True, exist_ok=True)
        sec = "Input-KartPilot-Control0"
        sets = {
            f"{sec}[plugged]": "True",
            f"{sec}[host]": "127.0.0.1",
            f"{sec}[port]": str(port),
            f"{sec}[timeout_ms]": str(timeout_ms),
            f"{sec}[frame]": "1",
            f"{sec}[speed_limiter]": "False",
            f"{sec}[stats_file]": str(workdir / "plugin_stats.json"),
            "Core[SaveStatePath]": str(workdir) + "/",
            "Core[ScreenshotPath]": str(workdir) + "/",
        }
        if frame_size:
            sets[f"{sec}[frame_width]"], sets[f"{sec}[frame_height]"] = str(frame_size[0]), str(frame_size[1])
        if profile:
            (workdir / "profile.txt").write_text(profile.replace(";", "\n") + "\n")
            sets[f"{sec}[profile_file]"] = str(workdir / "profile.txt")
        if savestate:
            sets[f"{sec}[savestate]"] = str(savestate)
        cmd = [exe, "--nosaveoptions", "--noosd", "--nospeedlimit", "--emumode", "2",
               "--configdir", str(workdir), "--gfx", gfx, "--audio", "dummy",
               "--rsp", "mupen64plus-rsp-hle", "--input", str(plugin), "--resolution", resolution]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        if savestate and load_state:
            cmd += ["--savestate", str(savestate)]
        cmd += [*extra_args, str(rom)]
        self.cmd = cmd
        self.log_path = workdir / "mupen64plus.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "DISPLAY": display, "SDL_AUDIODRIVER": "dummy"}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=workdir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def close(self) -> None:
        _stop(self.proc)
        self._log.close()
