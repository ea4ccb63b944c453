"""Kart state features: the numbers a policy may see beside the frame (the one home of the layout).

A model built with state features (``train.model.build_pilotnet(state=True)``)
takes, beside each 66x200 frame, a float32 vector laid out as ``FIELDS``:

* ``speed``: forward speed over the road top speed (about 0..1.3 with a boost);
* ``offset``: sideways distance from the track's centreline over half the road
  width at that point (-1 right edge .. +1 left edge, beyond when off the road);
* ``heading_sin``, ``heading_cos``: the kart's heading against the centreline's;
* ``drift``: -1 drifting right, 0 not drifting, +1 drifting left (the game's
  drift direction), ``charge``: the mini-turbo charge as a share of a full one
  (0..1.5), ``airborne``: 1 in a hop, ``boost``: 1 while a boost runs;
* ``lap_sin<k>``, ``lap_cos<k>`` for k in ``LAP_FREQS``: where the kart is
  along the lap (fraction f of the centreline from the start line) as
  ``sin(2 pi k f)``, ``cos(2 pi k f)``. The finest pair repeats every
  1/32 lap, so a network can tell one straight from another, which a single
  frame cannot.

The layout is stored in the model (``FrameInput``'s ``state_fields``) and
compared on load, like the frame transform. Kartsim computes the vector
(``envs.kartsim.state``); the game keeps the same quantities in its memory
(speed, drift, position along the track), but no reader of them into this
layout exists yet, so drive refuses a state model.
"""

from __future__ import annotations

import numpy as np

LAP_FREQS = (1, 2, 4, 8, 16, 32)
FIELDS = ("speed", "offset", "heading_sin", "heading_cos", "drift", "charge", "airborne", "boost",
          *(f"lap_{fn}{k}" for k in LAP_FREQS for fn in ("sin", "cos")))
SIZE = len(FIELDS)


class StateMismatch(ValueError):
    """A model's state layout differs from this code's, or state was missing or misshapen."""


def as_rows(state, n: int, *, source: str) -> np.ndarray:
    """``state`` as ``(n, SIZE)`` float32 rows, one per frame (a single ``(SIZE,)`` row when n is 1);
    StateMismatch naming ``source`` when it is missing or misshapen."""
    if state is None:
        raise StateMismatch(f"{source} takes kart state features beside each frame (common.state); "
                            "none were given")
    arr = np.asarray(state, np.float32)
    if arr.ndim == 1 and n == 1:
        arr = arr[None]
    if arr.shape != (n, SIZE):
        raise StateMismatch(f"{source}: state must be ({n}, {SIZE}) float32 rows, one per frame; "
                            f"got shape {arr.shape}")
    return arr


def check_fields(fields, *, source: str) -> None:
    """Raise StateMismatch unless ``fields`` (from a model or arrays) is this code's ``FIELDS``."""
    if list(fields) != list(FIELDS):
        raise StateMismatch(f"{source} has state fields {list(fields)!r}, this code uses {list(FIELDS)!r}")
