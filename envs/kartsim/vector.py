"""VecKartSim: N karts stepped and rendered together in one process.

A ``gymnasium.vector.VectorEnv`` with next-step autoreset: after a sub-env
terminates or truncates, the next ``step`` resets it (its action is ignored)
and returns the reset observation with reward 0. Sub-env ``i`` seeded with
``seed + i`` behaves exactly like ``make(..., seed=seed + i)``.

Per-env tracks: ``tracks=[t0, t1, ...]`` (one per env) puts env ``i`` on ``t_i``
(then it behaves exactly like ``make(t_i, seed=seed + i)``); ``track_sampler``
(a callable ``rng -> track``, e.g. ``generated_tracks(range(1000, 2000))``) draws a
new track for an env at each of its resets, from its own RNG seeded by ``seed``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from common.action import HIGH, LOW

from .expert import Expert
from .sim import KartBatch, MultiTrackBatch


class VecKartSim(VectorEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 24, track="luigi", size=(240, 320), seed: int | None = None,
                 laps: int = 3, reward=None, max_time_s: float | None = None, copy: bool = True,
                 tracks=None, track_sampler=None):
        self.num_envs = int(num_envs)
        if tracks is not None and track_sampler is not None:
            raise ValueError("give tracks=[...] or track_sampler=, not both")
        self._sampler = track_sampler
        self._track_rng = np.random.default_rng(seed)
        if track_sampler is not None:
            tracks = [track_sampler(self._track_rng) for _ in range(self.num_envs)]
        if tracks is not None:
            tracks = list(tracks)
            if len(tracks) != self.num_envs:
                raise ValueError(f"got {len(tracks)} tracks for {self.num_envs} envs")
            self.sim = MultiTrackBatch(tracks, size, laps, reward, max_time_s)
            self.track = self.sim.karts[0].track
        else:
            self.sim = KartBatch(self.num_envs, track, size, laps, reward, max_time_s)
            self.track = self.sim.track
        self.single_observation_space = gym.spaces.Box(0, 255, (*self.sim.size, 3), np.uint8)
        self.single_action_space = gym.spaces.Box(LOW, HIGH, (5,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._seed = seed
        self._rngs = [None] * self.num_envs
        self._needs_reset = np.zeros(self.num_envs, bool)
        self._copy = copy
        self._expert = None
        self._experts: dict = {}
        self._started = np.zeros(self.num_envs, bool)  # a sampler draws anew from an env's second reset on

    def _obs(self):
        obs = self.sim.render()
        return obs.copy() if self._copy else obs

    def reset(self, *, seed: int | list | None = None, options: dict | None = None):
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed if isinstance(seed, int) else None)
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        for i, s in enumerate(seeds):
            if s is not None or self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random(s)
            self._reset_env(i)
        self._needs_reset[:] = False
        return self._obs(), self._infos()

    def step(self, actions, *, render: bool = True):
        """One game frame for every kart. ``render=False`` skips drawing and returns ``None``
        as the observation: an action repeat only needs the frame after its last step
        (drawing is most of a step's cost); ``observe()`` draws on demand."""
        actions = np.asarray(actions, np.float32).reshape(self.num_envs, 5)
        redo = np.flatnonzero(self._needs_reset)
        rew, term, trunc = self.sim.step(actions)
        for i in redo:  # next-step autoreset: this step only resets them
            self._reset_env(i)
            rew[i] = 0.0
            term[i] = trunc[i] = False
        self._needs_reset = term | trunc
        return (self._obs() if render else None), rew, term, trunc, self._infos()

    def _reset_env(self, i: int) -> None:
        if self._sampler is not None and self._started[i]:
            self.sim.set_track(i, self._sampler(self._track_rng))
        self._started[i] = True
        self.sim.reset_kart(i, self._rngs[i])

    @property
    def tracks(self) -> list:
        """The track of each env (all the same one unless tracks= or track_sampler= was given)."""
        return self.sim.tracks if isinstance(self.sim, MultiTrackBatch) else [self.sim.track] * self.num_envs

    def positions(self) -> np.ndarray:
        """Where each kart is: (N, 2) map coordinates (x, y), a copy."""
        from . import physics

        return self.sim.fs[:, [physics.X, physics.Y]].copy()

    def inside_edges(self) -> np.ndarray:
        """How far each kart's centre is inside its road's edge, in track units (negative: off the road)."""
        return self.sim.inside_edges()

    def observe(self) -> np.ndarray:
        """Draw and return the current observations (after ``step(..., render=False)``)."""
        return self._obs()

    # The numeric state only (arrays and RNGs): a checkpoint stays loadable when kartsim's code changes.
    _SIM_ARRAYS = ("fs", "ist", "lapt", "rew", "fin_now", "obs")

    def get_state(self) -> dict:
        """Everything that decides the next steps: kart arrays, last frames, per-env RNGs."""
        import copy

        state = {"sim": {k: getattr(self.sim, k).copy() for k in self._SIM_ARRAYS},
                 "rngs": copy.deepcopy(self._rngs), "needs_reset": self._needs_reset.copy()}
        if isinstance(self.sim, MultiTrackBatch):  # which track each env is on, and the sampler's draws
            state["tracks"] = [t.source for t in self.sim.tracks]
            state["track_rng"] = copy.deepcopy(self._track_rng)
            state["started"] = self._started.copy()
        return state

    def set_state(self, state: dict) -> None:
        """Restore ``get_state()``'s dict (same track and number of envs)."""
        import copy

        if "tracks" in state:
            if not isinstance(self.sim, MultiTrackBatch) or len(state["tracks"]) != self.num_envs:
                raise ValueError("state has per-env tracks: restore it into a VecKartSim made with "
                                 f"tracks= or track_sampler= and {len(state['tracks'])} envs")
            for i, src in enumerate(state["tracks"]):
                if self.sim.karts[i].track.source != src:
                    self.sim.set_track(i, src)
            self._track_rng = copy.deepcopy(state["track_rng"])
            self._started = np.asarray(state["started"], bool).copy()
        for k in self._SIM_ARRAYS:
            src = state["sim"][k]
            dst = getattr(self.sim, k)
            if src.shape != dst.shape:
                raise ValueError(f"state field {k!r} has shape {src.shape}, this env has {dst.shape}")
            dst[...] = src
        self._rngs = copy.deepcopy(state["rngs"])
        self._needs_reset = np.asarray(state["needs_reset"], bool).copy()

    def _infos(self) -> dict:
        out = {}
        for key, arr in self.sim.infos().items():
            out[key] = arr
            out["_" + key] = np.ones(self.num_envs, bool)
        return out

    def render(self):
        return tuple(self.sim.obs)

    def expert_actions(self) -> np.ndarray:
        """The scripted expert's actions (N, 5) for the current states."""
        if isinstance(self.sim, MultiTrackBatch):
            out = np.zeros((self.num_envs, 5), np.float32)
            for i, k in enumerate(self.sim.karts):
                if k.track.source not in self._experts:
                    self._experts[k.track.source] = Expert(k.track)
                ex = self._experts[k.track.source]
                out[i] = ex.actions(k.fs, k.ist)[0]
            return out
        if self._expert is None:
            self._expert = Expert(self.track)
        return self._expert.actions(self.sim.fs, self.sim.ist)


__all__ = ["VecKartSim"]
