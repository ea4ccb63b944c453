"""Per-frame signatures that cleaning compares (cheap: computed on small versions).

- ``luma_p99``: brightness of the brightest 1% (black frames are dark everywhere)
- ``hist``: 4x4x4 joint RGB histogram (normalised); its distance from the
  session's median histogram says "this does not look like the rest"
- ``thumb``: 64x48 grey thumbnail: frozen and duplicate frames
- ``flat``: share of pixels equal to their right and lower neighbours (large
  uniform panels: desktops, window chrome; games are textured or shaded)
- ``edges``: share of pixels with a sharp luminance step to the right (text)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB = (64, 48)
HIST_BINS = 4
WORK = (160, 120)  # flat / edge statistics are taken at this size (nearest: keeps flat areas exact)
EDGE_STEP = 90  # luma step (0..255) that counts as a text-like edge


def signature(img: np.ndarray) -> dict:
    """Features of one RGB uint8 frame."""
    pil = Image.fromarray(img)
    small = np.asarray(pil.resize(WORK, Image.Resampling.NEAREST), dtype=np.int32)
    luma = (small[..., 0] * 299 + small[..., 1] * 587 + small[..., 2] * 114) // 1000
    same_r = np.all(small[:, 1:] == small[:, :-1], axis=2)[:-1, :]
    same_d = np.all(small[1:, :] == small[:-1, :], axis=2)[:, :-1]
    flat = float(np.mean(same_r & same_d))
    edges = float(np.mean(np.abs(np.diff(luma, axis=1)) >= EDGE_STEP))
    q = (small // (256 // HIST_BINS)).reshape(-1, 3)
    codes = q[:, 0] * HIST_BINS * HIST_BINS + q[:, 1] * HIST_BINS + q[:, 2]
    hist = np.bincount(codes, minlength=HIST_BINS ** 3).astype(np.float32)
    hist /= hist.sum()
    thumb = np.asarray(pil.convert("L").resize(THUMB, Image.Resampling.BOX), dtype=np.float32)
    return {
        "luma_p99": float(np.percentile(luma, 99)),
        "hist": hist,
        "thumb": thumb,
        "flat": flat,
        "edges": edges,
    }
