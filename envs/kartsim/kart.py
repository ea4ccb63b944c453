"""Kart limits and handling constants (one home: physics, expert and lower bound read them).

Units: 1 unit ~ 1 metre, speeds in units per game second, 30 logic steps per
game second. The handling is arcade, in the spirit of Mario Kart 64:

* A accelerates towards the top speed (``a = ACCEL * (1 - v / cap)``), B brakes
  and, once stopped, reverses; with neither the kart coasts down.
* Steering turns at ``steer * v / (R0 + R1 * |v|)`` rad/s: the turn radius grows
  with speed, so fast karts turn wide.
* R hops; landing with the stick held sideways starts a drift in that direction.
  A drift always turns towards its side, tighter or wider with the stick, and
  charges a mini-turbo; releasing R after ``MT_CHARGE`` seconds of charge fires a
  boost (higher cap, stronger acceleration) for ``BOOST_TIME``.
* Off-road (grass) caps the speed at the track's ``offroad_speed`` fraction.
"""

from __future__ import annotations

import math

FPS = 30
DT = 1.0 / FPS

VMAX = 20.0  # top speed on road (units/s)
ACCEL = 15.0  # acceleration at standstill (units/s^2), fades towards the cap
BRAKE = 28.0  # braking deceleration
COAST = 5.0  # rolling deceleration with no pedal
OVERCAP = 9.0  # deceleration back down to the cap after a boost
OFFROAD_DECEL = 24.0  # deceleration down to the off-road cap
REV_MAX = 6.0  # top reverse speed
REV_ACCEL = 8.0

R0 = 3.0  # turn radius at standstill
R1 = 0.45  # extra turn radius per unit of speed

HOP_TIME = 0.25  # airborne time of a hop (s)
HOP_MIN_V = 3.0  # slowest speed that still hops
DRIFT_MIN_V = 6.0  # a drift ends below this speed
DRIFT_BASE = 0.85  # drift turn rate (x normal max) with the stick centred
DRIFT_GAIN = 0.55  # +- with the stick into / out of the drift
DRIFT_MAX = DRIFT_BASE + DRIFT_GAIN  # tightest drift (x normal max turn rate)
MT_CHARGE = 0.8  # mini-turbo charge needed (s of drifting, faster with the stick held in)
BOOST_TIME = 0.8
VBOOST = 26.0  # cap while boosting
BOOST_ACCEL = 30.0

# Lakitu: falling off the track, then being put back at the last checkpoint
FALL_TIME = 1.2
RESPAWN_HOLD = 0.8


def max_turn_rate(v: float) -> float:
    """Largest normal (non-drift) turn rate at speed ``v`` (rad/s)."""
    v = abs(v)
    return v / (R0 + R1 * v)


def corner_speed(kappa: float, turn_frac: float, vcap: float) -> float:
    """Fastest speed that follows curvature ``kappa`` using ``turn_frac`` of the
    normal max turn rate: solves ``v * kappa = turn_frac * v / (R0 + R1 v)``."""
    k = abs(kappa)
    if k < 1e-9:
        return vcap
    v = (turn_frac / k - R0) / R1
    return max(0.5, min(vcap, v)) if math.isfinite(v) else vcap
