"""The kartsim source: frames straight from the simulator, no screen needed.

Each tick records the frame the driver sees and the action it answers with,
then steps the simulator with that action (so row i = (frame_i, action_i),
the pair behavioural cloning learns from). Driven by the scripted expert or
by a human with the keyboard (record.keyboard).
"""

from __future__ import annotations

import numpy as np


class SimSource:
    source = "sim"

    def __init__(self, track: str = "luigi", size: tuple[int, int] = (240, 320), seed: int | None = None,
                 laps: int = 3, stop_at_finish: bool = False, noise: float = 0.0):
        import envs.kartsim as kartsim  # imported here: the screen recorder must not need it
        from envs.kartsim.dart import DartNoise

        self.kartsim = kartsim
        self.track = track
        self.env = kartsim.make(track, size=size, seed=seed, laps=laps)
        # A few throwaway steps before the clock starts: the first steps compile (numba) and
        # must not land inside the recording's schedule.
        self.env.reset(seed=seed)
        for _ in range(3):
            self.env.step(self.expert_action())
        self.obs, self.info = self.env.reset(seed=seed)
        self.resolution = tuple(int(v) for v in self.obs.shape[:2])
        self.stop_at_finish = stop_at_finish
        self.finished = False  # a race ended (and stop_at_finish was asked)
        self.episodes = 1
        self.fps = getattr(kartsim, "FPS", 30)
        # DART: the kart executes a perturbed action, the session keeps the clean label
        self.dart = DartNoise(noise, seed) if noise > 0 else None

    def grab(self) -> np.ndarray:
        return np.array(self.obs, dtype=np.uint8, copy=True)

    def expert_action(self) -> np.ndarray:
        return np.asarray(self.env.unwrapped.expert_action(), dtype=np.float32)

    def after(self, action: np.ndarray) -> None:
        """Advance the simulator by one step with the recorded action."""
        executed = np.asarray(action, dtype=np.float32)
        if self.dart is not None:
            executed = self.dart.perturb(executed)
        self.obs, _, terminated, truncated, self.info = self.env.step(executed)
        if terminated or truncated:
            if self.stop_at_finish:
                self.finished = True
                return
            self.obs, self.info = self.env.reset()
            self.episodes += 1

    def status(self) -> str:
        i = self.info or {}
        return f"lap {i.get('lap', 0)} {100 * i.get('progress', 0):3.0f}% {i.get('speed', 0):5.1f}"

    def close(self) -> None:
        self.env.close()


class ExpertDriver:
    """The scripted expert as a controller."""

    driver = "expert"

    def __init__(self, sim: SimSource):
        self.sim = sim

    def state(self) -> np.ndarray:
        return self.sim.expert_action()

    def close(self) -> None:
        pass
