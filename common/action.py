"""The action vector: the one convention every stage shares.

``[x, y, a, b, rb]`` as float32 (TensorKart's order):

====  =====================================  ======  ===========================
idx   meaning                                range   N64 input-bot mapping
====  =====================================  ======  ===========================
0 x   stick left/right, right positive       -1..1   X_AXIS = round(80 * x)
1 y   stick down/up, up positive             -1..1   Y_AXIS = round(80 * y)
2 a   A (accelerate)                         0..1    A_BUTTON = a > 0.5
3 b   B (brake / reverse)                    0..1    B_BUTTON = b > 0.5
4 rb  R (hop / drift)                        0..1    R_TRIG = rb > 0.5
====  =====================================  ======  ===========================

This module owns that table and the conversion to and from the JSON that
mupen64plus-input-bot (and our C plugin) parse. Nothing else re-derives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

FIELDS = ("x", "y", "a", "b", "rb")
SIZE = len(FIELDS)
LOW = np.array([-1.0, -1.0, 0.0, 0.0, 0.0], dtype=np.float32)
HIGH = np.array([1.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
NEUTRAL = np.zeros(SIZE, dtype=np.float32)
AXIS_SCALE = 80  # full stick deflection in N64 units (input-bot / TensorKart)
BUTTON_THRESHOLD = 0.5

# The 16 keys mupen64plus-input-bot parses; missing keys mean 0.
N64_KEYS = (
    "START_BUTTON", "Z_TRIG", "B_BUTTON", "A_BUTTON", "R_TRIG", "L_TRIG",
    "U_DPAD", "D_DPAD", "L_DPAD", "R_DPAD",
    "U_CBUTTON", "D_CBUTTON", "L_CBUTTON", "R_CBUTTON",
    "X_AXIS", "Y_AXIS",
)
_BUTTON_OF = {2: "A_BUTTON", 3: "B_BUTTON", 4: "R_TRIG"}


class ActionError(ValueError):
    """An action vector or N64 input dict that cannot be used (says which field)."""


def as_action(value: Sequence[float] | np.ndarray, *, clamp: bool = True) -> np.ndarray:
    """Validate ``value`` as one action vector and return it as float32.

    NaN/inf and wrong shapes are rejected with an error naming the field;
    finite out-of-range values are clamped (``clamp=True``) or rejected.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ActionError(f"action is not numeric: {value!r}") from exc
    if arr.shape != (SIZE,):
        raise ActionError(f"action must have {SIZE} values {FIELDS}, got shape {arr.shape}")
    for i, v in enumerate(arr):
        if not math.isfinite(v):
            raise ActionError(f"action field {FIELDS[i]!r} is not finite: {v}")
        if not clamp and not (LOW[i] <= v <= HIGH[i]):
            raise ActionError(
                f"action field {FIELDS[i]!r}={v} outside [{LOW[i]}, {HIGH[i]}]"
            )
    return np.clip(arr, LOW, HIGH).astype(np.float32)


def clip_batch(actions: np.ndarray) -> np.ndarray:
    """Clamp a (N, 5) batch into range (no per-row validation: hot path)."""
    return np.clip(np.asarray(actions, dtype=np.float32), LOW, HIGH)


def to_n64(action: Sequence[float] | np.ndarray) -> dict[str, int]:
    """Action vector -> the 16-key input-bot JSON dict (all ints)."""
    act = as_action(action)
    out = dict.fromkeys(N64_KEYS, 0)
    out["X_AXIS"] = int(round(AXIS_SCALE * float(act[0])))
    out["Y_AXIS"] = int(round(AXIS_SCALE * float(act[1])))
    for idx, key in _BUTTON_OF.items():
        out[key] = int(act[idx] > BUTTON_THRESHOLD)
    return out


def from_n64(keys: Mapping[str, object]) -> np.ndarray:
    """Input-bot JSON dict -> action vector. Missing keys are 0; axes clamp
    to +-80; a non-numeric value or an unknown key is an error naming it."""
    if not isinstance(keys, Mapping):
        raise ActionError(f"N64 input must be a JSON object, got {type(keys).__name__}")
    for key in keys:
        if key not in N64_KEYS and key != "CMD":
            raise ActionError(f"unknown N64 input key {key!r}")
    vals = {}
    for key in N64_KEYS:
        raw = keys.get(key, 0)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise ActionError(f"N64 input key {key!r} must be a finite number, got {raw!r}")
        vals[key] = raw
    out = np.zeros(SIZE, dtype=np.float32)
    out[0] = np.clip(vals["X_AXIS"], -AXIS_SCALE, AXIS_SCALE) / AXIS_SCALE
    out[1] = np.clip(vals["Y_AXIS"], -AXIS_SCALE, AXIS_SCALE) / AXIS_SCALE
    for idx, key in _BUTTON_OF.items():
        out[idx] = 1.0 if vals[key] else 0.0
    return out


def describe(action: Sequence[float] | np.ndarray) -> str:
    """Short human-readable form, for status lines: 'x=+0.25 y=-0.10 A . R'."""
    act = as_action(action)
    buttons = " ".join(
        name if act[i] > BUTTON_THRESHOLD else "." for i, name in ((2, "A"), (3, "B"), (4, "R"))
    )
    return f"x={act[0]:+.2f} y={act[1]:+.2f} {buttons}"
