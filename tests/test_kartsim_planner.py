"""The planner (envs/kartsim/planner.py), input movies and the plan cache (envs/kartsim/movie.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import envs.kartsim as ks
from envs.kartsim import physics as P
from envs.kartsim.expert import run_expert
from envs.kartsim.movie import MovieError, load_movie, make_movie, replay, save_movie, track_hash
from envs.kartsim.planner import Planner, PlannerConfig, edge_clearance, plan_race, start_state
from envs.kartsim.splits import LapStyle, SplitTimer


@pytest.fixture(scope="module")
def small_track(small_void_track):
    return small_void_track


@pytest.fixture(scope="module")
def planned(small_track, fast_planner):
    return plan_race(small_track, laps=2, seed=3, config=fast_planner)


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "envs.kartsim", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _bound_ok(best, track):
    lb = ks.lower_bound_s(track)
    assert best >= lb, (f"a planned lap of {best:.3f} s beat the lower bound {lb:.3f} s of {track}: "
                        "the lower bound is wrong (it must hold for every lap the dynamics allow)")


def test_planned_race_replays_exactly_and_beats_the_expert(small_track, planned, tmp_path):
    assert planned["finished"] and planned["falls"] == 0 and len(planned["lap_times"]) == 2
    movie = make_movie(planned, small_track)
    path = save_movie(tmp_path / "m.json", movie)
    loaded = load_movie(path)
    assert loaded["actions"].shape == (planned["frames"], 5)
    assert np.array_equal(loaded["actions"], planned["actions"])
    again = replay(loaded, src=str(path))  # a plain make(track, seed=3, laps=2) env
    assert again["lap_times"] == planned["lap_times"]  # exactly, not approximately
    assert again["matches"] and again["falls"] == 0 and again["mini_turbos"] == planned["mini_turbos"]
    expert = run_expert(small_track, laps=2, seed=3)
    for lap, (mine, theirs) in enumerate(zip(planned["lap_times"], expert["lap_times"], strict=True)):
        assert mine <= theirs + 1e-9, f"planned lap {lap + 1} ({mine:.3f} s) is slower than the expert's ({theirs})"
    assert planned["best_lap_s"] < expert["best_lap_s"]
    assert planned["mini_turbos"] >= 1  # it drifts and fires the boost
    _bound_ok(planned["best_lap_s"], small_track)


def test_planner_is_deterministic_and_labels_any_state(small_track, fast_planner):
    # a state off the planner's own line: the expert drove with a steering offset for a while
    env = ks.make(small_track, size=(8, 8), seed=1, laps=1)
    env.reset()
    for i in range(70):
        a = env.unwrapped.expert_action()
        a[0] = np.clip(a[0] + (0.6 if i > 50 else 0.0), -1, 1)
        env.step(a)
    sim = env.unwrapped.sim
    before = (sim.fs.copy(), sim.ist.copy(), sim.lapt.copy())
    labels = []
    for _ in range(2):
        pl = Planner(small_track, 1, fast_planner, seed=5)
        labels.append([pl.label(sim.fs[0], sim.ist[0], sim.lapt[0]) for _ in range(3)])
    assert np.array_equal(np.array(labels[0]), np.array(labels[1]))
    a = labels[0][0]
    assert a.shape == (5,) and a.dtype == np.float32
    assert -1 <= a[0] <= 1 and a[2] in (0.0, 1.0) and a[3] in (0.0, 1.0) and a[4] in (0.0, 1.0)
    for a, b in zip(before, (sim.fs, sim.ist, sim.lapt), strict=True):
        assert np.array_equal(a, b)  # labelling does not touch the state it was given
    # following the labels from there keeps the kart on the road and moving on
    pl = Planner(small_track, 1, fast_planner, seed=5)
    prog0 = sim.fs[0, P.PROG]
    for _ in range(60):
        env.step(pl.label(sim.fs[0], sim.ist[0], sim.lapt[0]))
    assert sim.ist[0, P.FALLS] == 0 and sim.fs[0, P.PROG] > prog0 + 20


def test_start_state_is_the_plain_envs():
    env = ks.make("twisty", size=(8, 8), seed=9, laps=1)
    env.reset()
    sim = start_state("twisty", 1, 9)
    assert np.array_equal(sim.fs, env.unwrapped.sim.fs) and np.array_equal(sim.ist, env.unwrapped.sim.ist)


def test_cli_plan_replay_and_tracks_cache(small_track, small_void_spec, tmp_path):
    env = {"KARTSIM_PLAN_CACHE": str(tmp_path / "cache")}
    res = _cli("tracks", "--track", small_track, "--json", env=env)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout.strip().splitlines()[-1])["tracks"][-1]
    assert row["name"] == small_track and row["planned_best_lap_s"] is None  # nothing cached yet
    movie = tmp_path / "run.json"
    res = _cli("plan", "--track", small_track, "--laps", "1", "--seed", "2", "--samples", "24", "--out", str(movie),
               "--json", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("track", "lap_times", "best_lap_s", "falls", "mini_turbos", "expert_best_lap_s", "lower_bound_s",
                "plan_time_s"):
        assert key in out, key
    assert out["falls"] == 0 and len(out["lap_times"]) == 1 and out["best_lap_s"] <= out["expert_best_lap_s"]
    _bound_ok(out["best_lap_s"], small_track)
    assert "lap 1/1" not in res.stderr  # --json: no progress line
    res = _cli("replay", str(movie), "--sectors", "4", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    assert rep["lap_times"] == out["lap_times"] and rep["matches"] and rep["falls"] == 0
    split = rep["sectors"]  # the best (only) lap's split times: 4 of them, adding up to the lap
    assert split["lap"] == 0 and len(split["sectors_s"]) == 4 and min(split["sectors_s"]) > 0
    assert sum(split["sectors_s"]) == pytest.approx(out["lap_times"][0], abs=1e-3)
    style = rep["style"]  # and how that lap was driven: its line over its mean speed is the lap time
    assert style["mini_turbos"] == rep["mini_turbos"] and style["drifts"] >= style["mini_turbos"]  # 1 lap: all
    assert style["lap"] == 0 and style["path_u"] / style["mean_speed_u_s"] == pytest.approx(out["lap_times"][0], rel=0.05)
    assert style["closest_to_edge_u"] == pytest.approx(out["closest_to_edge_u"], abs=1e-3)  # 1 lap: plan's measure
    res = _cli("replay", str(movie)).stdout  # people read the same
    assert f"its line {style['path_u']:.1f} units" in res and "inside the edge" in res
    res = _cli("replay", str(movie), "--sectors", "0")
    assert res.returncode == 2 and "--sectors" in res.stderr and "at least 1" in res.stderr
    assert rep["mini_turbos"] == out["mini_turbos"]
    res = _cli("tracks", "--track", small_track, "--json", env=env)
    row = json.loads(res.stdout.strip().splitlines()[-1])["tracks"][-1]
    assert row["planned_best_lap_s"] == out["best_lap_s"]
    cached = list((tmp_path / "cache").glob("*.json"))
    assert [p.name for p in cached] == [f"{track_hash(small_track)}.json"]
    # the same track, edited: another version, so its plan is not the cached one and the movie is refused
    edited = tmp_path / "small.json"
    edited.write_text(json.dumps({**small_void_spec, "points": [[x, y, w - 0.5] for x, y, w in small_void_spec["points"]]}))
    res = _cli("replay", str(movie), "--track", str(edited), "--json")
    assert res.returncode == 2 and str(movie) in res.stderr and "track hash" in res.stderr
    assert res.stderr.startswith("python -m envs.kartsim replay: error:")
    res = _cli("tracks", "--track", str(edited), "--json", env=env)
    assert json.loads(res.stdout.strip().splitlines()[-1])["tracks"][-1]["planned_best_lap_s"] is None


def test_plan_on_a_generated_track_with_progress_line(tmp_path):
    movie = tmp_path / "gen.json"
    res = _cli("plan", "--track", "gen:5:void", "--laps", "1", "--samples", "16", "--rounds", "1",
               "--replan-every", "3", "--out", str(movie), env={"KARTSIM_PLAN_CACHE": str(tmp_path / "c")})
    assert res.returncode == 0, res.stderr
    assert "plan gen:5:void: lap 1/1" in res.stderr
    m = load_movie(movie)
    assert m["track"] == "gen:5:void" and m["falls"] == 0 and len(m["lap_times"]) == 1
    assert replay(m)["lap_times"] == m["lap_times"]
    _bound_ok(m["best_lap_s"], "gen:5:void")


@pytest.mark.parametrize("content,field", [
    ("{nope", "not valid JSON"),
    (json.dumps({"kind": "something"}), "not a kartsim movie"),
    (json.dumps({"kind": "kartsim-movie", "version": 1, "track": "luigi", "track_hash": "x", "seed": 0,
                 "laps": 1, "actions": [[0, 0, 1, 0, 2]]}), "actions[0]"),
    (json.dumps({"kind": "kartsim-movie", "version": 1, "track": "luigi", "track_hash": "x", "seed": 0,
                 "laps": 1, "actions": [[0, 0, 1]]}), "'actions'"),
    (json.dumps({"kind": "kartsim-movie", "version": 1, "track": "luigi", "seed": 0, "laps": 1,
                 "actions": []}), "'track_hash'"),
])
def test_bad_movies_are_refused_naming_file_and_field(tmp_path, content, field):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(MovieError) as exc:
        load_movie(path)
    assert str(path) in str(exc.value) and field in str(exc.value)
    res = _cli("replay", str(path), "--json")
    assert res.returncode == 2 and str(path) in res.stderr


def test_plan_never_overwrites_what_is_not_a_movie(small_track, tmp_path):
    precious = tmp_path / "notes.json"
    precious.write_text('{"mine": 1}')
    res = _cli("plan", "--track", small_track, "--laps", "1", "--out", str(precious), "--json")
    assert res.returncode == 2 and str(precious) in res.stderr and "not a kartsim movie" in res.stderr
    assert precious.read_text() == '{"mine": 1}'


def test_planner_settings_are_checked():
    with pytest.raises(ValueError, match="replan_every"):
        PlannerConfig(horizon=4, replan_every=6)
    res = _cli("plan", "--track", "luigi", "--laps", "0", "--out", "/nonexistent/x.json")
    assert res.returncode == 2 and "--laps" in res.stderr


def test_split_times_add_up_to_each_lap_and_put_a_fall_in_its_sector(small_track):
    """A real race of 2 laps on the void track: the expert drives, except that on lap 1, 40% of the way
    round, it steers hard into the void until it falls. Each lap's sector times add up to its lap time, and
    the sector it fell in is where lap 1 lost its time on lap 2 (respawn and hold: over a second)."""
    n = 4
    env = ks.make(small_track, size=(8, 8), seed=3, laps=2)
    env.reset()
    timer = SplitTimer(n)
    fell_in, prev_progress = None, 0.0
    while True:
        info = env.unwrapped.sim.info(0)
        action = env.unwrapped.expert_action()
        if info["lap"] == 0 and info["progress"] >= 0.4 and info["falls"] == 0:
            action = np.array([1.0, 0.0, 1.0, 0.0, 0.0], np.float32)  # full right, accelerate: off the edge
        _, _, term, trunc, info = env.step(action)
        timer.see(info)
        if fell_in is None and info["surface"] == "falling":
            fell_in = int(prev_progress * n)  # the sector it was driving in when it left the road
        prev_progress = info["progress"]
        if term or trunc:
            break
    env.close()
    assert info["falls"] == 1 and fell_in is not None and info["finished"]
    laps = info["lap_times"]
    assert len(timer.laps) == 2
    for lap, sectors in zip(laps, timer.laps, strict=True):
        assert len(sectors) == n and min(sectors) > 0
        assert sum(sectors) == pytest.approx(lap, abs=1e-9)
    first, second = timer.laps
    assert first[fell_in] - second[fell_in] > 1.0, (fell_in, first, second)
    best = timer.best(laps)
    assert best["lap"] == 1 and best["lap_s"] == laps[1] and best["sectors_s"] == [round(s, 4) for s in second]
    assert timer.best([]) is None
    with pytest.raises(ValueError, match="sectors"):
        SplitTimer(0)


def test_lap_style_measures_the_line_pace_boost_and_drift():
    """Hand-made frames: 1 unit a frame along x at speed 30, a fall (the kart put back 50 units away),
    boosts and drifts on known frames; the lap ends on frame 10 and again on frame 16."""
    style = LapStyle()
    frames = []  # (x, surface, boost, drift, lap, mini-turbos fired so far, charge)
    charges = {3: 0.4, 4: 0.9}  # a drift on frames 3-4 charged full on its second frame
    frames += [(float(i), "road", i < 3, 1 if 3 <= i < 5 else 0, 0, 1, charges.get(i, 0.0)) for i in range(1, 7)]
    frames += [(6.0, "falling", False, 0, 0, 1, 0.0), (6.0, "falling", False, 0, 0, 1, 0.0)]  # falls where it was
    frames += [(56.0, "road", False, 0, 0, 2, 0.0), (57.0, "road", True, -1, 1, 2, 0.1)]  # put back 50 away; lap ends
    frames += [(58.0 + k, "road", False, -1 if k < 2 else 0, 1 if k < 5 else 2, 2, (0.5, 0.85)[k] if k < 2 else 0.0)
               for k in range(6)]  # lap 2: 6 frames, the drift of frame 57 going on for 2 of them
    for x, surface, boost, drift, lap, mts, charge in frames:
        style.see({"surface": surface, "speed": 30.0, "boost": boost, "drift": drift, "lap": lap, "mini_turbos": mts,
                   "charge": charge}, (x, 0.0))
    first, second = style.laps
    assert first["drifts"] == 2 and first["mini_turbos"] == 2  # the drift begun on its last frame is lap 1's
    assert second["drifts"] == 0 and second["mini_turbos"] == 0  # ... and goes on into lap 2
    assert first["charged_drift_share"] == 0.1 and first["release_charge_median"] == 0.9  # 1 frame on a full charge
    assert second["charged_drift_share"] == round(1 / 6, 4) and second["release_charge_median"] == 0.85
    assert first["path_u"] == 6.0  # 5 before the fall, 1 after the respawn: the 50-unit jump is no driving
    assert first["mean_speed_u_s"] == 30.0
    assert first["boost_share"] == round(3 / 10, 4) and first["drift_share"] == round(3 / 10, 4)
    assert second["path_u"] == 6.0 and second["boost_share"] == 0.0  # the step across the line counts in lap 2
    best = style.best([12.5, 10.0])
    assert best["lap"] == 1 and best["lap_s"] == 10.0 and best["path_u"] == 6.0
    assert style.best([]) is None
    assert "closest_to_edge_u" not in best  # no edge distances given
    edged = LapStyle()  # a lap 1.0, 0.4, 0.2 units inside the edge on the road, -3 while falling
    for edge, surface, lap in ((1.0, "road", 0), (0.4, "road", 0), (-3.0, "falling", 0), (0.2, "road", 1)):
        edged.see({"surface": surface, "speed": 1.0, "boost": False, "drift": 0, "lap": lap, "mini_turbos": 0,
                   "charge": 0.0}, (0.0, 0.0), edge)
    assert edged.laps[0]["release_charge_median"] is None  # no drift ended
    assert edged.laps[0]["closest_to_edge_u"] == 0.2 and edged.laps[0]["near_edge_share"] == round(2 / 3, 4)


def test_evaluate_against_the_planners_movie(small_track, planned, tmp_path):
    """train evaluate --against: the expert's split times beside the planned race's, sector by sector,
    and the splits picture; a movie of another track is refused before anything drives."""
    movie = save_movie(tmp_path / "plan.json", make_movie(planned, small_track))
    res = subprocess.run([sys.executable, "-m", "train", "evaluate", "--expert", "--track", small_track, "--laps", "2",
                          "--against", str(movie), "--sectors", "5", "--out", str(tmp_path / "media"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ref = out["against"]
    assert ref["movie"] == str(movie) and ref["best_lap_s"] == round(planned["best_lap_s"], 3)
    assert ref["lap_times"] == [round(t, 3) for t in planned["lap_times"]]
    mine = out["sectors"]
    # the best laps' style: the planned lap's line is driven at a higher mean speed than the expert's
    assert out["style"]["lap"] == mine["lap"] and ref["style"]["lap_s"] == pytest.approx(ref["best_lap_s"], abs=1e-3)
    for style, lap_s in ((out["style"], out["best_lap_s"]), (ref["style"], ref["best_lap_s"])):
        assert 0 <= style["boost_share"] <= 1 and 0 <= style["drift_share"] <= 1
        assert style["path_u"] / lap_s == pytest.approx(style["mean_speed_u_s"], rel=0.05)  # line / time = pace
    assert ref["style"]["mean_speed_u_s"] > out["style"]["mean_speed_u_s"]
    for style in (out["style"], ref["style"]):
        assert style["closest_to_edge_u"] < 5.0 and 0.0 <= style["near_edge_share"] <= 1.0
    least, _ = edge_clearance(small_track, planned["actions"], 2, 3)  # plan's measure, over the whole race
    assert ref["style"]["closest_to_edge_u"] >= round(least, 3) - 1e-9
    assert len(mine["sectors_s"]) == len(ref["sectors_s"]) == len(ref["delta_s"]) == 5
    assert mine["lap_s"] == out["best_lap_s"]
    assert ref["delta_s"] == [round(a - b, 4) for a, b in zip(mine["sectors_s"], ref["sectors_s"], strict=True)]
    assert ref["lap_delta_s"] == pytest.approx(out["best_lap_s"] - planned["best_lap_s"], abs=1e-3)
    assert sum(ref["delta_s"]) == pytest.approx(ref["lap_delta_s"], abs=2e-3)
    assert ref["lap_delta_s"] > 0  # the planned race beats the expert (test_planned_race_... above)
    assert ref["worst_sectors"] and all(ref["delta_s"][k - 1] > 0 for k in ref["worst_sectors"])
    assert ref["delta_s"][ref["worst_sectors"][0] - 1] == max(ref["delta_s"])
    png = out["media"]["splits"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in os.listdir(tmp_path / "media") if ".tmp" in p]
    res = subprocess.run([sys.executable, "-m", "train", "evaluate", "--expert", "--track", "luigi",
                          "--against", str(movie), "--no-media"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and str(movie) in res.stderr and "track" in res.stderr
    assert "Traceback" not in res.stderr
