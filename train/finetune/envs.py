"""The environment side of fine-tuning: the backend table, the reward shaping, and kartsim.

The learner talks only to a ``envs.vecenv.VecEnvBackend`` (the interface, with
its semantics, lives in ``envs/vecenv.py`` so that backends under ``envs/``
never import ``train/``). ``BACKENDS`` maps each ``--env`` name to the
``module:factory`` that builds it; the module is imported only when that
backend is asked for. ``make_backend`` also takes a ``module:factory`` string
directly, for a backend outside this table. Every factory takes
``track=, num_envs=, action_repeat=, seed=, shaping=`` and its own keywords
(the emulator's ``rom=``, ``state=``).
"""

from __future__ import annotations

import importlib

import numpy as np

from common import frames as fr
from envs.vecenv import StepResult, VecEnvBackend
from train.finetune.settings import RewardShaping, track_set

__all__ = ["BACKENDS", "EMULATOR_BACKENDS", "KartSimBackend", "RewardShaping", "StepResult", "VecEnvBackend",
           "backend_names", "make_backend"]

BACKENDS: dict[str, str] = {
    "kartsim": "train.finetune.envs:KartSimBackend",
    "mk64": "envs.mupen.backend:make_mk64",
    "mupen-test": "envs.mupen.backend:make_test_rom",
}
EMULATOR_BACKENDS = frozenset({"mk64", "mupen-test"})  # run mupen64plus: on Ray they need the emulator resource


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def backend_factory(name: str):
    """The factory for ``--env NAME`` (a ``BACKENDS`` name or ``module:factory``), imported now."""
    target = BACKENDS.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown env backend {name!r}; known: {', '.join(backend_names())} "
                         "(or module:factory)")
    mod, attr = target.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"env backend {name!r}: cannot load {target} ({exc})") from exc


def make_backend(name: str, **kw) -> VecEnvBackend:
    """Build ``--env NAME`` with the factory keywords (see the module doc)."""
    return backend_factory(name)(**kw)


def _info_array(info: dict, key: str, n: int, default=0.0) -> np.ndarray:
    """A per-env array from a gymnasium vector info dict (missing -> default)."""
    val = info.get(key)
    if val is None:
        return np.full(n, default, np.float64)
    return np.asarray(val, np.float64).reshape(n)


