"""Acting: collect a (T, N) rollout from a VecEnvBackend, and deterministic evaluation laps."""

from __future__ import annotations

import time

import numpy as np

from common import state as kstate
from envs.vecenv import VecEnvBackend
from train.finetune import agent as ag


class FeatureStack:
    """The last k frames' trunk features per env (the temporal option); k=1 is a pass-through."""

    def __init__(self, num_envs: int, k: int, dim: int):
        self.k, self.buf = k, np.zeros((num_envs, k, dim), np.float32)
        self.fresh = np.ones(num_envs, bool)  # next push starts an episode: fill all k slots

    def push(self, feats: np.ndarray) -> np.ndarray:
        if self.k == 1:
            self.buf[:, 0] = feats
        else:
            self.buf[:, 1:] = self.buf[:, :-1].copy()
            self.buf[:, 0] = feats
            self.buf[self.fresh] = feats[self.fresh, None, :]
        self.fresh[:] = False
        return self.buf.reshape(len(feats), -1).copy()


class RewardScaler:
    """Divide rewards by the running std of the discounted return (keeps value targets ~unit)."""

    def __init__(self, num_envs: int, gamma: float):
        self.gamma, self.ret = gamma, np.zeros(num_envs)
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + reward
        b_mean, b_var, b_n = self.ret.mean(), self.ret.var(), len(self.ret)
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean += delta * b_n / tot
        self.var = (self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot) / tot
        self.count = tot
        self.ret[done] = 0.0
        return (reward / np.sqrt(self.var + 1e-8)).astype(np.float32)

    def get_state(self):
        return {"ret": self.ret.copy(), "count": self.count, "mean": self.mean, "var": self.var}

    def set_state(self, s):
        self.ret, self.count, self.mean, self.var = s["ret"].copy(), s["count"], s["mean"], s["var"]


class Collector:
    """Steps the training envs with the stochastic policy; keeps episode statistics."""

    def __init__(self, net: ag.ActorCritic, env: VecEnvBackend, gamma: float, seed: int,
                 scale_rewards: bool = True, on_step=None):
        self.net, self.env, self.gamma = net, env, gamma
        self.rng = np.random.default_rng(seed)
        n = env.num_envs
        if net.needs_state and not env.has_state:
            raise kstate.StateMismatch(
                f"the model takes kart state features beside each frame (common.state) and the "
                f"{type(env).__name__} backend gives none; kartsim does (--env kartsim, in this process or on --ray)")
        self.obs = env.reset(seed=seed)
        self.state = env.state() if net.needs_state else None  # the obs' kart state rows (state models)
        self.stack = FeatureStack(n, net.frame_stack, net.feature_dim)
        self.scaler = RewardScaler(n, gamma) if scale_rewards else None
        self.valid = np.ones(n, bool)  # False: this step only resets the env (next-step autoreset)
        self.ep_return, self.ep_len = np.zeros(n), np.zeros(n, int)
        self.episodes: list[dict] = []  # finished episodes (return, length, laps, falls)
        self.laps: list[float] = []  # lap times (s) completed while training
        self.on_step = on_step  # dashboard hook: on_step(obs, collector)

    def collect(self, steps: int) -> dict:
        """Roll ``steps`` decisions in every env; returns the flat training batch + stats."""
        net, env, n = self.net, self.env, self.env.num_envs
        dims = net.feature_dim * net.frame_stack
        buf = {
            "feats": np.zeros((steps, n, dims), np.float32), "x": np.zeros((steps, n), np.float32),
            "buttons": np.zeros((steps, n, 3), np.float32), "logp": np.zeros((steps, n), np.float32),
            "reward": np.zeros((steps, n), np.float32), "trunc": np.zeros((steps, n), bool),
            "done": np.zeros((steps, n), bool), "mask": np.zeros((steps, n), np.float32),
        }
        t_act = t_env = raw_sum = 0.0
        n_valid = 0
        for t in range(steps):
            t0 = time.perf_counter()
            # one graph call per step: trunk, actor head and sampling (value and reference: below)
            if net.frame_stack == 1:
                feats, actions, x, buttons, logp = net.sample_frames(self.obs, self.rng, self.state)
                stacked = self.stack.push(feats)
            else:
                stacked = self.stack.push(net.features(self.obs, self.state))
                actions, x, buttons, logp = net.sample_features(stacked, self.rng)
            t1 = time.perf_counter()
            res = env.step(actions)
            t_env += time.perf_counter() - t1
            t_act += t1 - t0
            done = res.terminated | res.truncated
            reward = np.where(self.valid, res.reward, 0.0)
            self.ep_return += reward
            raw_sum, n_valid = raw_sum + float(reward.sum()), n_valid + int(self.valid.sum())
            self.ep_len += self.valid
            self.laps += [sec for _, sec in res.info.get("new_laps", [])]
            for i in np.flatnonzero(done):
                self.episodes.append({"return": float(self.ep_return[i]), "length": int(self.ep_len[i]),
                                      "laps": int(res.info["lap"][i]), "falls": int(res.info["falls"][i])})
                self.ep_return[i], self.ep_len[i] = 0.0, 0
            scaled = self.scaler(reward, done) if self.scaler else reward.astype(np.float32)
            for key, val in (("feats", stacked), ("x", x), ("buttons", buttons), ("logp", logp), ("reward", scaled),
                             ("trunc", res.truncated & ~res.terminated), ("done", done),
                             ("mask", self.valid)):
                buf[key][t] = val
            # a reset step's obs is the old episode's last frame; the step after starts the new one
            self.stack.fresh |= ~self.valid
            self.valid = ~done
            self.obs = res.obs
            if net.needs_state:
                self.state = env.state()
            if self.on_step is not None:
                self.on_step(res.obs, self)
        # The critic and the frozen reference head do not change during the rollout: one call over
        # every step's features (and the bootstrap frame's) instead of one per step.
        t0 = time.perf_counter()
        ref_z, value = net.ref_and_value(np.concatenate([buf["feats"].reshape(steps * n, dims), self.stack_peek()]))
        buf["ref_z"], buf["value"] = ref_z[: steps * n].reshape(steps, n, -1), value[: steps * n].reshape(steps, n)
        buf["last_value"] = value[steps * n :]
        t_act += time.perf_counter() - t0
        buf["timing"] = {"act_s": t_act, "env_s": t_env}
        # raw (unscaled) reward per game second: progress is 100 per lap, so 100 / lap time when clean
        game_s = max(n_valid, 1) * env.action_repeat / env.fps
        buf["reward_per_s"] = raw_sum / game_s
        return buf

    def stack_peek(self) -> np.ndarray:
        """Stacked features of the current obs without advancing the stack."""
        feats = self.net.features(self.obs, self.state)
        k = self.stack.k
        if k == 1:
            return feats
        buf = np.concatenate([feats[:, None], self.stack.buf[:, :-1]], axis=1)
        buf[self.stack.fresh] = feats[self.stack.fresh, None, :]
        return buf.reshape(len(feats), -1)

    def get_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "obs": self.obs.copy(),
                **({"state": self.state.copy()} if self.state is not None else {}), "stack": self.stack.buf.copy(),
                "fresh": self.stack.fresh.copy(), "valid": self.valid.copy(),
                "ep_return": self.ep_return.copy(), "ep_len": self.ep_len.copy(),
                "episodes": list(self.episodes), "laps": list(self.laps),
                "scaler": self.scaler.get_state() if self.scaler else None}

    def set_state(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]
        self.obs, self.valid = s["obs"].copy(), s["valid"].copy()
        if "state" in s:
            self.state = s["state"].copy()
        self.stack.buf, self.stack.fresh = s["stack"].copy(), s["fresh"].copy()
        self.ep_return, self.ep_len = s["ep_return"].copy(), s["ep_len"].copy()
        self.episodes, self.laps = list(s["episodes"]), list(s["laps"])
        if self.scaler and s["scaler"]:
            self.scaler.set_state(s["scaler"])


