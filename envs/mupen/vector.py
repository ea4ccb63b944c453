"""VecMupen: N emulator instances behind Gymnasium's VectorEnv interface.

Same shape as ``envs.kartsim.VecKartSim`` (next-step autoreset), so the
learner drives 24 emulators exactly as it drives 24 simulated karts. A step
answers every instance's held poll first (``MupenEnv.step_send``; the bridges
answer the action-repeat polls themselves), then collects each instance's
next poll, so all emulators run their frames at once without a thread per
instance on the lockstep path; resets (seconds each) run one thread per instance. A crashed instance restarts inside its own step (the others
finish theirs and keep their episodes); its step reports ``truncated``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from common.mupen import spread_cpus
from envs.mupen.env import MupenEnv


class VecMupen(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 24, rom: str | None = None, *, pin_cpus: bool = True, cpu_offset: int = 0,
                 cpu_count: int | None = None, **env_kw):
        """``pin_cpus``: run instance i's mupen64plus on CPU ``cpu_offset + i`` when the whole
        vector (``cpu_count`` instances, default ``num_envs``) has at most one instance per CPU this
        process may use (common.mupen.spread_cpus), so each keeps its caches between lockstep
        frames; with more instances than CPUs, none is pinned. ``cpu_offset``/``cpu_count``: this
        vector's first env and the whole vector's size, for a slice of a larger one (Ray actors)."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if rom is None:
            raise ValueError("VecMupen needs rom=PATH (your own ROM file)")
        self.num_envs = num_envs
        total = num_envs if cpu_count is None else cpu_count
        self.envs = [MupenEnv(rom, **env_kw, cpus=spread_cpus(cpu_offset + i, total) if pin_cpus else None)
                     for i in range(num_envs)]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._pool = ThreadPoolExecutor(max_workers=num_envs, thread_name_prefix="mupen")
        self._autoreset = np.zeros(num_envs, dtype=bool)

    @property
    def restarts(self) -> list[int]:
        return [e.restarts for e in self.envs]

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        results = list(self._pool.map(lambda i: self.envs[i].reset(seed=seeds[i], options=options),
                                      range(self.num_envs)))
        self._autoreset[:] = False
        infos: dict = {}
        for i, (_, info) in enumerate(results):
            infos = self._add_info(infos, info, i)
        return np.stack([obs for obs, _ in results]), infos

    def _one(self, i: int, action):
        env = self.envs[i]
        if self._autoreset[i]:
            obs, info = env.reset()
            return obs, 0.0, False, False, info
        return env.step(action)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32)
        if self._autoreset.any():  # resets take seconds each: side by side on the pool
            results = list(self._pool.map(lambda i: self._one(i, actions[i]), range(self.num_envs)))
        else:  # answer every emulator, then collect: no thread hand-offs on the lockstep path
            for env, a in zip(self.envs, actions, strict=True):
                env.step_send(a)
            results = [env.step_collect() for env in self.envs]
        obs = np.stack([r[0] for r in results])
        rewards = np.array([r[1] for r in results], dtype=np.float32)
        terms = np.array([r[2] for r in results], dtype=bool)
        truncs = np.array([r[3] for r in results], dtype=bool)
        infos: dict = {}
        for i, r in enumerate(results):
            infos = self._add_info(infos, r[4], i)
        self._autoreset = terms | truncs
        return obs, rewards, terms, truncs, infos

    def close_extras(self, **kwargs):
        list(self._pool.map(lambda e: e.close(), self.envs))
        self._pool.shutdown(wait=True)
