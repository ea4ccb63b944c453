"""Screen capture with mss: the one home for grabbing the emulator's window, and for regions.

Used by the screen recorder (``python -m record --source screen``) and by the
drive server's GET polls (input-bot style: the server grabs the game window).
A region is always ``x,y,w,h`` (left, top, width, height in pixels), parsed by
:func:`parse_region`. Where the recorder's region comes from, in order: an
explicit region, a window found by title on X11 (its title in
``xwininfo -root -tree``, geometry from ``xwininfo -id``), else TensorKart's
640x480 at the top-left corner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import mss
import numpy as np

DEFAULT_REGION = (0, 0, 640, 480)  # x, y, w, h: TensorKart's window spot
DEFAULT_TITLE = "Mupen64Plus"


class ScreenError(RuntimeError):
    """No display, no such window, or a region off the screen."""


def parse_region(text: str) -> tuple[int, int, int, int]:
    """'x,y,w,h' -> ints (w, h > 0); ScreenError says what is wrong."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise ScreenError(f"region must be x,y,w,h (integers), got {text!r}") from exc
    if w <= 0 or h <= 0:
        raise ScreenError(f"region width and height must be positive, got {text!r}")
    return x, y, w, h


def find_window(title: str) -> tuple[int, tuple[int, int, int, int]] | None:
    """(window id, (x, y, w, h)) of the largest viewable window whose title matches
    ``title`` (case-insensitive regex), or None.

    Titles are read from ``xwininfo -root -tree``: unlike xdotool 3.2016's
    ``search --name`` it also sees UTF-8 titles (SDL's windows, for one).
    """
    if not shutil.which("xwininfo"):
        return None
    try:
        tree = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True,
                              timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    pat = re.compile(title, re.IGNORECASE)
    found = []
    for m in _TREE_LINE.finditer(tree):
        if pat.search(m.group("name")):
            wid = int(m.group("id"), 16)
            geo = window_geometry(wid)
            if geo and geo[2] > 1 and geo[3] > 1:
                found.append((geo[2] * geo[3], wid, geo))
    if not found:
        return None
    _, wid, geo = max(found)
    return wid, geo


# e.g.:   0x200008 "KartPilot-Test": ("testwindow.py" "testwindow.py")  320x240+240+180  +240+180
_TREE_LINE = re.compile(r'^\s*(?P<id>0x[0-9a-fA-F]+) "(?P<name>.*)":', re.MULTILINE)


def window_geometry(wid: int) -> tuple[int, int, int, int] | None:
    """Absolute (x, y, w, h) of an X window, from xwininfo."""
    try:
        out = subprocess.run(["xwininfo", "-id", str(wid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "IsViewable" not in out:
        return None
    vals = {}
    for key, name in (("x", "Absolute upper-left X"), ("y", "Absolute upper-left Y"),
                      ("w", "Width"), ("h", "Height")):
        m = re.search(rf"{name}:\s+(-?\d+)", out)
        if not m:
            return None
        vals[key] = int(m.group(1))
    return vals["x"], vals["y"], vals["w"], vals["h"]


def resolve_region(title: str | None, region: str | None) -> tuple[tuple[int, int, int, int], str]:
    """The capture region and how it was chosen ('window:<id> <title>', 'region', 'default')."""
    if region:
        return parse_region(region), "region"
    if title:
        found = find_window(title)
        if found:
            wid, geo = found
            return geo, f"window:{wid} {title}"
    return DEFAULT_REGION, "default"


class ScreenCapture:
    """Grabs one RGB uint8 frame of a fixed region (x, y, w, h) of an X display per call.

    Thread-safe: one mss instance per calling thread (an instance serialises its grabs, and
    the drive server answers on several threads). Fails at construction, not on the first
    grab, when there is no display or the region is off the screen."""

    source = "screen"

    def __init__(self, region: tuple[int, int, int, int] = DEFAULT_REGION, display: str | None = None):
        self.display = display or os.environ.get("DISPLAY")
        if not self.display:
            raise ScreenError("DISPLAY is not set: screen capture needs an X display "
                              "(run the emulator, or use --source sim)")
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()
        x, y, w, h = region
        mon = self._sct().monitors[0]
        if x < mon["left"] or y < mon["top"] or x + w > mon["left"] + mon["width"] \
                or y + h > mon["top"] + mon["height"]:
            self.close()
            raise ScreenError(f"region {tuple(region)} is outside the screen "
                              f"{mon['width']}x{mon['height']}+{mon['left']}+{mon['top']} of {self.display}")
        self.region = (x, y, w, h)
        self._box = {"left": x, "top": y, "width": w, "height": h}
        self.resolution = (h, w)

    def _sct(self):
        sct = getattr(self._local, "sct", None)
        if sct is None:
            try:
                sct = mss.MSS(display=self.display)
            except Exception as exc:  # mss raises its own error types per backend
                raise ScreenError(f"cannot open X display {self.display}: {exc}") from exc
            self._local.sct = sct
            with self._lock:
                self._all.append(sct)
        return sct

    def grab(self) -> np.ndarray:
        shot = self._sct().grab(self._box)
        bgra = np.frombuffer(shot.bgra, dtype=np.uint8).reshape(shot.height, shot.width, 4)
        return bgra[:, :, 2::-1].copy()  # BGRA -> RGB, contiguous (the writer owns it)

    def close(self) -> None:
        with self._lock:
            for sct in self._all:
                sct.close()
            self._all.clear()
            self._local = threading.local()
