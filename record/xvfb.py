"""Run a private Xvfb (and optionally the test window) for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time


@contextlib.contextmanager
def virtual_display(size: str = "800x600x24", boost: bool = False):
    """Start Xvfb on a free display number; yields ':N' and stops it afterwards.

    ``boost``: run the X server under SCHED_FIFO where permitted (the benchmark's option
    to measure the recorder apart from a crowded machine's scheduling of the X server)."""
    if not shutil.which("Xvfb"):
        raise FileNotFoundError("Xvfb is not installed (apt-get install xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    if boost:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setscheduler(proc.pid, os.SCHED_FIFO, os.sched_param(5))
    try:
        with os.fdopen(r) as fh:
            num = fh.readline().strip()  # Xvfb writes the display number once it is ready
        if not num:
            raise RuntimeError("Xvfb did not start")
        yield f":{num}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def animated_window(display: str, title: str = "KartPilot-Test", size: str = "320x240", fps: int = 60,
                seconds: float = 600):
    """Start record.testwindow on ``display``; yields its (x, y, w, h) once it is mapped."""
    from record.screen import find_window

    env = {**os.environ, "DISPLAY": display, "SDL_VIDEODRIVER": "x11", "SDL_AUDIODRIVER": "dummy"}
    cmd = [sys.executable, "-m", "record.testwindow", "--title", title, "--size", size, "--fps", str(fps),
           "--seconds", str(seconds)]
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    proc = None
    try:
        found = None
        for _attempt in range(3):  # a window process that fails to connect is retried, not fatal
            proc = subprocess.Popen(cmd, env=env)
            end = time.monotonic() + 30
            while time.monotonic() < end and proc.poll() is None:
                found = find_window(title)
                if found:
                    break
                time.sleep(0.2)
            if found:
                break
            proc.kill()
            proc.wait()
        if not found:
            raise RuntimeError(f"test window {title!r} did not appear on {display}")
        yield found[1]
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
