"""Integration tests of train.finetune on the real simulator: a short run raises the
return on a small track, checkpoint/resume takes the same next update, the CLI's
JSON, and the live dashboard rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from envs.kartsim import physics as KP
from testing.models import tiny_pilotnet
from testing.tracks import write_oval
from train.finetune.dashboard import Dashboard
from train.finetune.ppo import PPOConfig
from train.finetune.trainer import Config, Trainer
from train.model import save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("finetune")
    track = d / "oval.json"
    write_oval(track)
    model = save_model(tiny_pilotnet(seed=1), str(d / "tiny.keras"))
    return {"dir": d, "track": str(track), "model": model}


def config(files, out, **kw) -> Config:
    base = dict(model=files["model"], track=files["track"], eval_tracks=(files["track"],), envs=8,
                action_repeat=4, rollout=16, warmup_frames=0, kl_coef=0.0, kl_final=0.0, eval_laps=1,
                eval_max_s=20.0, eval_envs=4, out=str(out), tensorboard=False, seed=0, frames=10**9,
                ppo=PPOConfig(lr=1e-3, critic_lr=1e-3, epochs=4, minibatch=64))
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def trained(files):
    """A short PPO run of a tiny random-init conv net on the oval (shared by two tests)."""
    dash = Dashboard(port=0).start()
    # the latest weights, not the running average: the test measures what 30 updates learned
    trainer = Trainer(config(files, files["dir"] / "run", actor_ema=0.0), on_step=dash.on_step, on_eval=dash.on_eval)
    dash.attach(trainer)
    before = trainer.run_eval()[0]
    for _ in range(30):
        trainer.train_update()
    after = trainer.run_eval()[0]
    yield trainer, dash, before, after
    dash.stop()
    trainer.close()


def test_short_run_raises_the_return(trained):
    trainer, _, before, after = trained
    # deterministic evaluation over the same 20 game seconds from the same starts
    assert after["return"] > before["return"] + 10.0, (before, after)  # 10 = a tenth of a lap
    rate = [h["reward_per_s"] for h in trainer.history]
    assert np.mean(rate[-10:]) > np.mean(rate[:3]), rate
    assert all(h["phase"] == "ppo" for h in trainer.history)
    assert trainer.frames == 30 * 16 * 8 * 4  # game frames: updates x rollout x envs x repeat


def test_compare_reads_a_real_runs_eval_csv(trained):
    """`python -m train.finetune.compare` on the folder the trainer wrote: its figures are the run's."""
    trainer, _, before, after = trained

    def compare_json(*args) -> dict:
        proc = subprocess.run([sys.executable, "-m", "train.finetune.compare", trainer.cfg.out, *args, "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    res = compare_json()
    run = res["runs"][os.path.basename(trainer.cfg.out)]
    assert res["track"] == trainer.cfg.eval_tracks[0]
    assert run["evaluations"] == 2 and run["to_frames"] == after["frames"]
    assert run["fell"] == int(before["falls"] > 0) + int(after["falls"] > 0)
    laps = [r["best_lap_s"] for r in (before, after) if r["best_lap_s"]]
    assert run["best_lap_s"] == (min(laps) if laps else None)
    for row in (before, after):  # 4 starts an evaluation: the median of their best laps beside the best
        assert row["median_best_lap_s"] is None or row["median_best_lap_s"] >= row["best_lap_s"]
    run = compare_json("--lap", "median")["runs"][os.path.basename(trainer.cfg.out)]
    medians = [r["median_best_lap_s"] for r in (before, after) if r["median_best_lap_s"]]
    assert run["best_lap_s"] == (min(medians) if medians else None)
    # the first start alone, as a 1-start run (the same seed) would have scored it: its lap and its falls
    for row in (before, after):
        assert row["first_start_lap_s"] is None or row["first_start_lap_s"] >= row["best_lap_s"]
        assert 0 <= row["first_start_falls"] <= row["falls"]
    run = compare_json("--lap", "first")["runs"][os.path.basename(trainer.cfg.out)]
    firsts = [r["first_start_lap_s"] for r in (before, after) if r["first_start_lap_s"]]
    assert run["best_lap_s"] == (min(firsts) if firsts else None)
    assert run["fell"] == sum(r["first_start_falls"] > 0 for r in (before, after))


def test_evaluation_over_several_starts_scores_by_their_median(files, tmp_path):
    """Each eval env is its own start: its best lap is the race a 1-env evaluation from that start's seed
    drives (the expert here), and with several starts best.keras is chosen by their median best lap."""
    from train.finetune.envs import KartSimBackend
    from train.finetune.evaluation import Evaluator, median_best_lap
    from train.finetune.rollout import evaluate

    n, seed = 3, 40
    res = evaluate(KartSimBackend(files["track"], n, 1, seed=0), 1, 30 * 60, None, seed=seed)
    alone = [evaluate(KartSimBackend(files["track"], 1, 1, seed=0), 1, 30 * 60, None, seed=seed + i)
             for i in range(n)]
    assert res["best_laps"] == [a["best_lap_s"] for a in alone] and None not in res["best_laps"]
    assert res["falls_per_env"] == [0] * n and res["best_lap_s"] == min(res["best_laps"])
    assert median_best_lap(res) == float(np.median(res["best_laps"]))
    ev = Evaluator(config(files, tmp_path / "e", eval_envs=n), None, None, None)
    assert ev.score(files["track"], res) == median_best_lap(res)
    one = {"best_lap_s": 30.0, "best_laps": [30.0], "falls": 0}  # one start: its best lap
    assert ev.score(files["track"], one) == 30.0 and median_best_lap(one) == 30.0
    lapless = {"best_lap_s": 30.0, "best_laps": [30.0, None, 31.0], "falls": 0}  # a start without a lap
    assert median_best_lap(lapless) is None and ev.score(files["track"], lapless) is None
    assert ev.score(files["track"], {**res, "falls": 1}) is None


def test_evaluation_describes_its_best_lap_as_train_evaluate_does(files):
    """The fine-tune's evaluation describes its best lap as `train evaluate` does the same race (the
    expert, one env, the same start)."""
    from train.evaluate import evaluate as drive_laps
    from train.finetune.envs import KartSimBackend
    from train.finetune.rollout import evaluate

    res = evaluate(KartSimBackend(files["track"], 1, 1, seed=0), 2, 30 * 90, None, seed=7)
    alone = drive_laps(None, track=files["track"], laps=2, render="model", seed=7, media=False)
    assert [round(t, 3) for t in res["lap_times"]] == alone["lap_times"]
    mine, theirs = res["style"], alone["style"]
    assert mine is not None and mine["lap"] == theirs["lap"]
    for key, value in theirs.items():
        assert mine[key] == pytest.approx(value, abs=1e-3), key


def test_checkpoint_resume_takes_the_same_next_update(files, tmp_path):
    cfg = config(files, tmp_path / "r", envs=4, rollout=8, warmup_frames=32 * 4)  # update 1 warm-up only
    a = Trainer(cfg)
    a.train_update()
    a.save()
    row_a = a.train_update()
    b = Trainer(config(files, tmp_path / "r", envs=4, rollout=8, warmup_frames=32 * 4, resume=True))
    assert b.updates == 1 and b.frames == a.frames - 8 * 4 * 4
    row_b = b.train_update()
    assert row_a["phase"] == row_b["phase"] == "ppo"
    assert row_a["reward_per_s"] == pytest.approx(row_b["reward_per_s"], rel=1e-6)  # same rollout
    for wa, wb in zip(a.net.get_weights()["head"], b.net.get_weights()["head"], strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.net.get_weights()["critic"][0], b.net.get_weights()["critic"][0], rtol=1e-5,
                               atol=1e-7)
    assert not np.allclose(a.net.get_weights()["head"][0], a.net.ref_head.get_weights()[0])  # it learned
    a.close()
    b.close()
    # a checkpoint whose environments do not fit (other --envs) is refused by name, not half-loaded
    with pytest.raises(ValueError, match=r"state\.npz.*--envs"):
        Trainer(config(files, tmp_path / "r", envs=2, rollout=8, warmup_frames=32 * 4, resume=True))


def test_actor_learning_rate_rises_after_warm_up(files, tmp_path):
    """--actor-lr-ramp-frames: the first update after warm-up learns at an actor rate of 0 (the head stays
    the clone, the critic learns on), the next at its share of the ramp; the critic is never ramped."""
    step = 8 * 4 * 4  # rollout x envs x action repeat
    t = Trainer(config(files, tmp_path / "lr", envs=4, rollout=8, warmup_frames=step, actor_lr_ramp_frames=2 * step,
                       frames=100 * step, actor_ema=0.0))
    lr, critic_lr = t.cfg.ppo.lr, t.cfg.ppo.critic_lr
    t.train_update()  # warm-up
    head, critic = t.net.head_weights(), t.net.get_weights()["critic"]
    row = t.train_update()  # frames == warm-up: the ramp's start
    assert row["phase"] == "ppo"
    assert float(t.learner.actor_opt.learning_rate.numpy()) == 0.0
    assert float(t.learner.critic_opt.learning_rate.numpy()) == pytest.approx(critic_lr * (1 - 1 / 100), rel=1e-6)
    for a, b in zip(head, t.net.head_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(critic[0], t.net.get_weights()["critic"][0])
    t.train_update()  # halfway up the ramp
    assert float(t.learner.actor_opt.learning_rate.numpy()) == pytest.approx(lr * (1 - 2 / 100) * 0.5, rel=1e-6)
    assert not all(np.array_equal(a, b) for a, b in zip(head, t.net.head_weights(), strict=True))
    t.train_update()
    assert float(t.learner.actor_opt.learning_rate.numpy()) == pytest.approx(lr * (1 - 3 / 100), rel=1e-6)
    t.close()


def test_averaged_actor_is_evaluated_and_scheduled_std_is_set_not_learned(files, tmp_path):
    """--actor-ema: the running average of the head is what an evaluation drives and best.keras holds,
    the trained head is put back after it, and a resume keeps the average; --final-log-std: log-std
    follows its line from --init-log-std and no gradient moves it."""
    kw = dict(envs=4, rollout=8, frames=6 * 8 * 4 * 4, actor_ema=0.5, init_log_std=-1.0, final_log_std=-2.0)
    t = Trainer(config(files, tmp_path / "e", **kw))
    assert all(w is not t.net.log_std for w in t.net.actor_weights)
    expect = t.net.head_weights()
    for k in range(3):
        want_log_std = -1.0 - 1.0 * (k * 8 * 4 * 4) / t.cfg.frames
        row = t.train_update()
        assert row["std"] == pytest.approx(np.exp(want_log_std), rel=1e-6)  # set by the schedule, not learned
        expect = [0.5 * a + 0.5 * w for a, w in zip(expect, t.net.head_weights(), strict=True)]
    for got, want in zip(t.ema, expect, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    trained = t.net.head_weights()
    assert any(not np.allclose(a, b) for a, b in zip(trained, t.ema, strict=True))  # the average lags
    t.evaluator.keeps = lambda score, rows: True  # keep this evaluation's policy, lap or not
    row = t.run_eval()[0]
    for a, b in zip(t.net.head_weights(), trained, strict=True):  # the trained head is back
        np.testing.assert_array_equal(a, b)
    with t.net.using_head(t.ema):  # the same deterministic laps as the evaluation: it drove the average
        again = t.evaluator._laps(files["track"], t.cfg.action_repeat, t.net)
    assert again["return"] == pytest.approx(row["return"], rel=1e-9)
    raw = t.evaluator._laps(files["track"], t.cfg.action_repeat, t.net)
    assert raw["return"] != pytest.approx(row["return"], rel=1e-9)
    from train.model import load_model

    best = load_model(os.path.join(t.cfg.out, "best.keras"))  # it holds the average, not the trained head
    np.testing.assert_allclose(best.get_layer(t.net.head.layers[1].name).get_weights()[0], t.ema[0], rtol=1e-6)
    t.save()
    r = Trainer(config(files, tmp_path / "e", resume=True, **kw))
    for a, b in zip(r.ema, t.ema, strict=True):
        np.testing.assert_array_equal(a, b)
    t.close()
    r.close()
    # a checkpoint written without an average (an older run) resumes: the average starts from its weights
    t2 = Trainer(config(files, tmp_path / "f", envs=4, rollout=8, actor_ema=0.0))
    t2.train_update()
    t2.save()
    r2 = Trainer(config(files, tmp_path / "f", envs=4, rollout=8, actor_ema=0.5, resume=True))
    for a, b in zip(r2.ema, t2.net.head_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    t2.close()
    r2.close()


def test_actor_ema_start_holds_the_clone_until_its_frame(files, tmp_path):
    """--actor-ema-start: the average stays the clone's head, exactly, through the updates whose rollouts
    start before that frame, while the trained head moves; from it on, each update folds in the latest."""
    step = 8 * 4 * 4  # frames per update: rollout x envs x action repeat
    t = Trainer(config(files, tmp_path / "s", envs=4, rollout=8, actor_ema=0.5, actor_ema_start=2 * step))
    clone = t.net.head_weights()
    for _ in range(2):
        t.train_update()
        for a, b in zip(t.ema, clone, strict=True):
            np.testing.assert_array_equal(a, b)
    moved = t.net.head_weights()
    assert any(not np.allclose(a, b) for a, b in zip(moved, clone, strict=True))  # the actor did learn
    t.train_update()
    for got, a, w in zip(t.ema, clone, t.net.head_weights(), strict=True):
        np.testing.assert_allclose(got, 0.5 * a + 0.5 * w, rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(t.ema, clone, strict=True))
    t.close()
    with pytest.raises(ValueError, match="--actor-ema-start must be >= 0"):
        config(files, tmp_path / "x", actor_ema=0.5, actor_ema_start=-1)
    with pytest.raises(ValueError, match="--actor-ema-start needs --actor-ema"):
        config(files, tmp_path / "x", actor_ema=0.0, actor_ema_start=100)


def test_actor_ema_restart_jumps_from_the_clone_to_the_latest_weights(files, tmp_path):
    """--actor-ema-restart: the average is the clone exactly before --actor-ema-start, the latest weights
    exactly on the first update from it (no share of the clone), and folds as usual after that, also
    when the run is resumed past that frame."""
    step = 8 * 4 * 4  # frames per update: rollout x envs x action repeat
    kw = dict(envs=4, rollout=8, actor_ema=0.5, actor_ema_start=2 * step, actor_ema_restart=True)
    t = Trainer(config(files, tmp_path / "r", **kw))
    clone = t.net.head_weights()
    for _ in range(2):
        t.train_update()
        for a, b in zip(t.ema, clone, strict=True):
            np.testing.assert_array_equal(a, b)
    t.train_update()
    for got, w in zip(t.ema, t.net.head_weights(), strict=True):
        np.testing.assert_array_equal(got, w)
    assert any(not np.allclose(a, b) for a, b in zip(t.ema, clone, strict=True))  # it left the clone
    t.save()
    before = [np.array(a) for a in t.ema]
    t.train_update()
    for got, a, w in zip(t.ema, before, t.net.head_weights(), strict=True):
        np.testing.assert_allclose(got, 0.5 * a + 0.5 * w, rtol=1e-6)
    t.close()
    # resumed after the restart: the next update folds in, it does not restart again
    r = Trainer(config(files, tmp_path / "r", resume=True, **kw))
    for a, b in zip(r.ema, before, strict=True):
        np.testing.assert_array_equal(a, b)
    r.train_update()
    for got, a, w in zip(r.ema, before, r.net.head_weights(), strict=True):
        np.testing.assert_allclose(got, 0.5 * a + 0.5 * w, rtol=1e-6)
    assert any(not np.allclose(g, w) for g, w in zip(r.ema, r.net.head_weights(), strict=True))
    r.close()
    with pytest.raises(ValueError, match="--actor-ema-restart needs --actor-ema-start"):
        config(files, tmp_path / "x", actor_ema=0.5, actor_ema_restart=True)


def test_shaping_schedule_changes_what_the_envs_pay(files, tmp_path):
    """--shaping-final: each update's rollout is paid with the shaping of its frame count (the row says
    which factor), the training envs step with those weights, and progress and fall keep theirs."""
    from envs.kartsim.reward import RewardConfig
    from train.finetune.settings import RewardShaping

    per_update = 8 * 4 * 4
    shaping = RewardShaping(speed=0.5, boost=0.2, drift_abort=-2.0)
    t = Trainer(config(files, tmp_path / "s", envs=4, rollout=8, shaping=shaping, shaping_final=0.0,
                       shaping_decay_start=per_update, shaping_decay_frames=2 * per_update,
                       ppo=PPOConfig(epochs=1, minibatch=64, drift_ent_coef=0.02), drift_ent_final=0.0,
                       drift_ent_decay_frames=2 * per_update))
    factors, bonus = [], []
    for _ in range(4):
        row = t.train_update()
        factors.append(row["shaping"])
        bonus.append(row["drift_ent_weight"])  # --drift-ent-final: the R bonus of the row's frame count
        want = RewardConfig.from_dict(t.cfg.shaping_at(t.frames - per_update).as_dict()).weights()
        np.testing.assert_array_equal(t.env.vec.sim.rw, want)
    assert bonus == pytest.approx([0.02, 0.01, 0.0, 0.0])
    assert factors == pytest.approx([1.0, 1.0, 0.5, 0.0])
    rw = t.env.vec.sim.rw
    assert rw[KP.RW_SPEED] == rw[KP.RW_BOOST] == rw[KP.RW_DRIFT_ABORT] == 0.0
    assert (rw[KP.RW_PROGRESS], rw[KP.RW_FALL]) == (shaping.progress, shaping.fall)
    rates = [h["reward_per_s"] for h in t.history]
    # an evaluation counts its return with the reward the training pays at that moment (none of the shaping)
    t.run_eval()
    np.testing.assert_array_equal(t.evaluator.env(files["track"], t.cfg.action_repeat).vec.sim.rw, rw)
    t.close()
    # without the schedule: the first two updates are the same (full shaping, the same seed), so the
    # third rollout drives the same frames, paid otherwise (half the shaping against all of it)
    u = Trainer(config(files, tmp_path / "u", envs=4, rollout=8, shaping=shaping))
    plain = [u.train_update()["reward_per_s"] for _ in range(3)]
    assert "shaping" not in u.history[-1]
    assert plain[:2] == pytest.approx(rates[:2], rel=1e-9)
    assert plain[2] != pytest.approx(rates[2], rel=1e-6)
    u.close()


def test_cli_json_and_outputs(files, tmp_path, monkeypatch):
    from envs.kartsim.movie import make_movie, store_plan
    from envs.kartsim.planner import PlannerConfig, plan_race

    # the planner's lap of the track, in a plan cache of its own: the summary and the table report it
    monkeypatch.setenv("KARTSIM_PLAN_CACHE", str(tmp_path / "plans"))
    movie = make_movie(plan_race(files["track"], laps=1, config=PlannerConfig(samples=12, rounds=1, horizon=24)),
                       files["track"])
    assert store_plan(movie)[1]
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "train.finetune", "--model", files["model"], "--track", files["track"],
           "--eval-tracks", files["track"], "--frames", "1024", "--envs", "4", "--rollout", "8", "--action-repeat", "4",
           "--warmup-frames", "128", "--eval-every", "2", "--eval-laps", "1", "--eval-max-s", "15",
           "--out", str(out), "--quiet", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("frames", "frames_per_s", "decisions_per_s", "bc_best_lap_s", "rl_best_lap_s",
                "expert_best_lap_s", "lower_bound_s", "falls"):
        assert key in summary
    assert summary["frames"] == 1024
    assert summary["decisions_per_s"] == pytest.approx(summary["frames_per_s"] / 4)
    assert summary["expert_best_lap_s"] > summary["lower_bound_s"] > 0
    assert summary["planned_lap_s"] == pytest.approx(movie["best_lap_s"]) and summary["planned_lap_s"] > 0
    assert summary["vs_planned"] is None or summary["vs_planned"] == pytest.approx(
        summary["rl_best_lap_s"] / summary["planned_lap_s"] - 1.0)
    for name in ("curve.png", "eval.csv", "train.csv", "summary.json", "ckpt/state.npz", "ckpt/actor.keras"):
        assert (out / name).exists(), name
    assert "warmup" in (out / "train.csv").read_text()
    assert "mini_turbos" in (out / "eval.csv").read_text().splitlines()[0]
    assert set(summary["mini_turbos"]) == {"expert", "cloned", "fine_tuned", "laps"}
    assert isinstance(summary["mini_turbos"]["expert"], int)


def test_cli_refuses_a_missing_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "train.finetune", "--model", str(tmp_path / "nope.keras"),
                           "--frames", "10", "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "nope.keras" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "train.finetune", "--actor-ema", "1.0", "--frames", "10",
                           "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--actor-ema must be in [0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_dashboard_in_headless_chromium(trained):
    trainer, dash, _, _ = trained
    stats = json.loads(dash.app.test_client().get("/api/stats").data)
    assert stats["episodes"] == len(trainer.collector.episodes) and len(stats["reward_per_s"]) == 30
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=4000", "--dump-dom", dash.url],
            capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    feeds = re.findall(r'<img id="feed(\d)"[^>]*data-loaded="1"', dom)
    assert sorted(feeds) == [str(i) for i in range(8)], dom[:3000]
    assert re.search(rf'id="episodes">{stats["episodes"]}<', dom)
    assert re.search(r'id="fps">\d+<', dom)
    points = re.search(r'<canvas id="returns"[^>]*data-points="(\d+)"', dom)
    assert points and int(points.group(1)) > 0

