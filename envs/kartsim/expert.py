"""The scripted expert: follows a racing line, brakes for corners, drifts where it pays.

Steering is a feed-forward of the line's curvature plus a Stanley-style
correction of heading and sideways error. Speed follows the line's speed
profile (computed with a safety margin on the kart's turn rate): A below it,
B when clearly above. On long corners tight enough to need most of the normal
turn rate it hops into a drift (which turns tighter and charges a mini-turbo)
and releases it when the corner opens, firing the boost. Batched (numba) so
``VecKartSim.expert_actions`` costs little.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from common.defaults import EXPERT_MARGIN

from . import kart as K
from .line import racing_line
from .physics import DDIR, FALL, HOLD, HOP, IDX, TH, V, X, Y
from .track import Track

KE, KH = 1.6, 5.0  # sideways-error and heading gains
TURN_FRAC = 0.82  # share of the normal max turn rate the speed profile plans with
DRIFT_FRAC = 1.15  # share planned with on drift corners (drift max is 1.4)
DRIFT_ENTER = 0.45  # a corner is a drift corner when it needs this share of the normal rate...
DRIFT_STAY = 0.3  # ...and lasts while it needs this much...
DRIFT_MIN_LEN = 1.1  # ...for at least this many seconds


MARGIN_FRAC = EXPERT_MARGIN  # the racing line keeps the kart centre this share of the mean width inside each edge


def expert_margin(track: Track, frac: float = MARGIN_FRAC) -> float:
    """The expert line's distance from each road edge: ``frac`` of the mean width, 1.2 to 3.0 units."""
    return float(np.clip(frac * track.mean_width, 1.2, 3.0))


def teacher_margin(track: Track, frac: float = MARGIN_FRAC, void_frac: float | None = None) -> float:
    """The margin share a teacher drives ``track`` with: ``void_frac``, when given, on a track with no
    run-off (leaving the road is a fall), else ``frac``."""
    return check_margin_frac(void_frac if track.void and void_frac is not None else frac)


def check_margin_frac(frac: float) -> float:
    if not 0.0 < frac < 0.5:
        raise ValueError(f"the expert's margin is a share of the road's width, 0 < F < 0.5; got {frac}")
    return float(frac)


@nb.njit(cache=True)
def _wrap(a):
    return (a + np.pi) % (2.0 * np.pi) - np.pi


@nb.njit(cache=True)
def nearest_on_line(x, y, lxy, j0):
    """Index of the line sample nearest (x, y) within 60 samples of ``j0`` (the kart's own
    centreline sample mapped onto the line): the expert's and the planner's tracking start here."""
    m = lxy.shape[0]
    best = 1e30
    j = j0
    for k in range(-60, 61):
        i = (j0 + k) % m
        d = (x - lxy[i, 0]) ** 2 + (y - lxy[i, 1]) ** 2
        if d < best:
            best = d
            j = i
    return j


@nb.njit(cache=True)
def line_steer(fs, ist, n, lxy, lhead, lkap, lnrm, of_centre, ds, off):
    """The steering law the expert, the planner's tracker and the follower share, for kart ``n`` on a line
    shifted ``off`` units sideways: curvature feed-forward plus a Stanley-style correction of heading and
    sideways error. Returns (nearest line sample j, look-ahead sample, sideways error e, wanted
    counter-clockwise turn rate, the normal max turn rate at this speed)."""
    m = lxy.shape[0]
    x, y, th, v = fs[n, X], fs[n, Y], fs[n, TH], fs[n, V]
    j = nearest_on_line(x, y, lxy, of_centre[ist[n, IDX]])
    e = (x - lxy[j, 0]) * lnrm[j, 0] + (y - lxy[j, 1]) * lnrm[j, 1] - off
    vp = max(v, 0.0)
    look = (j + int(vp * K.DT / ds + 0.5)) % m  # one step ahead: steering acts at once
    target = lhead[look] + np.arctan2(-KE * e, vp + 3.0)
    w_ccw = vp * lkap[look] + KH * _wrap(target - th)
    wmax = max(abs(v) / (K.R0 + K.R1 * abs(v)), 0.05)
    return j, look, e, w_ccw, wmax


@nb.njit(cache=True)
def drift_stick(w_ccw, wmax, dd):
    """The stick that turns a drift to side ``dd`` at ``w_ccw``: drift turn rate (clockwise positive) is
    ``dd * wmax * (DRIFT_BASE + DRIFT_GAIN * steer * dd)``."""
    frac = (-w_ccw) / (dd * wmax)
    return dd * (frac - K.DRIFT_BASE) / K.DRIFT_GAIN, frac


