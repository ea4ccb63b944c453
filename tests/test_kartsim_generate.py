"""Procedural tracks (envs/kartsim/generate.py) and per-env tracks in VecKartSim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import envs.kartsim as ks
from envs.kartsim.generate import (
    MAX_KAPPA_HALF_WIDTH,
    MIN_RADIUS,
    GenError,
    generate,
    generated_tracks,
    track_name,
)
from envs.kartsim.track import TrackError, geometry, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_thousand_seeds_all_pass_the_track_rules_and_vary():
    lengths, widths, kinds, tight_share = [], [], set(), []
    for seed in range(1000):
        spec = generate(seed)
        name = track_name(seed)
        geo = geometry(validate(spec, name), name)  # the loader's own rules: raises if broken
        kappa = np.abs(geo["kappa"])
        assert (kappa * geo["width"] / 2).max() <= MAX_KAPPA_HALF_WIDTH + 1e-9, name
        assert kappa.max() <= 1 / MIN_RADIUS + 1e-9, name
        lengths.append(geo["length"])
        widths.append(float(geo["width"].mean()))
        kinds.add(spec["surface"]["offroad"])
        tight_share.append(float((kappa > 1 / 30).mean()))  # share of the lap in turns under 30 units
    assert kinds == {"grass", "void"}
    assert np.percentile(lengths, 5) < 600 and np.percentile(lengths, 95) > 1000
    assert min(widths) < 10.5 and max(widths) > 15
    # flowing tracks of sweepers and twisty ones of tight corners
    assert np.percentile(tight_share, 10) < 0.05 and np.percentile(tight_share, 90) > 0.1


def test_same_seed_same_track_and_styles_are_kept():
    assert generate(12) == generate(12)
    assert generate(12)["points"] != generate(13)["points"]
    for seed in range(20):
        assert generate(seed, "void")["surface"]["offroad"] == "void"
        assert generate(seed, "grass")["surface"]["offroad"] == "grass"


@pytest.mark.parametrize("bad", ["gen:", "gen:x", "gen:-1", "gen:3:ice", "gen:3:void:1"])
def test_bad_generated_names_are_refused_by_name(bad):
    with pytest.raises(TrackError, match="gen"):
        ks.load(bad)


def test_generate_refuses_bad_arguments():
    with pytest.raises(GenError, match="style"):
        generate(1, "ice")
    with pytest.raises(GenError, match="seed"):
        generate(-3)


def test_a_generated_track_drives_like_a_file_track(tmp_path):
    out = tmp_path / "g.json"
    res = subprocess.run([sys.executable, "-m", "envs.kartsim", "generate", "--seed", "4", "--style", "void",
                          "--out", str(out), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["tracks"][0]["name"] == "gen:4:void"
    by_name, by_file = ks.load("gen:4:void"), ks.load(out)
    assert np.array_equal(by_name.xy, by_file.xy) and np.array_equal(by_name.tex, by_file.tex)
    env = ks.make("gen:4:void", size=(66, 200), seed=0)
    obs, info = env.reset()
    assert obs.shape == (66, 200, 3) and info["lap"] == 0
    assert ks.lower_bound_s("gen:4:void") == ks.lower_bound_s(out)


def test_the_expert_finishes_generated_laps_without_falling():
    from envs.kartsim.expert import run_expert

    for seed in (0, 1):
        out = run_expert(track_name(seed, "void"), 1, 0, progress=False)
        assert len(out["lap_times"]) == 1 and out["falls"] == 0
        assert out["best_lap_s"] >= out["lower_bound_s"]


def test_per_env_tracks_step_exactly_like_single_envs():
    tracks = ["luigi", "gen:3", "rainbow", "gen:7:void"]
    vec = ks.VecKartSim(4, size=(66, 200), seed=10, tracks=tracks)
    obs, _ = vec.reset()
    singles = [ks.make(t, size=(66, 200), seed=10 + i) for i, t in enumerate(tracks)]
    for i, env in enumerate(singles):
        assert np.array_equal(obs[i], env.reset()[0])
    for _ in range(120):
        act = vec.expert_actions()
        obs, rew, term, trunc, info = vec.step(act)
        for i, env in enumerate(singles):
            assert np.array_equal(act[i], env.unwrapped.expert_action())  # the expert of its own track
            o, r, te, tr, inf = env.step(act[i])
            assert np.array_equal(obs[i], o) and rew[i] == r and te == term[i] and tr == trunc[i]
            assert inf["progress"] == pytest.approx(info["progress"][i])
    assert [t.name for t in vec.tracks] == ["luigi", "gen:3", "rainbow", "gen:7:void"]


def test_a_track_sampler_draws_new_tracks_on_reset_and_state_round_trips():
    sampler = generated_tracks(range(100, 110))
    vec = ks.VecKartSim(3, size=(66, 200), seed=1, track_sampler=sampler, laps=1, max_time_s=1.0)
    vec.reset()
    first = [t.name for t in vec.tracks]
    assert all(n.startswith("gen:1") and 100 <= int(n[4:]) < 110 for n in first)
    seen = set(first)
    for _ in range(4 * 31):  # each episode ends after 1 s: every env is reset 4 times
        vec.step(vec.expert_actions())
        seen |= {t.name for t in vec.tracks}
    assert len(seen) > len(set(first))
    state = vec.get_state()
    a = np.tile(np.array([0.3, 0, 1, 0, 0], np.float32), (3, 1))
    ref = [vec.step(a)[1] for _ in range(40)]
    other = ks.VecKartSim(3, size=(66, 200), seed=99, track_sampler=sampler, laps=1, max_time_s=1.0)
    other.reset()
    other.set_state(state)
    again = [other.step(a)[1] for _ in range(40)]
    assert all(np.array_equal(x, y) for x, y in zip(ref, again, strict=True))
    with pytest.raises(ValueError, match="per-env tracks"):
        ks.VecKartSim(3, "luigi", size=(66, 200)).set_state(state)


def test_generalise_bench_scores_the_expert_as_itself_and_a_bad_driver_as_worst(tmp_path):
    from bench.generalise import drive, eval_tracks, generalise, worst_sheet
    from envs.kartsim.generate import EVAL_SEED_START

    tracks = eval_tracks(2, "void", held_out=False)
    assert tracks == [f"gen:{EVAL_SEED_START}:void", f"gen:{EVAL_SEED_START + 1}:void"]
    res = generalise("expert", tracks, laps=1, out=tmp_path)
    assert res["finish_rate"] == 1.0 and res["median_ratio"] == 1.0
    assert res["by_style"]["void"]["tracks"] == 2 and res["by_style"]["grass"]["tracks"] == 0
    rows = json.loads((tmp_path / "generalise.json").read_text())["rows"]
    assert [r["track"] for r in rows] == tracks and all(r["laps"] == 1 for r in rows)
    assert (tmp_path / "worst.png").stat().st_size > 10_000

    def hard_left(obs):  # drives off the road at once: falls, never finishes
        return np.tile(np.array([-1, 0, 1, 0, 0], np.float32), (len(obs), 1))

    bad = drive(tracks[:1], hard_left, laps=1)
    assert bad[0]["finished"] is False and bad[0]["falls"] > 0 and bad[0]["laps"] == 0
    good = drive(tracks[1:], None, laps=1)
    for r in bad + good:
        r["ratio"] = None if r["best_lap_s"] is None else 1.0
    worst_sheet(good + bad, tmp_path / "sheet.png")
    from bench.generalise import _badness

    assert sorted(good + bad, key=_badness)[0]["track"] == tracks[0]


def test_multi_track_demos_share_frames_and_stay_off_the_evaluation_seeds(tmp_path):
    from train.simdata import expert_dataset

    stats = expert_dataset(str(tmp_path / "d"), n_frames=61, tracks=["gen:0", "gen:1"], progress=False)
    assert stats["tracks"] == ["gen:0", "gen:1"]
    man = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert man["train"] + man["val"] == 61
    assert [s["path"] for s in man["sessions"]] == ["sim-gen:0-train", "sim-gen:0-val", "sim-gen:1-train",
                                                    "sim-gen:1-val"]
    res = subprocess.run([sys.executable, "-m", "train", "demos", "--gen-tracks", "5", "--gen-seed", "999998",
                          "--out", str(tmp_path / "e")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "evaluation tracks" in res.stderr
    assert not (tmp_path / "e").exists()


def test_fine_tuning_can_run_over_a_distribution_of_generated_tracks():
    from envs.kartsim.generate import parse_range
    from train.finetune.envs import KartSimBackend
    from train.finetune.settings import Config

    assert parse_range("gen:10-20:void") == (range(10, 20), "void") and parse_range("gen:10") is None
    with pytest.raises(GenError, match="FIRST-END"):
        parse_range("gen:20-10")
    env = KartSimBackend("gen:0-50", num_envs=3, action_repeat=2, seed=0)
    obs = env.reset()
    assert obs.shape == (3, 66, 200, 3)
    names = [t.name for t in env.vec.tracks]
    assert all(n.startswith("gen:") and 0 <= int(n[4:]) < 50 for n in names)
    total = np.zeros(3)
    for _ in range(20):
        res = env.step(env.expert_actions())
        total += res.reward
    assert res.obs.shape == (3, 66, 200, 3) and np.all(total > 0)  # all three drive forwards
    env.close()
    cfg = Config(track="gen:0-50")  # chosen on 8 of its own tracks, evenly spaced, driven together
    assert cfg.eval_tracks == ("gen:0+gen:6+gen:12+gen:18+gen:25+gen:31+gen:37+gen:43", "twisty", "rainbow")
    assert cfg.select_track == cfg.eval_tracks[0]
    assert Config(track="gen:10-13:void", select_tracks=8).eval_tracks[0] == "gen:10:void+gen:11:void+gen:12:void"
    cfg = Config(track="gen:0-50", select_tracks=0)
    assert cfg.eval_tracks == ("twisty", "rainbow") and cfg.select_track == "twisty"
    assert Config(track="rainbow").select_track == "rainbow"


def test_a_set_of_tracks_is_driven_together_and_chooses_best_keras_only_when_all_finish_cleanly():
    """``T1+T2``: one env per track (the fine-tune's selection set); its score is the mean lap."""
    from train.finetune.envs import KartSimBackend
    from train.finetune.evaluation import Evaluator
    from train.finetune.rollout import evaluate
    from train.finetune.settings import Config

    env = KartSimBackend("gen:6:void+gen:9:void", num_envs=2, action_repeat=1, seed=0)
    assert [t.name for t in env.vec.tracks] == ["gen:6:void", "gen:9:void"]
    res = evaluate(env, 1, 30 * 90, None)  # the expert, one lap each
    env.close()
    assert res["laps"] == 2 and res["falls"] == 0
    assert len(res["lap_times"]) == 2 and res["mean_lap_s"] == pytest.approx(np.mean(res["lap_times"]))
    assert res["best_lap_s"] < res["mean_lap_s"]  # gen:6 is the shorter one: a set's best lap says little
    with pytest.raises(ValueError, match="2 tracks for 3 envs"):
        KartSimBackend("gen:6:void+gen:9:void", num_envs=3)

    cfg = Config(track="gen:0-50", eval_laps=2)
    ev = Evaluator(cfg, None, None, None)
    clean = {"falls": 0, "best_lap_s": 30.0, "mean_lap_s": 40.0, "laps": 16}
    assert ev.score(cfg.select_track, clean) == 40.0
    assert ev.score(cfg.select_track, {**clean, "laps": 15}) is None  # one track did not finish
    assert ev.score(cfg.select_track, {**clean, "falls": 1}) is None
    assert ev.score("twisty", {**clean, "laps": 2}) == 30.0  # one track: its best lap
    assert ev.score("twisty", {**clean, "best_lap_s": None}) is None
    rows = [{"track": cfg.select_track, "falls": 0}, {"track": "twisty", "falls": 0}, {"track": "rainbow", "falls": 0}]
    assert ev.keeps(40.0, rows)
    assert not ev.keeps(40.0, rows[:2] + [{"track": "rainbow", "falls": 1}])  # a held-out fall vetoes it
    assert not ev.keeps(None, rows)
    ev.best_lap = 39.0
    assert not ev.keeps(40.0, rows)  # not better than the model kept
