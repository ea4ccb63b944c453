"""DART noise injection for expert demonstrations (Laskey et al. 2017).

The *executed* steering is the expert's plus a slowly varying perturbation,
while the *label* recorded stays the expert's action. The kart then visits
states a little off the expert's line, and the data says how to recover from
them: plain cloning lacks exactly that (small errors compound into states the
expert never showed). Used by ``record --source sim --noise`` and
``train demos --noise``.
"""

from __future__ import annotations

import numpy as np


class DartNoise:
    """An Ornstein-Uhlenbeck steering offset (std ~= ``noise``, correlated over
    ~0.2 s), so it pushes the kart off line for a while instead of jittering.

    ``executed = dart.perturb(expert_action)`` is what the kart does; record
    ``expert_action`` as the label.
    """

    def __init__(self, noise: float = 0.3, seed: int | None = None):
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise, self.drift = float(noise), 0.0
        self.rng = np.random.default_rng(seed)

    def perturb(self, label: np.ndarray) -> np.ndarray:
        executed = np.array(label, np.float32, copy=True)
        if self.noise > 0:
            self.drift += -0.15 * self.drift + self.noise * 0.55 * self.rng.standard_normal()
            executed[0] = np.clip(executed[0] + self.drift, -1.0, 1.0)
        return executed
