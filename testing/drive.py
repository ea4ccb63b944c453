"""Drive-side fixtures for the tests (real server, real model).

``serving(pilot)``: the real app on waitress on a free port; ``pattern_frame(i)`` /
``frame_id(frame)``: frames that carry their own index. The models they serve
come from testing.models.
"""

from __future__ import annotations

import contextlib

import numpy as np


@contextlib.contextmanager
def serving(pilot, capture=None, threads: int = 8):
    """The drive app for ``pilot`` on 127.0.0.1:<free port>; yields the Server."""
    from drive.app import create_app
    from drive.server import Server

    server = Server(create_app(pilot, capture), "127.0.0.1", 0, threads).start()
    try:
        yield server
    finally:
        server.close()


def pattern_frame(index: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A frame whose first pixel encodes ``index`` (tests find which frames were saved)."""
    rng = np.random.default_rng(index)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame[0, 0] = (index >> 16) & 255, (index >> 8) & 255, index & 255
    return frame


def frame_id(frame: np.ndarray) -> int:
    r, g, b = (int(v) for v in frame[0, 0])
    return (r << 16) | (g << 8) | b
