"""Race logic: where a kart is along the centreline, checkpoints, laps.

Each kart tracks its centreline sample ``idx`` by a local search (so it moves
continuously along the track) and re-acquires it from the coarse nearest grid
only when another part of the track is clearly nearer (after a shortcut or a
respawn). A checkpoint counts only when the tracked position *crosses* it
forwards, from the half interval just before it into the half interval just
after it, and only the next checkpoint in order counts. So reversing over the
line, or cutting across to a later part of the track, never completes a lap.

Progress (metres, monotone while driving forwards) is measured from the last
passed checkpoint and clipped to one checkpoint interval either way: this is
what the dense reward differentiates.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def track_index(x, y, idx, xy, near, nox, noy, near_cell):
    """Follow the kart's centreline sample from ``idx``; jump only to a clearly nearer part."""
    m = xy.shape[0]
    for _ in range(8):
        best = 1e30
        bk = 0
        for k in range(-12, 13):
            i = (idx + k) % m
            dx = x - xy[i, 0]
            dy = y - xy[i, 1]
            d = dx * dx + dy * dy
            if d < best:
                best = d
                bk = k
        idx = (idx + bk) % m
        if -12 < bk < 12:
            break
    gx = int(np.floor((x - nox) / near_cell))
    gy = int(np.floor((y - noy) / near_cell))
    if 0 <= gy < near.shape[0] and 0 <= gx < near.shape[1]:
        g = near[gy, gx]
        if g >= 0 and g != idx:
            dgx = x - xy[g, 0]
            dgy = y - xy[g, 1]
            dg = np.sqrt(dgx * dgx + dgy * dgy)
            if dg + 1.0 < np.sqrt(best):
                idx = g
    return idx


@nb.njit(cache=True)
def wrap_signed(d, length):
    """Signed arc distance in [-length/2, length/2)."""
    return ((d + 0.5 * length) % length) - 0.5 * length


@nb.njit(cache=True)
def crosses(s_prev, s_now, cp, half, length):
    """True when the arc position moved from just before ``cp`` to just after it."""
    before = wrap_signed(s_prev - cp, length)
    after = wrap_signed(s_now - cp, length)
    return -half <= before < 0.0 and 0.0 <= after < half
