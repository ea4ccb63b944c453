"""Batched kart physics and race update (numba): every kart in one call.

State lives in two arrays so one compiled function steps any number of karts:
``fs`` (N, NF) float64 and ``ist`` (N, NI) int64, columns named below. The
single env is this with N = 1, so single and vector envs agree step for step.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import kart as K
from .race import crosses, track_index, wrap_signed
from .texture import OFFROAD, VOID

# float state columns
X, Y, TH, V, STEER, CHARGE, BOOST, HOP, FALL, HOLD, T, LAPSTART, PROG, FINISH_T = range(14)
NF = 14
# int state columns
IDX, CPN, LAP, FALLS, DDIR, RPREV, FIN, SURF, LASTCP, MINITURBOS = range(10)
NI = 10
SURF_ROAD, SURF_OFFROAD, SURF_FALLING = 0, 1, 2
SURFACES = ("road", "offroad", "falling")

# reward weights, in this order (see reward.RewardConfig)
RW_PROGRESS, RW_FALL, RW_SPEED, RW_BOOST, RW_OFFROAD, RW_DRIFT_ABORT, RW_DRIFT_HOLD = range(7)


@nb.njit(cache=True)
def surface_class(x, y, tex, class_of, tox, toy, inv_cell, default_cls):
    fx = (x - tox) * inv_cell
    fy = (y - toy) * inv_cell
    if fx < 0.0 or fy < 0.0:
        return default_cls
    ix = int(fx)
    iy = int(fy)
    if iy >= tex.shape[0] or ix >= tex.shape[1]:
        return default_cls
    return class_of[tex[iy, ix]]


@nb.njit(cache=True)
def place(fs, ist, n, idx, xy, heading):
    """Put kart ``n`` on centreline sample ``idx``, facing along the track, stopped."""
    fs[n, X] = xy[idx, 0]
    fs[n, Y] = xy[idx, 1]
    fs[n, TH] = heading[idx]
    fs[n, V] = 0.0
    fs[n, CHARGE] = 0.0
    fs[n, BOOST] = 0.0
    fs[n, HOP] = 0.0
    ist[n, IDX] = idx
    ist[n, DDIR] = 0


@nb.njit(cache=True)
def inside_edge(fs, ist, n, xy, cnrm, half):
    """How far kart ``n``'s centre is inside the road edge (units; negative: off the road), measured from
    its centreline sample (``xy``, ``cnrm``: the centreline's points and normals, ``half``: half widths)."""
    i = ist[n, IDX]
    lat = (fs[n, X] - xy[i, 0]) * cnrm[i, 0] + (fs[n, Y] - xy[i, 1]) * cnrm[i, 1]
    return half[i] - abs(lat)


@nb.njit(cache=True)
def step_batch(fs, ist, lapt, act, rew, fin_now, xy, heading, s_arr, tex, class_of, tox, toy, inv_cell,
               near, nox, noy, near_cell, cp_s, cp_idx, length, offroad_speed, void, laps, rw):
    n_karts = fs.shape[0]
    dt = K.DT
    ncp = cp_s.shape[0]
    half_int = 0.5 * length / ncp
    default_cls = VOID if void else OFFROAD
    for n in range(n_karts):
        fin_now[n] = 0
        r = 0.0
        prog_prev = fs[n, PROG]
        fs[n, T] += dt
        steer = min(1.0, max(-1.0, act[n, 0]))
        fs[n, STEER] = steer
        if fs[n, FALL] > 0.0:
            # Lakitu: keep sliding and sinking, then back to the last checkpoint
            fs[n, FALL] -= dt
            fs[n, V] *= 0.92
            fs[n, X] += fs[n, V] * np.cos(fs[n, TH]) * dt
            fs[n, Y] += fs[n, V] * np.sin(fs[n, TH]) * dt
            if fs[n, FALL] <= 0.0:
                fs[n, FALL] = 0.0
                cp = ist[n, LASTCP]
                place(fs, ist, n, cp_idx[cp], xy, heading)
                fs[n, HOLD] = K.RESPAWN_HOLD
                fs[n, PROG] = ist[n, LAP] * length + cp_s[cp]
            ist[n, SURF] = SURF_FALLING
            ist[n, RPREV] = 1 if act[n, 4] > 0.5 else 0
        elif fs[n, HOLD] > 0.0:
            fs[n, HOLD] = max(0.0, fs[n, HOLD] - dt)
            fs[n, V] = 0.0
            ist[n, SURF] = SURF_FALLING
            ist[n, RPREV] = 1 if act[n, 4] > 0.5 else 0
        else:
            r += _drive(fs, ist, n, act, dt, steer, tex, class_of, tox, toy, inv_cell, default_cls,
                        offroad_speed, void, rw)
            if fs[n, FALL] <= 0.0:
                # race progress along the centreline
                s_prev = s_arr[ist[n, IDX]]
                idx = track_index(fs[n, X], fs[n, Y], ist[n, IDX], xy, near, nox, noy, near_cell)
                ist[n, IDX] = idx
                s_now = s_arr[idx]
                k = ist[n, CPN]
                if crosses(s_prev, s_now, cp_s[k], half_int, length):
                    ist[n, LASTCP] = k
                    ist[n, CPN] = (k + 1) % ncp
                    if k == 0:
                        lap = ist[n, LAP]
                        if lap < lapt.shape[1]:
                            lapt[n, lap] = fs[n, T] - fs[n, LAPSTART]
                        fs[n, LAPSTART] = fs[n, T]
                        ist[n, LAP] = lap + 1
                        if lap + 1 >= laps and ist[n, FIN] == 0:
                            ist[n, FIN] = 1
                            fs[n, FINISH_T] = fs[n, T]
                            fin_now[n] = 1
                last = cp_s[ist[n, LASTCP]]
                ds = min(2.0 * half_int, max(-2.0 * half_int, wrap_signed(s_now - last, length)))
                fs[n, PROG] = ist[n, LAP] * length + last + ds
        r += rw[RW_PROGRESS] * 100.0 * (fs[n, PROG] - prog_prev) / length
        rew[n] = r


@nb.njit(cache=True)
def _drive(fs, ist, n, act, dt, steer, tex, class_of, tox, toy, inv_cell, default_cls, offroad_speed, void, rw):
    """One step of handling for a kart on the ground or hopping; returns shaping reward."""
    accel = act[n, 2] > 0.5
    brake = act[n, 3] > 0.5
    rbtn = act[n, 4] > 0.5
    rprev = ist[n, RPREV] == 1
    ist[n, RPREV] = 1 if rbtn else 0
    v = fs[n, V]
    cls = surface_class(fs[n, X], fs[n, Y], tex, class_of, tox, toy, inv_cell, default_cls)
    offroad = cls == OFFROAD
    # hop on R's press; landing with the stick sideways starts a drift
    if rbtn and not rprev and fs[n, HOP] <= 0.0 and ist[n, DDIR] == 0 and v > K.HOP_MIN_V:
        fs[n, HOP] = K.HOP_TIME
    elif fs[n, HOP] > 0.0:
        fs[n, HOP] -= dt
        if fs[n, HOP] <= 0.0:
            fs[n, HOP] = 0.0
            if rbtn and abs(steer) > 0.25 and v > K.DRIFT_MIN_V and not offroad:
                ist[n, DDIR] = 1 if steer > 0 else -1
                fs[n, CHARGE] = 0.0
    airborne = fs[n, HOP] > 0.0
    r_drift = 0.0
    if ist[n, DDIR] != 0:
        if (not rbtn) or v < K.DRIFT_MIN_V or offroad:
            if (not rbtn) and fs[n, CHARGE] >= K.MT_CHARGE and not offroad:
                fs[n, BOOST] = K.BOOST_TIME
                ist[n, MINITURBOS] += 1
            else:  # a drift given up short of its mini-turbo: shaping scales with the charge missing
                r_drift = rw[RW_DRIFT_ABORT] * max(0.0, 1.0 - fs[n, CHARGE] / K.MT_CHARGE)
            ist[n, DDIR] = 0
            fs[n, CHARGE] = 0.0
        else:
            if fs[n, CHARGE] >= K.MT_CHARGE:  # held on a charge already full: the boost waits
                r_drift += rw[RW_DRIFT_HOLD]
            fs[n, CHARGE] += dt * (0.7 + 0.6 * abs(steer))
    cap = K.VMAX
    acc = K.ACCEL
    boosting = fs[n, BOOST] > 0.0
    if boosting:
        cap = K.VBOOST
        acc = K.BOOST_ACCEL
        fs[n, BOOST] = max(0.0, fs[n, BOOST] - dt)
    if offroad and not airborne:
        cap *= offroad_speed
    if brake:
        if v > 0.3:
            v = max(0.0, v - K.BRAKE * dt)
        else:
            v = max(-K.REV_MAX, v - K.REV_ACCEL * dt)
    elif accel:
        if v < 0.0:
            v = min(0.0, v + K.BRAKE * dt)
        elif v < cap:
            v = min(cap, v + acc * (1.0 - v / cap) * dt)
    elif v > 0.0:
        v = max(0.0, v - K.COAST * dt)
    else:
        v = min(0.0, v + K.COAST * dt)
    if v > cap:
        v = max(cap, v - (K.OFFROAD_DECEL if offroad else K.OVERCAP) * dt)
    wmax = abs(v) / (K.R0 + K.R1 * abs(v))
    if ist[n, DDIR] != 0:
        dd = ist[n, DDIR]
        w = dd * wmax * (K.DRIFT_BASE + K.DRIFT_GAIN * steer * dd)
    else:
        w = steer * wmax * (1.0 if v >= 0.0 else -1.0)
    th = fs[n, TH] - w * dt  # stick right turns clockwise (world y points up)
    th = (th + np.pi) % (2.0 * np.pi) - np.pi
    fs[n, TH] = th
    fs[n, V] = v
    fs[n, X] += v * np.cos(th) * dt
    fs[n, Y] += v * np.sin(th) * dt
    cls = surface_class(fs[n, X], fs[n, Y], tex, class_of, tox, toy, inv_cell, default_cls)
    r = rw[RW_SPEED] * v / K.VMAX + (rw[RW_BOOST] if boosting else 0.0) + r_drift
    if cls == VOID and fs[n, HOP] <= 0.0:
        fs[n, FALL] = K.FALL_TIME
        ist[n, FALLS] += 1
        ist[n, DDIR] = 0
        fs[n, CHARGE] = 0.0
        fs[n, BOOST] = 0.0
        ist[n, SURF] = SURF_FALLING
        r += rw[RW_FALL]
    elif cls == OFFROAD:
        ist[n, SURF] = SURF_OFFROAD
        r += rw[RW_OFFROAD]
    else:
        ist[n, SURF] = SURF_ROAD
    return r
