"""The fine-tuning run: warm-up, PPO updates, evaluation, logs, checkpoints, resume.

Schedule (all in game frames, ``envs.kartsim.FPS`` per game second, counted over every env):
``warmup_frames`` of frozen-cloned rollouts train only the critic; then PPO,
with the learning rate annealed linearly to 0 at ``frames`` and the KL weight
toward the cloned policy decaying linearly from ``kl_coef`` to ``kl_final`` over
``kl_decay_frames``; with ``shaping_final`` the reward's shaping terms decay
linearly too (``Config.shaping_at``), and with ``drift_ent_final`` the R entropy bonus
(``Config.drift_ent_weight``). Every ``eval_every`` updates: deterministic laps on the
training track and the held-out track -> ``eval.csv`` + TensorBoard; the best
0-fall lap on the training track keeps ``best.keras`` (``evaluation.py``).
``ckpt/state.npz`` holds everything a resume needs (weights, optimizer slots,
RNGs, counters, history, and the env state when the backend can give it) as
npz + JSON, never a pickle (``checkpoint.py``), so a resumed run takes the
same next update as an uninterrupted one. A fresh run refuses an ``--out``
that holds another run's checkpoint or best model.

The steps of a run, each a method: ``build_env`` (the backend, on Ray with
``--ray``), ``train_update`` (collect -> ``batch_from`` -> learn -> ``record``),
``evaluator.run``, ``save``/``load``, ``summary``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np

from common import atomic
from envs.vecenv import VecEnvBackend
from train.finetune import checkpoint as ck
from train.finetune import ppo
from train.finetune.agent import ActorCritic
from train.finetune.envs import make_backend
from train.finetune.evaluation import Evaluator
from train.finetune.logs import RunLog
from train.finetune.rollout import Collector
from train.finetune.settings import Config, ramp

__all__ = ["Config", "Trainer", "build_env", "write_summary"]


def build_env(cfg: Config, track: str, n: int, repeat: int, seed: int, *, ray: bool = False) -> VecEnvBackend:
    """``cfg.env`` for ``n`` envs; as Ray actors when ``ray`` and ``cfg.ray`` (the training envs)."""
    options = cfg.env_options()
    if options and cfg.env == "kartsim":
        raise ValueError(f"--{'/--'.join(options)} are for the emulator envs (--env mk64 / mupen-test), "
                         "not kartsim")
    kw = dict(track=track, num_envs=n, action_repeat=repeat, seed=seed, shaping=cfg.shaping, **options)
    if ray and cfg.ray:
        from train.finetune.ray_backend import RayBackend

        return RayBackend(inner=cfg.env, address=cfg.ray, actors=cfg.ray_actors, resource=cfg.ray_resource,
                          cpus_per_actor=cfg.ray_cpus_per_actor, **kw)
    return make_backend(cfg.env, **kw)


class Trainer:
    def __init__(self, cfg: Config, cloned=None, on_step=None, on_eval=None):
        from train.model import load_model

        self.cfg = cfg
        ck.check_out(cfg.out, cfg.resume)  # never replace another run's checkpoint or best model
        self.cloned = cloned if cloned is not None else load_model(cfg.model)
        os.makedirs(cfg.out, exist_ok=True)
        self.net = ActorCritic(self.cloned, frame_stack=cfg.frame_stack, init_log_std=cfg.init_log_std,
                               seed=cfg.seed, learn_std=cfg.final_log_std is None, widen=cfg.widen)
        self.learner = ppo.Learner(self.net, cfg.ppo, seed=cfg.seed)
        self.env = build_env(cfg, cfg.track, cfg.envs, cfg.action_repeat, cfg.seed, ray=True)
        self.collector = Collector(self.net, self.env, cfg.ppo.gamma, cfg.seed, cfg.scale_rewards, on_step)
        self.log = RunLog(cfg.out, cfg.tensorboard)
        self.evaluator = Evaluator(cfg, self.net, lambda *a: build_env(cfg, *a), self.log, on_eval)
        self.frames = 0  # training game frames
        self.updates = 0
        self.wall_s = 0.0  # training wall time (acting + stepping + learning), evaluation excluded
        self.history: list[dict] = []  # one row per update
        # --actor-ema: the running average of the actor head, the policy evaluated and exported
        self.ema = self.net.head_weights() if cfg.actor_ema else None
        self.stop_requested = False  # set from a signal handler: finish the update, save, summarise
        if cfg.resume:
            self.load()

    # evaluation results live in the evaluator (plots and the dashboard read them here)
    evals = property(lambda self: self.evaluator.evals)
    baselines = property(lambda self: self.evaluator.baselines)
    best_lap = property(lambda self: self.evaluator.best_lap)

    # ---- schedules ----
    @property
    def warming_up(self) -> bool:
        return self.frames < self.cfg.warmup_frames

    def kl_weight(self) -> float:
        c = self.cfg
        return c.kl_coef + (c.kl_final - c.kl_coef) * ramp(self.frames, c.warmup_frames, c.kl_decay_frames)

    def lr_frac(self) -> float:
        return max(1.0 - self.frames / max(self.cfg.frames, 1), 0.0)

    def actor_lr_frac(self) -> float:
        """The actor's share of --lr now: the linear anneal, times --actor-lr-ramp-frames' rise after warm-up."""
        c = self.cfg
        rise = ramp(self.frames, c.warmup_frames, c.actor_lr_ramp_frames) if c.actor_lr_ramp_frames > 0 else 1.0
        return self.lr_frac() * rise

    def log_std_now(self) -> float | None:
        """--final-log-std: the steering log-std for the next rollout, linear from --init-log-std at the end
        of warm-up to --final-log-std at --frames; None when log-std is learned."""
        c = self.cfg
        if c.final_log_std is None:
            return None
        frac = ramp(self.frames, c.warmup_frames, c.frames - c.warmup_frames)
        return c.init_log_std + (c.final_log_std - c.init_log_std) * frac

    def average_actor(self) -> None:
        """Fold the actor head's latest weights into the running average (--actor-ema)."""
        d = self.cfg.actor_ema
        self.ema = [d * a + (1.0 - d) * w for a, w in zip(self.ema, self.net.head_weights(), strict=True)]

    @property
    def update_frames(self) -> int:
        """Game frames one update's rollout drives: --rollout decisions x envs x action repeat."""
        return self.cfg.rollout * self.env.num_envs * self.env.action_repeat

    def first_fold(self) -> bool:
        """Whether this update (its rollout started at self.frames) is the first to fold into the average:
        the one before it started before --actor-ema-start or in warm-up (frames alone say it, on resume too)."""
        c = self.cfg
        return self.frames - self.update_frames < max(c.actor_ema_start, c.warmup_frames)

    # ---- one update ----
    def batch_from(self, buf: dict) -> dict:
        """GAE over the rollout (truncations bootstrapped from the last frame's value), flattened."""
        gamma = self.cfg.ppo.gamma
        values = buf["value"]
        next_values = np.concatenate([values[1:], buf["last_value"][None]], axis=0)
        rewards = buf["reward"] + gamma * next_values * buf["trunc"]
        adv, ret = ppo.gae(rewards, values, buf["done"], buf["last_value"], gamma, self.cfg.ppo.lam,
                           valid=buf["mask"])
        flat = {k: buf[k].reshape(-1, *buf[k].shape[2:]) for k in ("feats", "x", "buttons", "logp", "ref_z", "mask")}
        flat["adv"], flat["ret"] = adv.reshape(-1), ret.reshape(-1)
        return flat

    def train_update(self) -> dict:
        """Collect one rollout and learn from it; returns the update's log row."""
        t0 = time.perf_counter()
        actor = not self.warming_up
        log_std = self.log_std_now()
        if log_std is not None:
            self.net.log_std.assign([log_std])
        if self.cfg.shaping_final is not None:
            self.env.set_shaping(self.cfg.shaping_at(self.frames))
        buf = self.collector.collect(self.cfg.rollout)
        t1 = time.perf_counter()
        stats = self.learner.update(self.batch_from(buf), lr_frac=self.lr_frac(), actor_lr_frac=self.actor_lr_frac(),
                                    kl_coef=self.kl_weight(),
                                    drift_ent_coef=self.cfg.drift_ent_weight(self.frames), actor=actor)
        if actor and self.ema is not None and self.frames >= self.cfg.actor_ema_start:
            if self.cfg.actor_ema_restart and self.first_fold():
                self.ema = self.net.head_weights()  # --actor-ema-restart: the average starts afresh here
            else:
                self.average_actor()
        return self.record(buf, stats, actor, t0, t1, time.perf_counter())

    def record(self, buf: dict, stats: dict, actor: bool, t0: float, t1: float, t2: float) -> dict:
        """Count the update's frames and time, and log its row (history, TensorBoard)."""
        c = self.cfg
        step_frames = self.update_frames
        self.frames += step_frames
        self.updates += 1
        self.wall_s += t2 - t0
        recent = self.collector.episodes[-20:]
        row = {
            "update": self.updates, "frames": self.frames, "phase": "ppo" if actor else "warmup",
            "frames_per_s": step_frames / (t2 - t0),
            "decisions_per_s": step_frames / self.env.action_repeat / (t2 - t0),
            "collect_s": t1 - t0, "learn_s": t2 - t1, **buf["timing"],
            "episodes": len(self.collector.episodes),
            "return_mean": float(np.mean([e["return"] for e in recent])) if recent else None,
            "reward_per_s": buf["reward_per_s"],
            "std": self.net.std(), "kl_weight": self.kl_weight(), "lr": c.ppo.lr * self.actor_lr_frac(), **stats,
        }
        if c.drift_ent_final is not None:  # the R entropy bonus this update learned with
            row["drift_ent_weight"] = c.drift_ent_weight(self.frames - step_frames)
        if c.shaping_final is not None:  # the factor this update's rollout was rewarded with
            row["shaping"] = c.shaping_factor(self.frames - step_frames)
        self.history.append(row)
        self.log.scalars("train", row, self.frames)
        return row

    # ---- evaluation ----
    def run_baselines(self) -> dict:
        return self.evaluator.run_baselines()

    def run_eval(self) -> list[dict]:
        """One evaluation of the policy: the averaged actor with --actor-ema, else the latest."""
        with self.net.using_head(self.ema):
            return self.evaluator.run(self.updates, self.frames, self)

    # ---- checkpoint / resume ----
    def state_path(self) -> str:
        return ck.state_path(self.cfg.out)

    def save(self) -> None:
        """``ckpt/state.npz`` (atomic), ``ckpt/actor.keras`` and ``train.csv``."""
        state = {"config": asdict(self.cfg), "learner": self.learner.get_state(),
                 "collector": self.collector.get_state(), "env": self.env.get_state(), "frames": self.frames,
                 "updates": self.updates, "wall_s": self.wall_s, "history": self.history,
                 "evaluation": self.evaluator.get_state(), "ema": self.ema}
        ck.save_state(self.state_path(), state)
        ck.export_actor(self.net, os.path.join(self.cfg.out, "ckpt", "actor.keras"))
        self.log.table("train.csv", self.history)

    def load(self) -> None:
        path = self.state_path()
        state = ck.load_state(path)  # npz + JSON: nothing in it can run code
        try:
            self.learner.set_state(state["learner"])
            if state["env"] is not None:
                self.env.set_state(state["env"])
            self.collector.set_state(state["collector"])
            self.evaluator.set_state(state["evaluation"])
            self.frames, self.updates, self.wall_s = state["frames"], state["updates"], state["wall_s"]
            self.history = state["history"]
            if self.ema is not None:
                if state.get("ema") is None:  # written without --actor-ema: the average starts here
                    print(f"--resume: {path} holds no averaged actor; the average (--actor-ema "
                          f"{self.cfg.actor_ema}) starts from its weights", file=sys.stderr)
                    self.ema = self.net.head_weights()
                else:
                    self.ema = [np.asarray(w) for w in state["ema"]]
        except (KeyError, ValueError, TypeError, NotImplementedError) as exc:
            # another --envs/--track/--env, or an older kartsim's state
            raise ValueError(f"--resume: the state in {path} does not fit this run ({exc!r}); was it written "
                             "with other --envs, --env, --track, --widen or an older kartsim?") from exc

    # ---- the whole run ----
    def run(self, progress: bool = True, save_every: int = 10) -> dict:
        from tqdm import tqdm

        c = self.cfg
        self.run_baselines()
        bar = tqdm(total=c.frames, initial=self.frames, unit="frame", unit_scale=True, disable=not progress)
        while self.frames < c.frames and not self.stop_requested:
            row = self.train_update()
            bar.update(row["frames"] - bar.n)
            bar.set_postfix(phase=row["phase"], fps=f"{row['frames_per_s']:.0f}", best=f"{self.best_lap:.2f}")
            if self.updates % c.eval_every == 0 or self.frames >= c.frames:
                self.run_eval()
            if self.updates % save_every == 0 or self.frames >= c.frames:
                self.save()
        if self.stop_requested and self.updates:
            self.save()  # stopped early (SIGINT/SIGTERM): keep everything up to the last update
        bar.close()
        return self.summary()

    def summary(self) -> dict:
        c = self.cfg
        base = self.baselines.get(c.track, {})
        train_evals = [e for e in self.evals if e["track"] == c.track]
        held = [e for e in self.evals if e["track"] != c.track]
        rl = [e["best_lap_s"] for e in train_evals if e["best_lap_s"] and e["falls"] == 0]
        bc = (base.get("cloned") or {}).get("best_lap_s")
        after = [e for e in train_evals if e["frames"] > c.warmup_frames]
        # forgetting check: an eval with no completed lap counts as infinitely slow
        worst = max((e["best_lap_s"] or float("inf")) for e in after) if after else None
        best_eval = min((e for e in train_evals if e["best_lap_s"] and e["falls"] == 0),
                        key=lambda e: e["best_lap_s"], default={})
        return {
            "frames": self.frames,
            "frames_per_s": self.frames / self.wall_s if self.wall_s else None,
            "decisions_per_s": self.frames / self.env.action_repeat / self.wall_s if self.wall_s else None,
            "bc_best_lap_s": bc,
            "rl_best_lap_s": min(rl) if rl else None,
            "expert_best_lap_s": (base.get("expert") or {}).get("best_lap_s"),
            "lower_bound_s": base.get("lower_bound_s"),
            # the planner's cached best lap (None: never planned) and how far the best fine-tuned lap is above it
            "planned_lap_s": base.get("planned_lap_s"),
            "vs_planned": (min(rl) / base["planned_lap_s"] - 1.0) if rl and base.get("planned_lap_s") else None,
            "falls": train_evals[-1]["falls"] if train_evals else None,
            "best_model_falls": 0 if rl else None,  # best.keras is kept only from 0-fall evaluations
            "evals_with_falls": sum(1 for e in train_evals if e["falls"]),
            "worst_eval_after_warmup_s": worst if worst != float("inf") else "no lap",
            "worst_vs_cloned": (worst / bc - 1.0) if (worst and bc and worst != float("inf")) else None,
            # drift mini-turbos fired over the evaluation laps: where the time is won or lost
            "mini_turbos": {"expert": (base.get("expert") or {}).get("mini_turbos"),
                            "cloned": (base.get("cloned") or {}).get("mini_turbos"),
                            "fine_tuned": best_eval.get("mini_turbos"), "laps": c.eval_laps},
            "wall_s": self.wall_s,
            "updates": self.updates, "envs": self.env.num_envs, "action_repeat": self.env.action_repeat,
            # the policy evaluated and exported: the averaged actor (--actor-ema) or the latest weights
            "actor_ema": c.actor_ema, "final_log_std": c.final_log_std,
            "shaping_final": c.shaping_final, "shaping_factor_now": c.shaping_factor(self.frames),
            "track": c.track, "held_out": {e["track"]: e["best_lap_s"] for e in held[-len(c.eval_tracks):]},
            "held_out_cloned": {t: (b.get("cloned") or {}).get("best_lap_s") for t, b in self.baselines.items()
                                if t != c.track},
            "evals": len(train_evals), "out": c.out,
            # what best.keras was chosen on, and its score there (a set of tracks: the mean lap)
            "selected_on": c.select_track if c.eval_tracks else None,
            "best_score_s": self.best_lap if self.best_lap != float("inf") else None,
            **({"env_stats": self.env.stats()} if self.env.stats() else {}),
        }

    def close(self) -> None:
        self.env.close()
        self.evaluator.close()


def write_summary(path: str, summary: dict) -> None:
    atomic.write_text(path, json.dumps(summary, indent=2))
