"""Racing lines and speed profiles (shared by the expert and the lower bound).

The line is the centreline shifted sideways by ``n(s)``, chosen by a small
box-constrained quadratic programme: minimise the summed squared curvature
(second differences) plus ``lam`` x squared segment lengths, with the line kept
``margin`` inside the road edges. The speed profile along a line is the usual
forward/backward pass: a corner limit from the turn-rate model, an
acceleration limit forwards and a braking limit backwards, around the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numba as nb
import numpy as np

from . import kart as K
from .track import Track, frame_of, load, resample_closed

COARSE = 2.5  # QP spacing (units)


def _cyclic_diff(m: int, order: int) -> np.ndarray:
    eye = np.eye(m)
    if order == 1:
        return np.roll(eye, 1, axis=1) - eye
    return np.roll(eye, -1, axis=1) - 2 * eye + np.roll(eye, 1, axis=1)


@nb.njit(cache=True)
def _spd_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a x = b for symmetric positive definite ``a`` (Cholesky; single thread,
    so it does not fight other processes the way a threaded BLAS does)."""
    m = a.shape[0]
    low = np.zeros((m, m))
    for j in range(m):
        d = a[j, j]
        for k in range(j):
            d -= low[j, k] * low[j, k]
        low[j, j] = np.sqrt(d)
        for i in range(j + 1, m):
            acc = a[i, j]
            for k in range(j):
                acc -= low[i, k] * low[j, k]
            low[i, j] = acc / low[j, j]
    y = np.empty(m)
    for i in range(m):
        acc = b[i]
        for k in range(i):
            acc -= low[i, k] * y[k]
        y[i] = acc / low[i, i]
    x = np.empty(m)
    for i in range(m - 1, -1, -1):
        acc = y[i]
        for k in range(i + 1, m):
            acc -= low[k, i] * x[k]
        x[i] = acc / low[i, i]
    return x


def _box_qp(h: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, iters: int = 60) -> np.ndarray:
    """min x'Hx + 2g'x, lo <= x <= hi, by a simple active-set loop."""
    m = len(g)
    x = np.clip(_spd_solve(h, -g), lo, hi)
    fixed = (x <= lo) | (x >= hi)
    for _ in range(iters):
        free = ~fixed
        if free.any():
            rhs = -(g[free] + h[np.ix_(free, fixed)] @ x[fixed])
            x[free] = _spd_solve(np.ascontiguousarray(h[np.ix_(free, free)]), rhs)
        viol = free & ((x < lo) | (x > hi))
        x = np.clip(x, lo, hi)
        grad = h @ x + g
        release = fixed & (((x <= lo) & (grad < 0)) | ((x >= hi) & (grad > 0)))
        if not viol.any() and not release.any():
            break
        fixed = (fixed | viol) & ~release
        if fixed.all():
            fixed[np.argmax(np.abs(grad))] = False
    return x if m else x


@dataclass
class Line:
    xy: np.ndarray  # (P, 2) line points, equally spaced
    heading: np.ndarray
    kappa: np.ndarray
    nrm: np.ndarray
    ds: float
    length: float
    of_centre: np.ndarray  # for each centreline sample, the nearest line point


