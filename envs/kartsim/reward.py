"""The RL reward, configurable: dense progress along the centreline plus penalties.

Per step::

    reward = progress * 100 * (centreline progress this step) / track length
           + fall                 (once, when the kart leaves the road into the void)
           + speed * v / VMAX     (shaping, off by default)
           + boost                (per step while a mini-turbo boost runs; off by default)
           + offroad              (per step on grass; off by default)
           + drift_abort * (1 - charge / MT_CHARGE)
                                  (once per drift that ends short of its mini-turbo,
                                   scaled by the charge missing; off by default)
           + drift_hold           (per step a drift is held on a charge that was already
                                   full: the mini-turbo waits; off by default)
           + edge * closeness     (per step on a void track: closeness is 0 at ``edge_margin``
                                   units or more inside the road edge and rises linearly
                                   to 1 at the edge; a margin to the void; off by default)

So with the defaults one full lap is worth 100, reversing earns it back
negatively, and a fall costs ``fall`` plus the ground lost back to the last
checkpoint (and the time Lakitu takes). Progress is cheat-proof: it is measured
from the last checkpoint passed in order (see race.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RewardConfig:
    progress: float = 1.0  # reward per percent of a lap
    fall: float = -5.0  # one-off, when falling off the track
    speed: float = 0.0  # x speed / VMAX, per step
    boost: float = 0.0  # per step while boosting
    offroad: float = 0.0  # per step off-road (use a negative value)
    drift_abort: float = 0.0  # per drift ended uncharged, x the charge missing (use a negative value)
    drift_hold: float = 0.0  # per step holding a drift on a full charge (use a negative value)
    edge: float = 0.0  # per step near a void edge, x closeness (use a negative value; KartBatch.edge_closeness)
    edge_margin: float = 1.0  # units inside a void edge where the edge term starts (a distance, not a weight)

    def __post_init__(self):
        if not self.edge_margin > 0:
            raise ValueError(f"reward edge_margin must be > 0 (units inside the road edge), got {self.edge_margin}")

    def weights(self) -> np.ndarray:
        # order = physics.RW_* indices (the edge term is added by KartBatch.step, outside the physics)
        return np.array([self.progress, self.fall, self.speed, self.boost, self.offroad, self.drift_abort,
                         self.drift_hold], np.float64)

    @classmethod
    def from_dict(cls, d: dict | None) -> RewardConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown reward terms {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: float(v) for k, v in d.items()})

    def as_dict(self) -> dict:
        return asdict(self)