def _best_style(styles: list | None, per_env: list[list[float]]) -> dict | None:
    if styles is None or not any(per_env):
        return None
    i = min((i for i, t in enumerate(per_env) if t), key=lambda i: min(per_env[i]))
    return styles[i].best(per_env[i])


def evaluate(env: VecEnvBackend, laps: int, max_frames: int, net: ag.ActorCritic | None = None,
             seed: int = 12345) -> dict:
    """Deterministic laps: the actor's mean action (``net``) or the scripted expert (``net=None``).

    Runs until every env has completed ``laps`` laps, its episode ended, or
    ``max_frames`` game frames passed. Returns best/mean lap (s), lap times, falls,
    mini-turbos fired (None where the backend does not count them), frames and
    the mean return (reward summed until then); per env (each its own start),
    its best lap and its falls.
    """
    obs = env.reset(seed=seed)
    styles = env.watch_laps()  # how each env's laps were driven, where the backend can say
    n = env.num_envs
    stack = FeatureStack(n, net.frame_stack, net.feature_dim) if net is not None else None
    lap_times: list[float] = []
    per_env: list[list[float]] = [[] for _ in range(n)]
    falls, ret, mts = np.zeros(n), np.zeros(n), np.zeros(n)
    counts_mts = False
    finished = np.zeros(n, bool)
    frames = 0
    while not finished.all() and frames < max_frames:
        if net is None:
            actions = env.expert_actions()
        else:
            z, _, _ = net.heads(stack.push(net.features(obs, env.state() if net.needs_state else None)))
            actions = net.act(z, None)[0]
        res = env.step(actions)
        frames += env.action_repeat
        live = ~finished
        ret += np.where(live, res.reward, 0.0)
        for i, sec in res.info.get("new_laps", []):
            if live[i]:
                lap_times.append(sec)
                per_env[i].append(sec)
        falls = np.where(live, res.info["falls"], falls)
        if "mini_turbos" in res.info:
            counts_mts = True
            mts = np.where(live, res.info["mini_turbos"], mts)
        finished |= (res.terminated | res.truncated) | (res.info["lap"] >= laps)
        obs = res.obs
    return {
        "best_lap_s": min(lap_times) if lap_times else None,
        "mean_lap_s": float(np.mean(lap_times)) if lap_times else None,
        "lap_times": lap_times, "laps": len(lap_times), "falls": int(falls.sum()),
        "best_laps": [min(t) if t else None for t in per_env],  # each env's (start's) best lap
        # the style of the best lap of all (LapStyle.best of its env); None without a lap or a watcher
        "style": _best_style(styles, per_env),
        "falls_per_env": falls.astype(int).tolist(),
        "mini_turbos": int(mts.sum()) if counts_mts else None, "frames": frames,
        "return": float(ret.mean()),
    }
