"""The environment side of fine-tuning: one small interface, and kartsim behind it.

The learner talks only to a ``VecEnvBackend``. The built-in simulator
(``KartSimBackend``) implements it here; the real-emulator env and the Ray
backend implement the same few members and register a factory with
``register_backend`` -- the learner does not change.

Semantics (gymnasium 1.x vector-env conventions, at decision level):

* ``step(actions)`` applies each env's action for ``frames_per_step`` game
  frames (the action repeat) and returns a ``StepResult``.
* Next-step autoreset: after an env reports ``terminated`` or ``truncated``,
  its next ``step`` starts a new episode; the learner treats that one step as
  not taken by the policy (it is masked out of the loss). The observation
  returned with the ending flag is the episode's last frame, so a truncated
  episode can be bootstrapped from it.
* Observations are ``(N, 66, 200, 3)`` uint8 model inputs (``common.frames``).
* ``reward`` is already shaped (``RewardShaping``); ``info`` carries arrays of
  ``progress``, ``lap``, ``speed``, ``falls`` per env (and ``mini_turbos`` where
  the backend can count them), and ``new_laps``: the ``(env, seconds)`` of laps
  completed during the step.

Optional members the learner uses when present: ``expert_actions()`` (scripted
expert, for the expert baseline) and ``get_state()`` / ``set_state()`` (exact
resume: a checkpoint then restores the environments too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from common import frames as fr


@dataclass
class StepResult:
    obs: np.ndarray  # (N, 66, 200, 3) uint8
    reward: np.ndarray  # (N,) float32, shaped
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    info: dict = field(default_factory=dict)


@runtime_checkable
class VecEnvBackend(Protocol):
    num_envs: int
    frames_per_step: int  # game frames one step advances each env (action repeat)
    track: str

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> StepResult: ...

    def close(self) -> None: ...


@dataclass
class RewardShaping:
    """The reward terms (kartsim's ``RewardConfig``; other backends read the same fields).

    Per game frame: ``progress`` x 100 x (lap fraction gained) -- one lap is worth
    100 -- plus the shaping the Mario Kart RL literature uses: ``speed`` x v / top
    speed (do not idle), ``boost`` while a drift mini-turbo runs (use drift-boosts),
    ``offroad`` per frame on grass (negative), ``fall`` once per fall off the
    track (negative; Rainbow Road has no guardrails, and a fall also loses the
    ground back to the last checkpoint and Lakitu's time), and ``drift_abort``
    once per drift given up before its mini-turbo charged, times the share of
    the charge missing (negative).

    ``boost`` and ``drift_abort`` are on by default. Progress alone barely tells a
    mini-turbo from none (a boost gains ~0.1 s), and the cloned policy lets go of
    R where its teacher did, a few frames before the charge would complete:
    holding on means sampling R against a ~1% probability on ~10 frames in a row,
    which per-frame exploration never does. ``drift_abort`` makes each of those
    early releases cost at once (-3 x the charge missing: holding one frame
    longer is worth one to two frames of progress), so the policy learns to hold on
    without having to stumble on a whole boost first; ``boost`` (0.1 per boosted
    frame, ~2.4 per boost) pays for the boost itself. A drift held to its boost
    costs nothing. The real-game backend reads only ``progress``.
    """

    progress: float = 1.0
    fall: float = -10.0
    speed: float = 0.0
    boost: float = 0.1  # pays for the mini-turbo itself
    offroad: float = 0.0
    drift_abort: float = -3.0  # the clone lets go of R before the charge completes; this says so at once

    def as_dict(self) -> dict:
        return asdict(self)


BackendFactory = Callable[..., VecEnvBackend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``--env NAME`` build ``factory(track=, num_envs=, frames_per_step=, seed=, shaping=, **kw)``."""
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def make_backend(name: str, **kw) -> VecEnvBackend:
    if name not in _BACKENDS:
        raise ValueError(f"unknown env backend {name!r}; known: {', '.join(backend_names())}")
    return _BACKENDS[name](**kw)


def _info_array(info: dict, key: str, n: int, default=0.0) -> np.ndarray:
    """A per-env array from a gymnasium vector info dict (missing -> default)."""
    val = info.get(key)
    if val is None:
        return np.full(n, default, np.float64)
    return np.asarray(val, np.float64).reshape(n)


class KartSimBackend:
    """``envs.kartsim.VecKartSim`` at 66x200 behind ``VecEnvBackend``, with action repeat.

    The repeat runs in this class (one vector step per game frame), so an env
    can end during a repeated step: its reward stops there, its final frame is
    returned with the ending flag, and the frames left in the step already
    belong to its next episode (which the learner masks, as for any reset step).
    """

    def __init__(self, track: str = "rainbow", num_envs: int = 24, frames_per_step: int = 4,
                 seed: int | None = 0, shaping: RewardShaping | None = None, laps: int = 3, **kw):
        from envs import kartsim

        if frames_per_step < 1:
            raise ValueError(f"frames_per_step (action repeat) must be >= 1, got {frames_per_step}")
        self.track, self.num_envs, self.frames_per_step = track, num_envs, frames_per_step
        self.shaping = shaping or RewardShaping()
        self.fps = kartsim.FPS
        reward = kartsim.RewardConfig.from_dict(self.shaping.as_dict())
        self.vec = kartsim.VecKartSim(num_envs, track, size=fr.MODEL_SHAPE[:2], seed=seed, laps=laps,
                                      reward=reward, **kw)
        self._seed = seed
        self._laps = np.zeros(num_envs)
        self._falls = np.zeros(num_envs)
        self._mts = np.zeros(num_envs)  # mini-turbos fired this episode
        self._pending = np.zeros(num_envs, bool)  # ended last frame: the next vec step resets it

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.vec.reset(seed=self._seed if seed is None else seed)
        self._laps = _info_array(info, "lap", self.num_envs)
        self._falls = _info_array(info, "falls", self.num_envs)
        self._mts = _info_array(info, "mini_turbos", self.num_envs)
        self._pending[:] = False
        return np.asarray(obs, np.uint8)

    def expert_actions(self) -> np.ndarray:
        return np.asarray(self.vec.expert_actions(), np.float32)

    def step(self, actions: np.ndarray) -> StepResult:
        n = self.num_envs
        actions = np.asarray(actions, np.float32)
        total = np.zeros(n)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        ended = np.zeros(n, bool)  # ended earlier in this step: ignore its new episode's reward
        final_obs = None
        lap_end, falls_end, mts_end = np.zeros(n), np.zeros(n), np.zeros(n)  # an ended episode's counts
        new_laps: list[tuple[int, float]] = []
        for k in range(self.frames_per_step):
            resetting = self._pending.copy()
            # only the frame after the last repeat is seen by the policy: draw just that one
            obs, reward, te, tr, info = self.vec.step(actions, render=k == self.frames_per_step - 1)
            te, tr = np.asarray(te, bool), np.asarray(tr, bool)
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

    def close(self) -> None:
        self.vec.close()


register_backend("kartsim", KartSimBackend)