@nb.njit(cache=True)
def expert_batch(fs, ist, out, lxy, lhead, lkap, lnrm, vprof, dzone, of_centre, ds):
    m = lxy.shape[0]
    for n in range(fs.shape[0]):
        out[n, :] = 0.0
        if fs[n, FALL] > 0.0 or fs[n, HOLD] > 0.0:
            out[n, 2] = 1.0
            continue
        th, v = fs[n, TH], fs[n, V]
        j, look, e, w_ccw, wmax = line_steer(fs, ist, n, lxy, lhead, lkap, lnrm, of_centre, ds, 0.0)
        vp = max(v, 0.0)
        dd = ist[n, DDIR]
        drift_here = dzone[look]
        if dd != 0:
            steer, frac = drift_stick(w_ccw, wmax, dd)
            keep = drift_here == dd and frac > 0.15
            out[n, 4] = 1.0 if keep else 0.0
            if not keep:  # straighten up on release
                steer = -w_ccw / wmax
        else:
            steer = -w_ccw / wmax
            if fs[n, HOP] > 0.0:
                out[n, 4] = 1.0  # keep R held through the hop; land steering into the corner
                if drift_here != 0:
                    steer = drift_here * max(0.5, abs(steer)) if steer * drift_here > -0.2 else steer
            elif drift_here != 0 and v > K.DRIFT_MIN_V + 4.0 and -w_ccw * drift_here > 0.3 * wmax:
                out[n, 4] = 1.0  # hop
        out[n, 0] = min(1.0, max(-1.0, steer))
        # speed: the slowest planned speed over the next ~0.4 s
        horizon = int((vp * 0.45 + 2.0) / ds)
        vt = 1e9
        for k in range(horizon):
            vt = min(vt, vprof[(j + k) % m])
        if abs(_wrap(lhead[j] - th)) > 1.6:
            # facing the wrong way: stop (straight), then turn round slowly and tightly
            vt = min(vt, 1.5)
            out[n, 4] = 0.0
            if v > 2.5:
                out[n, 0] = 0.0
        if v < vt:
            out[n, 2] = 1.0
        elif v > vt + 1.0:
            out[n, 3] = 1.0


_LINES: dict = {}


class Expert:
    """Racing line, speed profile and drift zones of one track; ``actions`` for a batch."""

    def __init__(self, track: Track, margin_frac: float = MARGIN_FRAC):
        self.track = track
        key = (track.source, track.length, expert_margin(track, check_margin_frac(margin_frac)))
        if key not in _LINES:  # the QP takes ~1 s: solve it once per track and process
            _LINES[key] = racing_line(track, margin=key[2])
        self.line = ln = _LINES[key]
        need = np.abs(ln.kappa) * (K.R0 + K.R1 * K.VMAX)  # share of normal rate at top speed
        zone = _drift_zones(ln.kappa, need, ln.ds)
        frac = np.where(zone != 0, DRIFT_FRAC, TURN_FRAC)
        vp = np.array([K.corner_speed(k, f, K.VBOOST) for k, f in zip(ln.kappa, frac, strict=True)])
        self.vprof = _smooth_profile(vp, ln.ds)
        self.dzone = zone

    def actions(self, fs: np.ndarray, ist: np.ndarray) -> np.ndarray:
        n = fs.shape[0]
        out = np.zeros((n, 5), np.float32)
        ln = self.line
        expert_batch(fs, ist, out, ln.xy, ln.heading, ln.kappa, ln.nrm, self.vprof, self.dzone,
                     ln.of_centre, ln.ds)
        return out


def _drift_zones(kappa, need, ds) -> np.ndarray:
    """+1/-1 (drift right/left) over corners that need > DRIFT_ENTER of the normal
    turn rate at top speed, extended while they still need > DRIFT_STAY, if that
    lasts at least DRIFT_MIN_LEN seconds; else 0."""
    m = len(kappa)
    sgn = -np.sign(kappa).astype(np.int64)  # ccw curve -> drift left (-1)
    zone = np.zeros(m, np.int64)
    min_len = int(DRIFT_MIN_LEN * 15.0 / ds)  # ~15 units/s through such corners
    start = int(np.argmin(need))  # scan from the straightest point
    i = 0
    while i < m:
        k = (start + i) % m
        if need[k] <= DRIFT_ENTER:
            i += 1
            continue
        d = sgn[k]
        a = i
        while a > 0 and need[(start + a - 1) % m] > DRIFT_STAY and sgn[(start + a - 1) % m] == d:
            a -= 1
        j = i
        while j < m and need[(start + j) % m] > DRIFT_STAY and sgn[(start + j) % m] == d:
            j += 1
        if j - a >= min_len:
            for q in range(a, j):
                zone[(start + q) % m] = d
        i = j + 1
    return zone


def _smooth_profile(v: np.ndarray, ds: float) -> np.ndarray:
    """Add braking room: backward pass with a gentle deceleration, forward with acceleration."""
    m = len(v)
    out = v.copy()
    start = int(np.argmin(v))
    for _ in range(2):
        for j in range(1, m + 1):
            i, nx = (start - j) % m, (start - j + 1) % m
            out[i] = min(out[i], math.sqrt(out[nx] ** 2 + 2 * K.BRAKE * 0.55 * ds))
    return out


def run_expert(track: str, laps: int, seed: int = 0, progress: bool = False,
               margin_frac: float = MARGIN_FRAC) -> dict:
    """Drive ``laps`` laps with the scripted expert, physics only (no rendering).

    ``margin_frac``: its line's distance from each edge, as a share of the mean width (a smaller
    one is a faster, riskier teacher; the reference every ratio is measured against is the default)."""
    from .line import lower_bound_s
    from .sim import KartBatch

    sim = KartBatch(1, track, laps=laps, render=False)
    sim.reset_kart(0, np.random.default_rng(seed))
    expert = Expert(sim.track, margin_frac)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=laps, desc=f"expert {track}", unit="lap")
    done = lap = 0
    while not done:
        _, term, trunc = sim.step(expert.actions(sim.fs, sim.ist))
        done = term[0] or trunc[0]
        if bar is not None and sim.info(0)["lap"] > lap:
            lap = sim.info(0)["lap"]
            bar.update(1)
    if bar is not None:
        bar.close()
    info = sim.info(0)
    times = info["lap_times"]
    return {"track": track, "laps": info["lap"], "lap_times": [round(t, 3) for t in times],
            "best_lap_s": round(min(times), 3) if times else None, "race_time_s": round(info["race_time"], 3),
            "falls": info["falls"], "finished": info["finished"], "lower_bound_s": lower_bound_s(track)}
