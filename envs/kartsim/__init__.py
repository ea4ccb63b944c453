"""kartsim: KartPilot's built-in first-person kart racer (the embedded default).

Contract (docs/ARCHITECTURE.md):

* ``TRACKS``, ``HELD_OUT``, ``FPS``
* ``make(track="luigi", size=(240, 320), seed=None, laps=3, **kw) -> gymnasium.Env``;
  ids ``KartSim-Luigi-v0``, ``KartSim-Rainbow-v0``, ``KartSim-Twisty-v0``.
  ``size=(66, 200)`` renders the model's crop directly (common.frames).
  Extra keywords: ``reward`` (RewardConfig or dict), ``max_time_s``.
* ``env.unwrapped.expert_action()``, ``env.unwrapped.position()``; ``VecKartSim(num_envs, track, size, seed, ...)``
  with ``expert_actions()``; ``lower_bound_s(track)``.
"""

from __future__ import annotations

from ._jitcache import refresh as _refresh_jit_cache

_refresh_jit_cache()  # before any numba function is loaded from the cache

import gymnasium  # noqa: E402

from common.defaults import HELD_OUT  # noqa: E402  (its one home)

from .env import KartSimEnv  # noqa: E402
from .kart import FPS  # noqa: E402
from .line import lower_bound_s  # noqa: E402
from .reward import RewardConfig  # noqa: E402
from .track import Track, TrackError, load  # noqa: E402
from .vector import VecKartSim  # noqa: E402

TRACKS = ("luigi", "rainbow", "twisty")


def make(track="luigi", size=(240, 320), seed: int | None = None, laps: int = 3, **kw) -> gymnasium.Env:
    """A single-kart env on a built-in track name or a track JSON path."""
    return KartSimEnv(track=track, size=tuple(size), seed=seed, laps=laps, **kw)


def _register() -> None:
    for name in TRACKS:
        env_id = f"KartSim-{name.capitalize()}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="envs.kartsim.env:KartSimEnv", kwargs={"track": name},
                               vector_entry_point="envs.kartsim.vector:VecKartSim")


_register()

__all__ = ["FPS", "HELD_OUT", "TRACKS", "KartSimEnv", "RewardConfig", "Track", "TrackError", "VecKartSim",
           "load", "lower_bound_s", "make"]
