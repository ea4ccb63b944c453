"""The emulator behind the learner's ``VecEnvBackend`` interface (envs/vecenv.py).

``MupenBackend`` wraps :class:`envs.mupen.vector.VecMupen`: observations go
through ``common.frames.to_model_batch`` (66x200 model input), one decision
lasts ``action_repeat`` controller polls (one per game frame). The reward is
``RewardShaping``'s weighted sum, computed frame by frame by the game profile's
tracker from the game's memory (envs/mupen/profiles.py): on MK64 every term
(progress, fall from the Lakitu rescue flags, speed, mini-turbo boost,
off-road, drift_abort). A game profile that cannot compute a term with a
non-zero weight is refused with a message; the GPL test ROM is not a game (its
reward is 0 whatever the weights), which is said once in a warning.
``make_mk64`` is ``--env mk64`` and ``make_test_rom`` is ``--env mupen-test`` (the GPL
test ROM), by the backend table in train/finetune/envs.py.

ROM and savestate come from the factory's ``rom=``/``state=`` or the
``KARTPILOT_ROM`` / ``KARTPILOT_STATE`` environment variables (the Makefile's
``ROM=`` / ``STATE=``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, is_dataclass

import numpy as np

from common import frames as fr
from envs.vecenv import StepResult, VecEnvBackend

log = logging.getLogger(__name__)


def _weights(shaping) -> dict[str, float]:
    """RewardShaping (or a mapping) -> term weights; None -> progress only. Settings that weigh no term
    (``edge_margin``) are left out, and so are terms weighted 0 that no game profile computes (kartsim's
    ``drift_hold`` and ``edge``): a term the game lacks is refused only when it would count."""
    from envs.mupen.profiles import NOT_WEIGHTS, REWARD_TERMS

    if shaping is None:
        return {"progress": 1.0}
    d = shaping.as_dict() if hasattr(shaping, "as_dict") else asdict(shaping) if is_dataclass(shaping) else shaping
    return {k: float(v) for k, v in dict(d).items() if k not in NOT_WEIGHTS and (v or k in REWARD_TERMS)}


class MupenBackend(VecEnvBackend):
    def __init__(self, track: str = "mk64", num_envs: int = 24, action_repeat: int = 4, seed: int | None = 0,
                 shaping=None, rom: str | None = None, state: str | None = None, profile: str | None = None,
                 **env_kw):
        from envs.mupen.profiles import get_profile
        from envs.mupen.vector import VecMupen

        rom = rom or os.environ.get("KARTPILOT_ROM")
        state = state or os.environ.get("KARTPILOT_STATE") or None
        if not rom:
            raise ValueError("the emulator env needs your ROM: pass ROM=path/to/mk64.z64 (KARTPILOT_ROM)")
        self.track, self.num_envs, self.action_repeat, self._seed = track, num_envs, action_repeat, seed
        self.shaping = shaping
        weights = _weights(shaping)
        prof = get_profile(profile) if profile else None
        if prof is not None:
            unscored = prof.check_reward(weights)  # ValueError for a term the game cannot compute
            if unscored:
                log.warning("the %s profile (%s) scores nothing: reward term(s) %s are 0 here whatever "
                            "their weights", prof.name, prof.description, unscored)
        tracker_kw = {**env_kw.pop("tracker_kw", {}), "reward": weights}
        self.vec = VecMupen(num_envs, rom=rom, state=state, profile=profile, action_repeat=action_repeat,
                            tracker_kw=tracker_kw, **env_kw)
        self._laps = np.zeros(num_envs)

    def _obs(self, frames) -> np.ndarray:
        return fr.to_model_batch(list(frames))

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.vec.reset(seed=self._seed if seed is None else seed)
        self._laps = np.asarray(info.get("lap", np.zeros(self.num_envs)), np.float64)
        return self._obs(obs)

    def step(self, actions: np.ndarray) -> StepResult:
        obs, reward, term, trunc, info = self.vec.step(np.asarray(actions, np.float32))
        n = self.num_envs
        reward = np.asarray(reward, np.float64)  # already weighted, frame by frame, by the tracker
        laps = np.asarray(info["lap"], np.float64) if "lap" in info else self._laps
        new_laps = []
        lap_times = info.get("lap_times")
        for i in np.flatnonzero(laps > self._laps):
            if lap_times is not None and lap_times[i]:
                new_laps.append((int(i), float(lap_times[i][-1])))
        self._laps = laps
        out = {
            "progress": np.asarray(info.get("progress", np.zeros(n)), np.float64),
            "lap": laps.copy(),
            "speed": np.asarray(info.get("speed", np.zeros(n)), np.float64),
            "falls": np.asarray(info.get("falls", np.zeros(n)), np.float64),  # Lakitu rescues this episode
            "mini_turbos": np.asarray(info.get("mini_turbos", np.zeros(n)), np.float64),
            "new_laps": new_laps,
            "restarts": np.asarray(self.vec.restarts),
        }
        return StepResult(self._obs(obs), reward.astype(np.float32), np.asarray(term, bool),
                          np.asarray(trunc, bool), out)

    def close(self) -> None:
        self.vec.close()


def make_mk64(**kw) -> MupenBackend:
    return MupenBackend(profile="mk64", **kw)


def make_test_rom(**kw) -> MupenBackend:
    if not kw.get("rom"):
        kw["rom"] = os.environ.get("KARTPILOT_TEST_ROM")
    return MupenBackend(profile="test", **kw)
