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
