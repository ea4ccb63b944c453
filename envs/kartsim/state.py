"""Kartsim's state features in the layout of ``common.state`` (one row per kart)."""

from __future__ import annotations

import numpy as np

from common import state as cs

from . import kart as K
from . import physics as P
from .track import Track


def features(track: Track, fs: np.ndarray, ist: np.ndarray) -> np.ndarray:
    """(N, common.state.SIZE) float32 for karts ``fs``/``ist`` (physics arrays) on ``track``."""
    fs, ist = np.atleast_2d(fs), np.atleast_2d(ist)
    i = ist[:, P.IDX]
    dx = fs[:, P.X] - track.xy[i, 0]
    dy = fs[:, P.Y] - track.xy[i, 1]
    offset = (dx * track.nrm[i, 0] + dy * track.nrm[i, 1]) / (0.5 * track.width[i])
    dth = fs[:, P.TH] - track.heading[i]
    frac = np.mod(fs[:, P.PROG], track.length) / track.length
    out = np.empty((len(fs), cs.SIZE), np.float32)
    out[:, 0] = fs[:, P.V] / K.VMAX
    out[:, 1] = offset
    out[:, 2], out[:, 3] = np.sin(dth), np.cos(dth)
    out[:, 4] = ist[:, P.DDIR]
    out[:, 5] = np.clip(fs[:, P.CHARGE] / K.MT_CHARGE, 0.0, 1.5)
    out[:, 6] = fs[:, P.HOP] > 0.0
    out[:, 7] = fs[:, P.BOOST] > 0.0
    for c, k in enumerate(cs.LAP_FREQS):
        out[:, 8 + 2 * c] = np.sin(2 * np.pi * k * frac)
        out[:, 9 + 2 * c] = np.cos(2 * np.pi * k * frac)
    return out


def batch_features(sim) -> np.ndarray:
    """State features of every kart of a ``KartBatch`` or ``MultiTrackBatch``."""
    karts = getattr(sim, "karts", None)
    if karts is None:
        return features(sim.track, sim.fs, sim.ist)
    return np.concatenate([features(k.track, k.fs, k.ist) for k in karts])
