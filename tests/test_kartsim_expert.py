"""The scripted expert races 3 laps on every built-in track: no falls, at or above the lower bound."""

from __future__ import annotations

import pytest

import envs.kartsim as ks
from envs.kartsim.expert import run_expert


@pytest.mark.slow
@pytest.mark.parametrize("track", ks.TRACKS)
def test_expert_three_laps(track):
    out = run_expert(track, laps=3)
    assert out["laps"] == 3 and out["finished"]
    assert out["falls"] == 0
    assert len(out["lap_times"]) == 3
    assert out["best_lap_s"] >= out["lower_bound_s"]


def test_a_smaller_margin_is_a_faster_expert_that_stays_on_a_void_track():
    """``margin_frac`` (``train demos --expert-margin``): a line nearer the edges laps faster, no fall."""
    from envs.kartsim.expert import check_margin_frac

    default = run_expert("gen:6:void", laps=1)
    close = run_expert("gen:6:void", laps=1, margin_frac=0.10)
    assert close["falls"] == 0 and close["finished"]
    assert close["best_lap_s"] < default["best_lap_s"]  # 27.40 against 27.63 s when written
    for bad in (0.0, 0.5, -0.1):
        with pytest.raises(ValueError, match="share of the road's width"):
            check_margin_frac(bad)


def test_a_teacher_keeps_its_void_margin_only_where_there_is_no_run_off():
    from envs.kartsim.expert import teacher_margin
    from envs.kartsim.track import load

    void, grass = load("gen:6:void"), load("gen:6:grass")
    assert void.void and not grass.void
    assert teacher_margin(void, 0.10, 0.22) == 0.22 and teacher_margin(grass, 0.10, 0.22) == 0.10
    assert teacher_margin(void, 0.10) == 0.10  # no void margin given: one margin everywhere
    with pytest.raises(ValueError, match="share of the road's width"):
        teacher_margin(void, 0.10, 0.6)
