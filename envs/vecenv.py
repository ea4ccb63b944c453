"""The fine-tuning env interface: what the PPO learner (train/finetune) needs from a vector env.

Backends subclass ``VecEnvBackend``: kartsim (``train/finetune/envs.py``), the
real emulator (``envs/mupen/backend.py``) and the Ray wrapper
(``train/finetune/ray_backend.py``). The interface lives here, below both
``envs/`` and ``train/``, so a backend under ``envs/`` never imports ``train/``;
the learner picks a backend by name from the table in ``train/finetune/envs.py``.

Semantics (gymnasium 1.x vector-env conventions, at decision level):

* ``step(actions)`` applies each env's action for ``action_repeat`` game
  frames and returns a ``StepResult``.
* Next-step autoreset: after an env reports ``terminated`` or ``truncated``,
  its next ``step`` starts a new episode; the learner treats that one step as
  not taken by the policy (it is masked out of the loss). The observation
  returned with the ending flag is the episode's last frame, so a truncated
  episode can be bootstrapped from it.
* Observations are ``(N, 66, 200, 3)`` uint8 model inputs (``common.frames``).
  A backend with ``has_state`` also gives each observation's kart state
  features (``common.state``): ``state()`` returns the ``(N, SIZE)`` float32
  rows of the observations the last ``reset``/``step`` returned (an ended
  env's rows are its last frame's, like its observation).
* ``reward`` is already shaped; ``info`` carries arrays of ``progress``,
  ``lap``, ``speed``, ``falls`` per env (and ``mini_turbos`` where the backend
  can count them), and ``new_laps``: the ``(env, seconds)`` of laps completed
  during the step.

Members a backend may or may not support are part of the interface, with a
flag or a ``None`` answer instead of being absent:

* ``has_expert`` / ``expert_actions()``: a scripted expert (the expert baseline);
* ``get_state()`` (``None``: not supported) / ``set_state()``: the env's numeric
  state, for an exact resume. The state is a tree of dicts, lists, numbers,
  strings, numpy arrays and numpy Generators (saved as npz + JSON, never pickled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class StepResult:
    obs: np.ndarray  # (N, 66, 200, 3) uint8
    reward: np.ndarray  # (N,) float32, shaped
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    info: dict = field(default_factory=dict)


class VecEnvBackend:
    """Base class of the fine-tuning backends (see the module doc)."""

    num_envs: int
    action_repeat: int  # game frames one step advances each env
    track: str
    has_expert: bool = False
    has_state: bool = False

    @property
    def fps(self) -> int:
        """Game frames per game second (kartsim's constant; Mario Kart 64 also runs its logic at 30)."""
        from envs.kartsim.kart import FPS

        return FPS

    def reset(self, seed: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def state(self) -> np.ndarray | None:
        """The kart state features of the last returned observations, or None where the backend has none."""
        return None

    def expert_actions(self) -> np.ndarray:
        """The scripted expert's (N, 5) actions; only where ``has_expert``."""
        raise NotImplementedError(f"the {type(self).__name__} backend has no scripted expert")

    def stats(self) -> dict:
        """Backend figures for the run summary (Ray: actors, nodes, replacements); {} when none."""
        return {}

    def watch_laps(self) -> list | None:
        """From now on, describe every env's laps frame by frame (``envs.kartsim.splits.LapStyle``,
        one per env, returned and fed by ``step``); None where the backend cannot (no kart state)."""
        return None

    def get_state(self) -> dict | None:
        """The envs' numeric state for an exact resume, or None where the backend cannot give it
        (a resume then starts fresh episodes)."""
        return None

    def set_state(self, state: dict) -> None:
        raise NotImplementedError(f"the {type(self).__name__} backend cannot restore an env state")
