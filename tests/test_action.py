"""The action vector and its N64 input-bot JSON mapping (property-tested)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import action as act

unit = st.floats(-1, 1, allow_nan=False)
zero_one = st.floats(0, 1, allow_nan=False)
actions = st.tuples(unit, unit, zero_one, zero_one, zero_one)


@given(actions)
def test_round_trip_through_n64_is_quantised_identity(vec):
    back = act.from_n64(act.to_n64(vec))
    # axes quantise to 1/80; buttons threshold at 0.5
    assert np.all(np.abs(back[:2] - np.array(vec[:2])) <= 0.5 / 80 + 1e-6)
    for i in (2, 3, 4):
        assert back[i] == (1.0 if vec[i] > 0.5 else 0.0)
    assert act.to_n64(back) == act.to_n64(vec)


@given(st.integers(-80, 80), st.integers(-80, 80), st.booleans(), st.booleans(), st.booleans())
def test_n64_round_trip_exact(x, y, a, b, r):
    keys = {"X_AXIS": x, "Y_AXIS": y, "A_BUTTON": int(a), "B_BUTTON": int(b), "R_TRIG": int(r)}
    out = act.to_n64(act.from_n64(keys))
    for k, v in keys.items():
        assert out[k] == v
    assert set(out) == set(act.N64_KEYS)
    assert all(isinstance(v, int) for v in out.values())


@given(st.tuples(*[st.floats(-1e6, 1e6, allow_nan=False)] * 5))
def test_clamping_keeps_every_value_in_range(vec):
    out = act.as_action(vec)
    assert out.dtype == np.float32
    assert np.all(out >= act.LOW) and np.all(out <= act.HIGH)
    n64 = act.to_n64(vec)
    assert -80 <= n64["X_AXIS"] <= 80 and -80 <= n64["Y_AXIS"] <= 80


def test_table_mapping():
    keys = act.to_n64([0.5, -1.0, 1.0, 0.0, 0.6])
    assert keys["X_AXIS"] == 40 and keys["Y_AXIS"] == -80
    assert keys["A_BUTTON"] == 1 and keys["B_BUTTON"] == 0 and keys["R_TRIG"] == 1
    assert keys["START_BUTTON"] == 0 and len(keys) == 16


def test_missing_keys_are_zero_and_axes_clamp():
    assert np.array_equal(act.from_n64({}), act.NEUTRAL)
    assert act.from_n64({"X_AXIS": 500})[0] == 1.0


@pytest.mark.parametrize(
    "bad, field",
    [
        ([0, 0, 0, 0], "5 values"),
        ([math.nan, 0, 0, 0, 0], "'x'"),
        ([0, math.inf, 0, 0, 0], "'y'"),
        (["left", 0, 0, 0, 0], "not numeric"),
    ],
)
def test_bad_vectors_rejected_with_field(bad, field):
    with pytest.raises(act.ActionError, match=field):
        act.as_action(bad)


def test_strict_mode_rejects_out_of_range_naming_field():
    with pytest.raises(act.ActionError, match="'b'"):
        act.as_action([0, 0, 0, 2.0, 0], clamp=False)


@pytest.mark.parametrize(
    "bad, key",
    [({"X_AXIS": "left"}, "X_AXIS"), ({"A_BUTTON": None}, "A_BUTTON"), ({"FOO": 1}, "FOO"),
     ({"Y_AXIS": float("nan")}, "Y_AXIS")],
)
def test_bad_n64_rejected_with_key(bad, key):
    with pytest.raises(act.ActionError, match=key):
        act.from_n64(bad)


def test_from_n64_rejects_non_object():
    with pytest.raises(act.ActionError, match="JSON object"):
        act.from_n64([1, 2])
