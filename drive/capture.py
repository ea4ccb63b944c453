"""Screen capture for GET polls (input-bot style: the server grabs the game window)."""

from __future__ import annotations

import os
import threading

import numpy as np

DEFAULT_REGION = (0, 0, 640, 480)  # left, top, width, height: TensorKart's window spot


def parse_region(text: str) -> tuple[int, int, int, int]:
    """``left,top,width,height`` -> tuple; errors say what is wrong."""
    parts = text.split(",")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0 or vals[0] < 0 or vals[1] < 0:
        raise ValueError(f"--region {text!r} must be left,top,width,height (non-negative, size > 0)")
    return vals  # type: ignore[return-value]


class ScreenCapture:
    """Grabs ``region`` of the X display as RGB uint8. One mss instance per thread
    (an instance serialises its grabs; waitress answers on several threads)."""

    def __init__(self, region: tuple[int, int, int, int] = DEFAULT_REGION, display: str | None = None):
        self.display = display or os.environ.get("DISPLAY")
        if not self.display:
            raise RuntimeError("screen capture needs an X display (DISPLAY is not set)")
        self.region = {"left": region[0], "top": region[1], "width": region[2], "height": region[3]}
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()
        first = self._sct()  # fail at start, not on the first poll
        mon = first.monitors[0]
        if region[0] + region[2] > mon["left"] + mon["width"] or region[1] + region[3] > mon["top"] + mon["height"]:
            raise RuntimeError(
                f"capture region {region} does not fit the screen {mon['width']}x{mon['height']} of {self.display}"
            )

    def _sct(self):
        sct = getattr(self._local, "sct", None)
        if sct is None:
            import mss

            sct = mss.MSS(display=self.display)
            self._local.sct = sct
            with self._lock:
                self._all.append(sct)
        return sct

    def grab(self) -> np.ndarray:
        shot = self._sct().grab(self.region)
        bgra = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4)
        return np.ascontiguousarray(bgra[:, :, 2::-1])

    def close(self) -> None:
        with self._lock:
            for sct in self._all:
                sct.close()
            self._all.clear()
