"""KartSimEnv: one kart, a Gymnasium 1.x environment (see envs/kartsim/__init__.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from common.action import HIGH, LOW

from .expert import Expert
from .physics import X, Y
from .sim import KartBatch


class KartSimEnv(gym.Env):
    """First-person kart racing. Observation: (H, W, 3) uint8 RGB; action: [x, y, a, b, rb].

    The episode terminates when the race (``laps`` laps) is finished and is
    truncated at ``max_time_s`` game seconds. ``info`` carries progress, lap,
    lap_times, race_time, speed, surface, falls and t (game seconds).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, track="luigi", size=(240, 320), seed: int | None = None, laps: int = 3,
                 reward=None, max_time_s: float | None = None, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.sim = KartBatch(1, track, size, laps, reward, max_time_s)
        self.track = self.sim.track
        self.observation_space = gym.spaces.Box(0, 255, (*self.sim.size, 3), np.uint8)
        self.action_space = gym.spaces.Box(LOW, HIGH, (5,), np.float32)
        self._seed = seed
        self._expert = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None  # make(seed=...) seeds the first reset
        super().reset(seed=seed)
        self.sim.reset_kart(0, self.np_random)
        return self.sim.render()[0].copy(), self.sim.info(0)

    def step(self, action):
        rew, term, trunc = self.sim.step(np.asarray(action, np.float32)[None])
        obs = self.sim.render()[0].copy()
        return obs, float(rew[0]), bool(term[0]), bool(trunc[0]), self.sim.info(0)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.sim.obs[0].copy()
        return None

    def position(self) -> tuple[float, float]:
        """The kart's (x, y) on the track plane, in track units (``track.xy`` coordinates)."""
        fs = self.sim.fs[0]
        return float(fs[X]), float(fs[Y])

    def inside_edge(self) -> float:
        """How far the kart's centre is inside the road edge, in track units (negative: off the road);
        the measure of ``plan``'s ``closest_to_edge_u``."""
        return float(self.sim.inside_edges()[0])

    def expert_action(self) -> np.ndarray:
        """The scripted expert's action (5,) for the current state."""
        if self._expert is None:
            self._expert = Expert(self.track)
        return self._expert.actions(self.sim.fs, self.sim.ist)[0]
