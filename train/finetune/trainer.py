"""The fine-tuning run: warm-up, PPO updates, evaluation, logs, checkpoints, resume.

Schedule (all in game frames, 30 per game second, counted over every env):
``warmup_frames`` of frozen-cloned rollouts train only the critic; then PPO,
with the learning rate annealed linearly to 0 at ``frames`` and the KL weight
toward the cloned policy decaying linearly from ``kl_coef`` to ``kl_final`` over
``kl_decay_frames``. Every ``eval_every`` updates: deterministic laps on the
training track and the held-out track -> ``eval.csv`` + TensorBoard; the best
0-fall lap on the training track keeps ``best.keras``. ``ckpt/state.pkl`` holds
everything a resume needs (weights, optimizer slots, RNGs, counters, history,
and the env state when the backend can give it), so a resumed run takes the
same next update as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from train.finetune import ppo
from train.finetune.agent import ActorCritic
from train.finetune.envs import RewardShaping, VecEnvBackend, make_backend
from train.finetune.rollout import Collector, evaluate


@dataclass
class Config:
    model: str = "data/models/pilotnet.keras"
    track: str = "rainbow"
    eval_tracks: tuple[str, ...] = ("rainbow", "twisty")
    env: str = "kartsim"
    frames: int = 2_000_000
    envs: int = 24
    action_repeat: int = 1  # per frame, as the clone was taught; at 4 the rainbow clone falls off (see README)
    rollout: int = 64  # decisions per env per update
    warmup_frames: int = 60_000
    frame_stack: int = 1
    init_log_std: float = -1.6
    kl_coef: float = 0.2
    kl_final: float = 0.01
    kl_decay_frames: int = 800_000
    scale_rewards: bool = True
    eval_every: int = 40
    eval_laps: int = 2
    eval_max_s: float | None = None  # None: 2.5x the track's lower bound per lap
    eval_envs: int = 1  # the policy and kartsim are deterministic; more envs vary the start jitter
    out: str = "data/finetune/run"
    seed: int = 0
    resume: bool = False
    tensorboard: bool = True
    ppo: ppo.PPOConfig = field(default_factory=ppo.PPOConfig)
    shaping: RewardShaping = field(default_factory=RewardShaping)


class Trainer:
    def __init__(self, cfg: Config, cloned=None, on_step=None, on_eval=None):
        from train.model import load_model

        self.cfg = cfg
        os.makedirs(cfg.out, exist_ok=True)
        self.cloned = cloned if cloned is not None else load_model(cfg.model)
        self.net = ActorCritic(self.cloned, frame_stack=cfg.frame_stack, init_log_std=cfg.init_log_std,
                               seed=cfg.seed)
        self.learner = ppo.Learner(self.net, cfg.ppo, seed=cfg.seed)
        self.env = self._backend(cfg.track, cfg.envs, cfg.action_repeat, cfg.seed)
        self.collector = Collector(self.net, self.env, cfg.ppo.gamma, cfg.seed, cfg.scale_rewards, on_step)
        self.on_eval = on_eval
        self.frames = 0  # training game frames
        self.updates = 0
        self.wall_s = 0.0  # training wall time (acting + stepping + learning), evaluation excluded
        self.history: list[dict] = []  # one row per update
        self.evals: list[dict] = []  # one row per (evaluation, track)
        self.baselines: dict = {}
        self.best_lap = float("inf")
        self._eval_envs: dict[str, VecEnvBackend] = {}
        self._tb = None
        self.stop_requested = False  # set from a signal handler: finish the update, save, summarise
        if cfg.resume:
            self.load()

    def _backend(self, track, n, repeat, seed) -> VecEnvBackend:
        return make_backend(self.cfg.env, track=track, num_envs=n, frames_per_step=repeat, seed=seed,
                            shaping=self.cfg.shaping)

    # ---- schedules ----
    @property
    def warming_up(self) -> bool:
        return self.frames < self.cfg.warmup_frames

    def kl_weight(self) -> float:
        c = self.cfg
        frac = min(max(self.frames - c.warmup_frames, 0) / max(c.kl_decay_frames, 1), 1.0)
        return c.kl_coef + (c.kl_final - c.kl_coef) * frac

    def lr_frac(self) -> float:
        return max(1.0 - self.frames / max(self.cfg.frames, 1), 0.0)

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
        c = self.cfg
        t0 = time.perf_counter()
        actor = not self.warming_up
        buf = self.collector.collect(c.rollout)
        t1 = time.perf_counter()
        batch = self.batch_from(buf)
        stats = self.learner.update(batch, lr_frac=self.lr_frac(), kl_coef=self.kl_weight(), actor=actor)
        t2 = time.perf_counter()
        step_frames = c.rollout * self.env.num_envs * self.env.frames_per_step
        self.frames += step_frames
        self.updates += 1
        self.wall_s += t2 - t0
        recent = self.collector.episodes[-20:]
        row = {
            "update": self.updates, "frames": self.frames, "phase": "ppo" if actor else "warmup",
            "frames_per_s": step_frames / (t2 - t0),
            "decisions_per_s": step_frames / self.env.frames_per_step / (t2 - t0),
            "collect_s": t1 - t0, "learn_s": t2 - t1, **buf["timing"],
            "episodes": len(self.collector.episodes),
            "return_mean": float(np.mean([e["return"] for e in recent])) if recent else None,
            "reward_per_s": buf["reward_per_s"],
            "std": self.net.std(), "kl_weight": self.kl_weight(), "lr": c.ppo.lr * self.lr_frac(), **stats,
        }
        self.history.append(row)
        self._log_scalars("train", row)
        return row

    # ---- evaluation ----
    def _eval_env(self, track: str, repeat: int) -> VecEnvBackend:
        key = f"{track}@{repeat}"
        if key not in self._eval_envs:
            self._eval_envs[key] = self._backend(track, self.cfg.eval_envs, repeat, self.cfg.seed + 777)
        return self._eval_envs[key]

    def _lower_bound(self, track: str) -> float | None:
        """kartsim's lap-time bound; other backends (the real game) have none."""
        if self.cfg.env != "kartsim":
            return None
        from envs import kartsim

        return float(kartsim.lower_bound_s(track))

    def _max_frames(self, track: str) -> int:
        """Evaluation cap: --eval-max-s, or by default 2.5x the lower bound per lap (+10 s to start);
        without a bound (the real game) 3 minutes per lap."""
        if self.cfg.eval_max_s:
            return int(self.cfg.eval_max_s * 30)
        bound = self._lower_bound(track)
        per_lap = 180.0 if bound is None else 2.5 * bound
        return int((10.0 + self.cfg.eval_laps * per_lap) * 30)

    def run_baselines(self) -> dict:
        """Expert (per-frame, as scripted) and cloned (this actor before any update) on every eval track."""
        c = self.cfg
        if self.baselines:
            return self.baselines
        for track in c.eval_tracks:
            env = self._eval_env(track, 1)
            expert = evaluate(env, c.eval_laps, self._max_frames(track)) if hasattr(env, "expert_actions") else {}
            cloned = evaluate(self._eval_env(track, c.action_repeat), c.eval_laps, self._max_frames(track), self.net)
            self.baselines[track] = {"expert": expert, "cloned": cloned,
                                     "lower_bound_s": self._lower_bound(track)}
        return self.baselines

    def run_eval(self) -> list[dict]:
        c = self.cfg
        rows = []
        for track in c.eval_tracks:
            res = evaluate(self._eval_env(track, c.action_repeat), c.eval_laps, self._max_frames(track), self.net)
            row = {"update": self.updates, "frames": self.frames, "track": track,
                   "best_lap_s": res["best_lap_s"], "mean_lap_s": res["mean_lap_s"],
                   "laps": res["laps"], "falls": res["falls"], "mini_turbos": res["mini_turbos"],
                   "return": res["return"]}
            rows.append(row)
            self._log_scalars(f"eval_{track}", row)
            if track == c.track and res["best_lap_s"] and res["falls"] == 0 and res["best_lap_s"] < self.best_lap:
                self.best_lap = res["best_lap_s"]
                self._export(os.path.join(c.out, "best.keras"))
        self.evals += rows
        self._write_csv("eval.csv", self.evals)
        if self.on_eval:
            self.on_eval(rows, self)
        return rows

    # ---- logs ----
    def _log_scalars(self, prefix: str, row: dict) -> None:
        if not self.cfg.tensorboard:
            return
        import tensorflow as tf

        if self._tb is None:
            self._tb = tf.summary.create_file_writer(os.path.join(self.cfg.out, "tb"))
        with self._tb.as_default(step=self.frames):
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("update", "frames"):
                    tf.summary.scalar(f"{prefix}/{k}", v)
        self._tb.flush()

    def _write_csv(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(os.path.join(self.cfg.out, name), "w", newline="") as fh:
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            w.writerows(rows)

    def _export(self, path: str) -> None:
        if self.net.frame_stack == 1:
            self.net.export_pilotnet(path)
        else:  # stacked actors do not fit drive's single-frame PilotNet: keep their weights
            with open(path.replace(".keras", ".weights.pkl"), "wb") as fh:
                pickle.dump(self.net.get_weights(), fh)

    # ---- checkpoint / resume ----
    def state_path(self) -> str:
        return os.path.join(self.cfg.out, "ckpt", "state.pkl")

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.state_path()), exist_ok=True)
        env_state = self.env.get_state() if hasattr(self.env, "get_state") else None
        state = {"config": asdict(self.cfg), "learner": self.learner.get_state(),
                 "collector": self.collector.get_state(), "env": env_state, "frames": self.frames,
                 "updates": self.updates, "wall_s": self.wall_s, "history": self.history,
                 "evals": self.evals, "baselines": self.baselines, "best_lap": self.best_lap}
        tmp = self.state_path() + ".tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh)
        os.replace(tmp, self.state_path())  # a crash mid-write never leaves a torn checkpoint
        self._export(os.path.join(self.cfg.out, "ckpt", "actor.keras"))
        self._write_csv("train.csv", self.history)

    def load(self) -> None:
        path = self.state_path()
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume: no checkpoint at {path}")
        with open(path, "rb") as fh:
            state = pickle.load(fh)  # our own file, written by save()
        self.learner.set_state(state["learner"])
        if state["env"] is not None and hasattr(self.env, "set_state"):
            try:
                self.env.set_state(state["env"])
            except (KeyError, ValueError) as exc:  # another --envs/--track, or an older kartsim's state
                raise ValueError(f"--resume: the environment state in {path} does not fit this run's "
                                 f"environments ({exc!r}); was it written with other --envs, --track or "
                                 "an older kartsim?") from exc
        self.collector.set_state(state["collector"])
        for key in ("frames", "updates", "wall_s", "history", "evals", "baselines", "best_lap"):
            setattr(self, key, state[key])

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
            "decisions_per_s": self.frames / self.env.frames_per_step / self.wall_s if self.wall_s else None,
            "bc_best_lap_s": bc,
            "rl_best_lap_s": min(rl) if rl else None,
            "expert_best_lap_s": (base.get("expert") or {}).get("best_lap_s"),
            "lower_bound_s": base.get("lower_bound_s"),
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
            "updates": self.updates, "envs": self.env.num_envs, "action_repeat": self.env.frames_per_step,
            "track": c.track, "held_out": {e["track"]: e["best_lap_s"] for e in held[-len(c.eval_tracks):]},
            "held_out_cloned": {t: (b.get("cloned") or {}).get("best_lap_s") for t, b in self.baselines.items()
                                if t != c.track},
            "evals": len(train_evals), "out": c.out,
        }

    def close(self) -> None:
        self.env.close()
        for env in self._eval_envs.values():
            env.close()


def write_summary(path: str, summary: dict) -> None:
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=2)
