"""Planner demos (train demos --teacher planner) and DAgger with the planner as oracle, at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from envs.kartsim.planner import PlannerConfig  # noqa: E402
from train import data as tdata  # noqa: E402
from train.simdata import drive_expert  # noqa: E402

SMALL = PlannerConfig(samples=16, rounds=1, horizon=36)


def test_planner_demos_drive_the_planners_faster_line():
    # 9 s from the grid, no noise: the planner's labels, executed, cover more track than the expert's
    xs_p, ys_p, _, st_p = drive_expert("luigi", 270, seed=2, teacher="planner", planner_config=SMALL, progress=False)
    xs_e, ys_e, _, st_e = drive_expert("luigi", 270, seed=2, teacher="expert", progress=False)
    assert xs_p.shape == (270, 66, 200, 3) and ys_p.shape == (270, 5)
    assert st_p["teacher"] == "planner" and st_p["falls"] == 0
    assert st_p["distance"] > st_e["distance"], (st_p, st_e)
    assert not np.array_equal(ys_p, ys_e)
    assert ys_p[:, 4].max() == 1.0  # it hops and drifts


def test_cli_demos_teacher_planner_with_noise(tmp_path):
    out = tmp_path / "demos"
    res = subprocess.run([sys.executable, "-m", "train", "demos", "--teacher", "planner", "--track", "rainbow",
                          "--frames", "50", "--noise", "0.3", "--planner-samples", "12", "--planner-rounds", "1",
                          "--out", str(out), "--json"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["teacher"] == "planner" and stats["noise"] == 0.3 and stats["frames"] == 50
    man = tdata.load_manifest(str(out))
    assert man["train"] == 40 and man["val"] == 10 and man["expert"]["teacher"] == "planner"
    res = subprocess.run([sys.executable, "-m", "train", "demos", "--teacher", "oracle", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--teacher" in res.stderr


def test_dagger_rounds_aggregate_planner_labels_and_report(tmp_path):
    from train.dagger import dagger

    out = tmp_path / "dagger"
    rep = dagger(str(out), "luigi", rounds=1, demo_frames=80, frames_per_round=50, noise=0.3, epochs=1,
                 batch_size=16, eval_laps=1, eval_max_seconds=5.0, seed=1, planner_config=SMALL, progress=False)
    assert [r["round"] for r in rep["rounds"]] == [0, 1]
    r0, r1 = rep["rounds"]
    assert r0["labels_total"] == 80 and r0["collected"]["driver"].startswith("planner")
    assert r1["collected"]["driver"] == "clone-r00" and r1["collected"]["frames_driven"] == 50
    # the clone's visited states were labelled (all but those spent falling) and added to round 0's
    assert r1["labels_total"] == 80 + r1["collected"]["labelled"]
    assert r1["collected"]["labelled"] + r1["collected"]["skipped_falling"] == 50
    man = tdata.load_manifest(r1["data"])
    assert man["train"] + man["val"] == r1["labels_total"] and man["dagger_round"] == 1
    for r in rep["rounds"]:
        assert os.path.exists(r["model"])
        assert isinstance(r["lap_times"], list) and isinstance(r["falls"], int) and r["laps"] == len(r["lap_times"])
    on_disk = json.loads((out / "dagger.json").read_text())
    assert on_disk["rounds"] == rep["rounds"]
    # best.keras is a copy of the chosen round's clone
    from train.dagger import best_round

    assert rep["best_round"] == best_round(rep["rounds"], 1)["round"]
    chosen = rep["rounds"][rep["best_round"]]["model"]
    assert (out / "best.keras").read_bytes() == open(chosen, "rb").read()


def test_best_round_prefers_completed_laps_then_fewest_falls_then_best_lap():
    from train.dagger import best_round

    def r(n, laps, falls, lap, autonomy=1.0):
        return {"round": n, "laps": laps, "falls": falls, "best_lap_s": lap, "autonomy": autonomy}

    # the rainbow rounds of the README: no lap, no lap, 1 fall at 42.27 s, 3 falls at 45.33 s, no lap
    rounds = [r(0, 2, 20, 79.13), r(1, 0, 96, None, 0.51), r(2, 2, 1, 42.27), r(3, 2, 3, 45.33),
              r(4, 0, 100, None, 0.49)]
    assert best_round(rounds, 2)["round"] == 2
    assert best_round(rounds + [r(5, 2, 1, 41.0)], 2)["round"] == 5  # same falls: the faster lap
    assert best_round(rounds + [r(5, 2, 0, 50.0)], 2)["round"] == 5  # no fall beats a faster lap with one
    assert best_round([r(0, 1, 0, 30.0), r(1, 2, 4, 45.0)], 2)["round"] == 1  # completed its laps
    assert best_round([r(0, 0, 9, None, 0.4), r(1, 0, 9, None, 0.7)], 2)["round"] == 1  # drove more itself
    with pytest.raises(ValueError):
        best_round([], 2)


def test_dagger_with_the_follower_as_oracle_and_state_features(tmp_path):
    from common import state as kstate
    from train.dagger import dagger
    from train.model import load_model, state_fields

    out = tmp_path / "dagger-follow"
    rep = dagger(str(out), "luigi", rounds=1, demo_frames=80, frames_per_round=50, noise=0.3, epochs=1,
                 batch_size=16, eval_laps=1, eval_max_seconds=5.0, seed=1, planner_config=SMALL, progress=False,
                 teacher="follower", state=True)
    assert rep["teacher"] == "follower" and rep["state"] is True and rep["planner_seed"] == 1
    r0, r1 = rep["rounds"]
    assert r0["collected"]["driver"].startswith("follower") and r0["collected"]["planned_lap_s"] > 0
    assert r1["labels_total"] == 80 + r1["collected"]["labelled"]
    man = tdata.load_manifest(r1["data"])
    assert man["state_fields"] == list(kstate.FIELDS)
    rows = np.load(os.path.join(r1["data"], "train_state.npy"))
    assert rows.shape == (man["train"], kstate.SIZE) and rows[:, 0].max() > 0  # speeds of the drives
    assert state_fields(load_model(r1["model"])) == list(kstate.FIELDS)
    with pytest.raises(ValueError, match="oracle"):
        dagger(str(tmp_path / "x"), "luigi", teacher="expert")
    # --resume: one more round on top of the recorded aggregate, the first two rounds kept as they were
    kw = dict(demo_frames=80, frames_per_round=50, noise=0.3, epochs=1, batch_size=16, eval_laps=1,
              eval_max_seconds=5.0, planner_config=SMALL, progress=False, teacher="follower", state=True)
    more = dagger(str(out), "luigi", rounds=2, seed=1, resume=True, **kw)
    assert [r["round"] for r in more["rounds"]] == [0, 1, 2] and more["rounds"][:2] == rep["rounds"]
    r2 = more["rounds"][2]
    assert r2["collected"]["driver"] == "clone-r01" and r2["labels_total"] == r1["labels_total"] + r2["collected"]["labelled"]
    man2 = tdata.load_manifest(r2["data"])
    assert man2["train"] + man2["val"] == r2["labels_total"] and len(man2["sessions"]) == len(man["sessions"]) + 2
    rows2 = np.load(os.path.join(r2["data"], "train_state.npy"))
    assert rows2.shape[0] == man2["train"] and np.array_equal(rows2[: len(rows)], rows)  # the old rows, in order
    assert json.loads((out / "dagger.json").read_text())["rounds"] == more["rounds"]
    with pytest.raises(ValueError, match="seed"):
        dagger(str(out), "luigi", rounds=3, seed=2, resume=True, **kw)
    with pytest.raises(FileNotFoundError, match="dagger.json"):
        dagger(str(tmp_path / "none"), "luigi", rounds=3, seed=1, resume=True, **kw)


def test_resume_reads_a_report_from_before_planner_seed(tmp_path):
    # a run recorded before --planner-seed planned with its --seed: resuming it with that seed is the same run
    from train.dagger import RESUME_KEYS, _resume

    fresh = {k: k for k in RESUME_KEYS} | {"seed": 5, "planner_seed": 5, "state": False}
    old = {k: v for k, v in fresh.items() if k != "planner_seed"} | {"rounds": []}
    path = tmp_path / "dagger.json"
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="no finished round"):  # past the settings check
        _resume(path, fresh, {"train": [], "val": []}, [], {})
    with pytest.raises(ValueError, match="planner_seed 5"):  # another race is refused, by name
        _resume(path, fresh | {"planner_seed": 0}, {"train": [], "val": []}, [], {})
