"""The frame -> model input transform (the one home of it).

A frame as recorded (any size, RGB uint8, HxWx3) becomes the model input
(66x200x3 uint8): drop the top ``CROP_TOP`` fraction (sky, HUD) and the bottom
``CROP_BOTTOM`` fraction, then resize to 66x200 (PilotNet's input). Models
store ``TRANSFORM`` and loaders compare it with :func:`check_transform`, so a
model trained under different parameters is refused with a clear message.
Renderers that draw straight at model size (kartsim's 66x200 mode) draw the
same cropped view: they read ``CROP_TOP``/``CROP_BOTTOM`` from here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HEIGHT, WIDTH, CHANNELS = 66, 200, 3
MODEL_SHAPE = (HEIGHT, WIDTH, CHANNELS)
CROP_TOP = 0.40  # above the horizon band: sky, HUD
CROP_BOTTOM = 0.0

TRANSFORM = {
    "name": "crop-resize",
    "version": 1,
    "crop_top": CROP_TOP,
    "crop_bottom": CROP_BOTTOM,
    "height": HEIGHT,
    "width": WIDTH,
    "resample": "bilinear",
}


class TransformMismatch(ValueError):
    """A model was trained under other transform parameters than this code's."""


def crop_rows(height: int) -> tuple[int, int]:
    """Row range [top, bottom) kept from a frame ``height`` rows tall."""
    top = int(round(height * CROP_TOP))
    bottom = height - int(round(height * CROP_BOTTOM))
    return top, bottom


def to_model_input(frame: np.ndarray) -> np.ndarray:
    """One RGB uint8 frame (HxWx3, any size) -> (66, 200, 3) uint8.

    A frame already at model size is taken as already transformed (that is
    what kartsim renders in its 66x200 mode), and returned unchanged.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be HxWx3 uint8 RGB, got {frame.shape} {frame.dtype}")
    if frame.shape == MODEL_SHAPE:
        return frame
    top, bottom = crop_rows(frame.shape[0])
    img = Image.fromarray(np.ascontiguousarray(frame[top:bottom]))
    return np.asarray(img.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR, reducing_gap=2.0))


def to_model_batch(frames) -> np.ndarray:
    """Many frames -> (N, 66, 200, 3) uint8."""
    return np.stack([to_model_input(f) for f in frames]) if len(frames) else np.zeros(
        (0, *MODEL_SHAPE), np.uint8
    )


def check_transform(saved: dict | None, source: str = "model") -> None:
    """Raise TransformMismatch naming ``source`` unless ``saved`` equals TRANSFORM."""
    if saved is None:
        raise TransformMismatch(f"{source} records no frame transform; retrain it with this version")
    diffs = [
        f"{k}: {source} has {saved.get(k)!r}, this code uses {v!r}"
        for k, v in TRANSFORM.items()
        if saved.get(k) != v
    ]
    if diffs:
        raise TransformMismatch(f"{source} was trained with another frame transform: " + "; ".join(diffs))