def racing_line(track: Track, margin: float, lam: float = 0.02) -> Line:
    """A smooth line kept ``margin`` inside the road edges (kart centre)."""
    samples, _ = resample_closed(np.column_stack([track.xy, track.width]), COARSE)
    m = len(samples)
    cxy, w = samples[:, :2], samples[:, 2]
    _, nrm, _, _ = frame_of(cxy, track.length)
    d2, d1 = _cyclic_diff(m, 2), _cyclic_diff(m, 1)
    h = 1e-6 * np.eye(m)
    g = np.zeros(m)
    for c in range(2):
        a2, a1 = d2 * nrm[:, c][None, :], d1 * nrm[:, c][None, :]
        h += a2.T @ a2 + lam * (a1.T @ a1)
        g += a2.T @ (d2 @ cxy[:, c]) + lam * (a1.T @ (d1 @ cxy[:, c]))
    half = np.maximum(w / 2 - margin, 0.0)
    off = _box_qp(h, g, -half, half)
    # back to fine resolution, then an equally spaced line
    s_c = np.arange(m) * (track.length / m)
    off_f = np.interp(track.s, np.append(s_c, track.length), np.append(off, off[0]))
    pts = track.xy + off_f[:, None] * track.nrm
    lxy, llen = resample_closed(pts, track.ds)
    _, lnrm, lhead, lkap = frame_of(lxy, llen)
    ker = np.ones(5) / 5  # curvature from a 0.5-unit spacing is noisy: light smoothing
    lkap = np.convolve(np.concatenate([lkap[-2:], lkap, lkap[:2]]), ker, mode="valid")
    return Line(lxy, lhead, lkap, lnrm, llen / len(lxy), llen, nearest_points(track.xy, lxy))


def nearest_points(centre: np.ndarray, lxy: np.ndarray) -> np.ndarray:
    """For each centreline sample, the index of the nearest line point (chunked brute force): where the
    line followers (expert, planner, follower) start their search from the kart's centreline sample."""
    out = np.empty(len(centre), np.int64)
    for i in range(0, len(centre), 256):
        d = ((centre[i:i + 256, None, :] - lxy[None, :, :]) ** 2).sum(-1)
        out[i:i + 256] = d.argmin(1)
    return out


def speed_profile(kappa: np.ndarray, ds: float, vcap: float, turn_frac: float, accel: float,
                  accel_cap: float, brake: float) -> np.ndarray:
    """Fastest speeds along a closed line: corner limit, then forward (acceleration
    ``accel * (1 - v / accel_cap)``) and backward (``brake``) passes around the loop."""
    m = len(kappa)
    lim = np.array([K.corner_speed(k, turn_frac, vcap) for k in kappa])
    v = lim.copy()
    start = int(np.argmin(lim))
    for _ in range(2):  # forward: v^2 grows by at most 2 a ds
        for j in range(1, m + 1):
            i, p = (start + j) % m, (start + j - 1) % m
            a = accel * max(0.0, 1.0 - v[p] / accel_cap)
            v[i] = min(v[i], np.sqrt(v[p] ** 2 + 2 * a * ds))
    for _ in range(2):  # backward: braking
        for j in range(1, m + 1):
            i, nx = (start - j) % m, (start - j + 1) % m
            v[i] = min(v[i], np.sqrt(v[nx] ** 2 + 2 * brake * ds))
    return v


def profile_time(v: np.ndarray, ds: float) -> float:
    """Lap time of a profile, taking the faster end of each step (a lower estimate)."""
    return float(np.sum(ds / np.maximum(np.maximum(v, np.roll(v, -1)), 1e-3)))


@lru_cache(maxsize=16)
def _bound_for(source: str) -> tuple[float, int]:
    track = load(source)
    best = (np.inf, 0)
    # Relaxed kart limits: boosted top speed and acceleration everywhere, the tightest
    # drift turn rate in every corner, the hardest deceleration; the line's centre
    # may use the whole road width. Several lines are tried and the fastest kept.
    for i, lam in enumerate((0.0, 0.02, 0.1, 0.5)):
        ln = racing_line(track, margin=0.0, lam=lam)
        v = speed_profile(ln.kappa, ln.ds, K.VBOOST, K.DRIFT_MAX, max(K.ACCEL, K.BOOST_ACCEL) * 1.1,
                          K.VBOOST, max(K.BRAKE, K.OFFROAD_DECEL, K.OVERCAP))
        t = profile_time(v, ln.ds)
        best = min(best, (t, i))
    return best


def lower_bound_s(track: str = "luigi") -> float:
    """Lower bound on a lap time of ``track`` (built-in name or JSON path), game seconds."""
    from .track import resolve

    return math.floor(_bound_for(str(resolve(track)))[0] * 1000) / 1000  # round down: stays a bound
