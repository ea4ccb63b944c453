"""Run a private Xvfb (and optionally the test window) for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

from common.cli import format_size
from common.proc import stop
from common.xvfb import Xvfb


@contextlib.contextmanager
def virtual_display(size: tuple[int, int] = (600, 800), depth: int = 24, boost: bool = False):
    """Start Xvfb (common.xvfb) on a free display number; yields ':N' and stops it afterwards.

    ``size``: (height, width) of the screen. ``boost``: run the X server under SCHED_FIFO where permitted."""
    with Xvfb(size, depth, boost=boost) as xvfb:
        yield xvfb.display


@contextlib.contextmanager
def animated_window(display: str, title: str = "KartPilot-Test", size: tuple[int, int] = (240, 320), fps: int = 60,
                    seconds: float = 600):
    """Start testing.testwindow on ``display``, ``size`` (height, width); yields its (x, y, w, h) once mapped."""
    from common.screen import find_window

    env = {**os.environ, "DISPLAY": display, "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy"}
    cmd = [sys.executable, "-m", "testing.testwindow", "--title", title, "--size", format_size(size), "--fps", str(fps),
           "--seconds", str(seconds)]
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    proc = None
    try:
        found = None
        for _attempt in range(3):  # a window process that fails to connect is retried, not fatal
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
            end = time.monotonic() + 30
            while time.monotonic() < end and proc.poll() is None:
                found = find_window(title)
                if found:
                    break
                time.sleep(0.2)
            if found:
                break
            stop(proc)
        if not found:
            raise RuntimeError(f"test window {title!r} did not appear on {display}")
        yield found[1]
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        stop(proc, grace=5.0)
