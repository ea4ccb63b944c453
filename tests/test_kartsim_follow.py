"""The planner's edge setting and the planned-line follower (envs/kartsim/follow.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.kartsim import physics as P
from envs.kartsim.dart import DartNoise
from envs.kartsim.expert import run_expert
from envs.kartsim.follow import PlannedLine, run_follower
from envs.kartsim.movie import make_movie, save_movie
from envs.kartsim.planner import edge_clearance, plan_race, start_state


@pytest.fixture(scope="module")
def small_track(small_void_track):
    return small_void_track


def _closest_to_edge(track: str, movie: dict) -> float:
    least, _ = edge_clearance(track, movie["actions"], movie["laps"], movie["seed"])
    return least


@pytest.fixture(scope="module")
def plans(small_track, fast_planner):
    """The same search without and with a 1.2-unit edge, as movies."""
    out = {}
    for edge in (0.0, 1.2):
        cfg = dataclasses.replace(fast_planner, edge=edge)
        out[edge] = make_movie(plan_race(small_track, laps=2, seed=3, config=cfg), small_track)
    return out


def test_the_edge_setting_keeps_the_planned_race_inside_the_road(small_track, plans):
    free, kept = _closest_to_edge(small_track, plans[0.0]), _closest_to_edge(small_track, plans[1.2])
    assert plans[1.2]["falls"] == 0 and plans[1.2]["finished"]
    assert free < 0.8, f"without an edge the planner was expected to run close to the void (least {free:.2f})"
    assert edge_clearance(small_track, plans[0.0]["actions"], 2, 3)[1] > 0.0  # frames within 0.5 units of it
    assert kept >= 1.0, f"with edge 1.2 the race came {kept:.2f} units from the edge"
    expert = run_expert(small_track, laps=2, seed=3)
    assert plans[1.2]["best_lap_s"] < expert["best_lap_s"]  # still faster than the expert


def test_the_follower_drives_the_planned_line_closed_loop_faster_than_the_expert(small_track, plans):
    line = PlannedLine.from_movie(plans[1.2])
    assert line.lap_s == pytest.approx(min(plans[1.2]["lap_times"]))
    assert len(line.pedal) == len(line.phase) == len(line.side) == len(line.line.xy)
    assert set(np.unique(line.phase)) <= {0, 1, 2} and (line.phase == 2).any()  # the planner drifts
    res = run_follower(small_track, laps=2, seed=3, line=line)
    expert = run_expert(small_track, laps=2, seed=3)
    assert res["finished"] and res["falls"] == 0, res
    assert res["best_lap_s"] < expert["best_lap_s"], (res, expert["best_lap_s"])
    assert res["best_lap_s"] <= line.lap_s * 1.08, res  # close to the lap it follows
    assert res["mini_turbos"] >= 2
    # a function of the state: the same state gives the same action, a state off the line steers back
    sim = start_state(small_track, 1, 0)
    for _ in range(90):
        sim.step(line.actions(sim.fs, sim.ist))
    a1, a2 = line.actions(sim.fs, sim.ist), line.actions(sim.fs.copy(), sim.ist.copy())
    assert np.array_equal(a1, a2)
    moved = sim.fs.copy()
    th = moved[0, P.TH]
    moved[0, P.X] += -np.sin(th) * 1.0  # one unit to the kart's left...
    moved[0, P.Y] += np.cos(th) * 1.0
    ist = sim.ist.copy()
    ist[0, P.DDIR] = 0
    moved[0, P.HOP] = 0.0
    left = line.actions(moved, ist)[0, 0]
    moved[0, P.X] -= -np.sin(th) * 2.0  # ...and one to its right
    moved[0, P.Y] -= np.cos(th) * 2.0
    right = line.actions(moved, ist)[0, 0]
    assert left > right  # steers right (positive) more from the left of the line


def test_the_follower_recovers_from_dart_noise(small_track, plans):
    line = PlannedLine.from_movie(plans[1.2])
    sim = start_state(small_track, 2, 4)
    dart = DartNoise(0.2, seed=1)
    for _ in range(3000):
        _, term, trunc = sim.step(dart.perturb(line.actions(sim.fs, sim.ist)[0])[None])
        if term[0] or trunc[0]:
            break
    info = sim.info(0)
    assert info["finished"], info  # pushed off its line again and again, it finishes the race


def _cli(module, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_cli_follow_and_demos_teacher_follower(small_track, plans, tmp_path, plan_cache_of_the_tests):
    movie = save_movie(tmp_path / "edge.json", plans[1.2])
    r = _cli("envs.kartsim", "follow", "--movie", str(movie), "--laps", "2", "--seed", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["finished"] and out["falls"] == 0 and out["planned_lap_s"] == pytest.approx(plans[1.2]["best_lap_s"],
                                                                                              abs=1e-3)
    assert out["movie"] == str(movie) and len(out["lap_times"]) == 2
    r = _cli("envs.kartsim", "plan", "--track", small_track, "--laps", "1", "--edge", "-1", "--out",
             str(tmp_path / "x.json"))
    assert r.returncode != 0 and "edge" in r.stderr
    r = _cli("envs.kartsim", "plan", "--track", small_track, "--laps", "1", "--edge", "1.2", "--samples", "24",
             "--out", str(tmp_path / "e.json"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["edge"] == 1.2 and out["falls"] == 0 and out["closest_to_edge_u"] >= 1.0 and out["near_edge_share"] == 0
    assert Path(out["cache"]).parent == plan_cache_of_the_tests  # the user's data/kartsim_plans is left alone
    demos = tmp_path / "demos"
    r = _cli("train", "demos", "--teacher", "follower", "--track", small_track, "--frames", "240", "--noise", "0.2",
             "--planner-samples", "16", "--planner-rounds", "1", "--out", str(demos), "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["teacher"] == "follower" and stats["frames"] == 240 and stats["planned_lap_s"] > 0
    manifest = json.loads((demos / "manifest.json").read_text())
    assert manifest["expert"]["teacher"] == "follower"
    labels = np.load(demos / "train_actions.npy")
    assert labels.shape[1] == 5 and labels[:, 2].mean() > 0.5  # the follower's pedal: A held most of the time


def test_planner_seed_picks_the_race_the_follower_drives(small_track, fast_planner):
    """`--planner-seed` (demos, dagger): the follower drives the race planned from that seed, not the drive's."""
    from train.simdata import drive_expert

    cfg = dataclasses.replace(fast_planner, edge=1.2)
    lap = {s: round(PlannedLine.plan(small_track, cfg, seed=s).lap_s, 3) for s in (0, 4)}
    assert lap[0] != lap[4], f"seeds 0 and 4 plan equally fast races ({lap}): pick two that differ"
    for planner_seed, want in ((None, lap[0]), (4, lap[4])):
        _, ys, _, stats = drive_expert(small_track, 40, seed=0, teacher="follower", planner_config=cfg,
                                       planner_seed=planner_seed, progress=False)
        assert stats["planned_lap_s"] == want and len(ys) == 40
