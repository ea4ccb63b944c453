"""Helpers shared by the drive tests and bench/drive.py (real server, real model).

``constant_pilotnet(action)``: a real PilotNet whose output layer is set so it
answers ``action`` for every frame, so a test can tell the model's answer from
the human's. ``serving(pilot)``: the real app on waitress on a free port.
"""

from __future__ import annotations

import contextlib

import numpy as np

from common import action as act


def constant_pilotnet(action):
    """PilotNet (train.model.build_pilotnet) that outputs ``action`` for any frame."""
    from train.model import build_pilotnet

    target = act.as_action(action)
    model = build_pilotnet()
    layer = model.get_layer("softsign")
    kernel, _bias = layer.get_weights()
    # ActionRange maps softsign s in (-1, 1) to low + (s + 1)/2 * (high - low); invert it,
    # then invert softsign (s = z / (1 + |z|)  =>  z = s / (1 - |s|)).
    s = np.clip(2 * (target - act.LOW) / (act.HIGH - act.LOW) - 1, -0.98, 0.98)
    layer.set_weights([np.zeros_like(kernel), (s / (1 - np.abs(s))).astype(np.float32)])
    return model


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