class KartSimBackend(VecEnvBackend):
    """``envs.kartsim.VecKartSim`` at 66x200 behind ``VecEnvBackend``, with action repeat.
    ``track`` may be a distribution, ``gen:FIRST-END[:STYLE]``: every env then drives its own
    generated track and draws a new one from those seeds at each reset; or a set ``T1+T2+...``:
    one env per track, each keeping its own.

    The repeat runs in this class (one vector step per game frame), so an env
    can end during a repeated step: its reward stops there, its final frame is
    returned with the ending flag, and the frames left in the step already
    belong to its next episode (which the learner masks, as for any reset step).
    """

    has_expert = True
    has_state = True

    def __init__(self, track: str = "rainbow", num_envs: int = 24, action_repeat: int = 4,
                 seed: int | None = 0, shaping: RewardShaping | None = None, laps: int = 3, **kw):
        from envs import kartsim
        from envs.kartsim.generate import generated_tracks, parse_range

        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.track, self.num_envs, self.action_repeat = track, num_envs, action_repeat
        self.shaping = shaping or RewardShaping()
        reward = kartsim.RewardConfig.from_dict(self.shaping.as_dict())
        spread = parse_range(track)  # gen:A-B: each env on its own generated track, a new one per episode
        if spread is not None:
            kw.setdefault("track_sampler", generated_tracks(*spread))
        members = track_set(track)
        if members is not None:
            if len(members) != num_envs:
                raise ValueError(f"track set {track!r} has {len(members)} tracks for {num_envs} envs")
            kw.setdefault("tracks", members)
        self.vec = kartsim.VecKartSim(num_envs, track if spread is None and members is None else None, size=fr.MODEL_SHAPE[:2],
                                      seed=seed, laps=laps, reward=reward, **kw)
        self._seed = seed
        self._laps = np.zeros(num_envs)
        self._falls = np.zeros(num_envs)
        self._mts = np.zeros(num_envs)  # mini-turbos fired this episode
        self._pending = np.zeros(num_envs, bool)  # ended last frame: the next vec step resets it
        self._ended_state: tuple | None = None  # (ended envs, their last frame's state rows) of the last step
        self._styles: list | None = None  # watch_laps(): one LapStyle per env, fed every game frame

    def watch_laps(self) -> list:
        from envs.kartsim.splits import LapStyle

        self._styles = [LapStyle() for _ in range(self.num_envs)]
        return self._styles

    def _see_laps(self, info: dict) -> None:
        pos, edge = self.vec.positions(), self.vec.inside_edges()
        for i, style in enumerate(self._styles):
            style.see({k: info[k][i] for k in style.KEYS}, pos[i], edge[i])

    def set_shaping(self, shaping: RewardShaping) -> None:
        """The reward weights from the next step on (``--shaping-final``'s schedule)."""
        self.shaping = shaping
        self.vec.sim.set_reward(shaping.as_dict())

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.vec.reset(seed=self._seed if seed is None else seed)
        self._laps = _info_array(info, "lap", self.num_envs)
        self._falls = _info_array(info, "falls", self.num_envs)
        self._mts = _info_array(info, "mini_turbos", self.num_envs)
        self._pending[:] = False
        self._ended_state = None
        return np.asarray(obs, np.uint8)

    def state(self) -> np.ndarray:
        """Computed when asked (a frames-only policy never pays for it); an env that ended during
        the last step gives the rows of its last frame, kept at the end."""
        from envs.kartsim.state import batch_features

        rows = batch_features(self.vec.sim)
        if self._ended_state is not None:
            ended, final = self._ended_state
            rows = np.where(ended[:, None], final, rows)
        return rows

    def expert_actions(self) -> np.ndarray:
        return np.asarray(self.vec.expert_actions(), np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        from envs.kartsim.state import batch_features

        n = self.num_envs
        actions = np.asarray(actions, np.float32)
        total = np.zeros(n)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        ended = np.zeros(n, bool)  # ended earlier in this step: ignore its new episode's reward
        final_obs = final_state = None
        lap_end, falls_end, mts_end = np.zeros(n), np.zeros(n), np.zeros(n)  # an ended episode's counts
        new_laps: list[tuple[int, float]] = []
        for k in range(self.action_repeat):
            resetting = self._pending.copy()
            # only the frame after the last repeat is seen by the policy: draw just that one
            obs, reward, te, tr, info = self.vec.step(actions, render=k == self.action_repeat - 1)
            te, tr = np.asarray(te, bool), np.asarray(tr, bool)
            if self._styles is not None:
                self._see_laps(info)
            laps = _info_array(info, "lap", n)
            falls = _info_array(info, "falls", n)
            mts = _info_array(info, "mini_turbos", n)
            live = ~resetting
            lap_delta = np.where(live, np.maximum(laps - self._laps, 0), 0)
            total += np.where(live & ~ended, np.asarray(reward, np.float64), 0.0)
            lap_times = info.get("lap_times")
            for i in np.flatnonzero(live & (lap_delta > 0)):
                if lap_times is not None and len(lap_times[i]):
                    new_laps.append((int(i), float(lap_times[i][-1])))
            done_now = live & ~ended & (te | tr)
            if done_now.any():
                if obs is None:  # an episode ended mid-repeat: its last frame is needed now
                    obs = self.vec.observe()
                final_obs = np.array(obs, np.uint8) if final_obs is None else final_obs
                final_obs[done_now] = obs[done_now]
                now = batch_features(self.vec.sim)
                final_state = now if final_state is None else final_state
                final_state[done_now] = now[done_now]
                lap_end[done_now], falls_end[done_now] = laps[done_now], falls[done_now]
                mts_end[done_now] = mts[done_now]
            term |= done_now & te
            trunc |= done_now & tr & ~te
            ended |= done_now
            self._laps, self._falls, self._mts = laps, falls, mts
            self._pending = te | tr
        obs = np.asarray(obs, np.uint8)
        if final_obs is not None:  # an ended env shows its last frame, as next-step autoreset does
            obs = np.where(ended[:, None, None, None], final_obs, obs)
        self._ended_state = None if final_state is None else (ended, final_state)
        out_info = {
            "progress": _info_array(info, "progress", n),
            "lap": np.where(ended, lap_end, self._laps),
            "speed": _info_array(info, "speed", n),
            "falls": np.where(ended, falls_end, self._falls),
            "mini_turbos": np.where(ended, mts_end, self._mts),
            "new_laps": new_laps,
        }
        return StepResult(obs, total.astype(np.float32), term, trunc, out_info)

    # Exact resume: kartsim's numeric state (VecKartSim.get_state) plus this wrapper's counters.
    def get_state(self) -> dict:
        return {"vec": self.vec.get_state(), "laps": self._laps.copy(), "falls": self._falls.copy(),
                "mini_turbos": self._mts.copy(), "pending": self._pending.copy()}

    def set_state(self, state: dict) -> None:
        self.vec.set_state(state["vec"])
        self._laps, self._falls = state["laps"].copy(), state["falls"].copy()
        self._mts = state["mini_turbos"].copy()
        self._pending = state["pending"].copy()
        self._ended_state = None

    def close(self) -> None:
        self.vec.close()
