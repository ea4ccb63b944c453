"""Live telemetry: drive the real game from a savestate and watch what the profile reads.

``python -m envs.mupen telemetry --rom R --state S`` runs one emulator through
the env (our plugin, headless on its own Xvfb) and prints, a few times a
second, what the game profile decodes from RDRAM: for Mario Kart 64 the lap,
progress, speed, surface, drift / mini-turbo state and falls. Check a profile
(and your savestate) with it before recording or training: drive around and
the numbers must follow.

Drivers: ``keyboard`` (a window on your display shows the game; arrows or WASD
steer, Z / Space = A, X = B, C / Shift = R, Esc quits; a gamepad works too, as
in ``python -m envs.kartsim play``), ``throttle`` (A held, stick centred: a
headless check) and ``neutral`` (nothing pressed).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import numpy as np

DRIVERS = ("keyboard", "throttle", "neutral")
# what a line shows, in this order, when the profile's info has it (MK64: all of them)
RACE_KEYS = ("lap", "progress", "speed_kmh", "surface", "drift", "drift_charge", "boost", "mini_turbos", "falls",
             "race_state", "t")
BASE_KEYS = {"frame_index", "restarts", "crashed", "idle_polls", "reward_terms", "reason"}


def format_line(info: dict, polls: int) -> str:
    """One status line: the race keys the info has, else every game value (e.g. the test ROM's words)."""
    def fmt(k, v):
        if isinstance(v, float):
            return f"{k} {v:.3f}" if k == "progress" else f"{k} {v:.2f}"
        return f"{k} {v}"

    keys = [k for k in RACE_KEYS if k in info]
    if not keys:
        keys = [k for k in info if k not in BASE_KEYS]
    return f"poll {polls:6d}  " + "  ".join(fmt(k, info[k]) for k in keys)


class KeyboardWindow:
    """A pygame window showing the game; keys (and a gamepad) -> action vector. Reuses kartsim's
    play mapping (envs/kartsim/play.py), so the keys are the same as in ``python -m envs.kartsim play``."""

    def __init__(self, title: str = "KartPilot telemetry (Esc quits)", scale: int = 2):
        if not os.environ.get("DISPLAY"):
            raise RuntimeError("--driver keyboard needs a display (DISPLAY is not set); use --driver throttle")
        os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
        import pygame

        from envs.kartsim.play import Gamepad, keyboard_action

        self.pg, self._keys = pygame, keyboard_action
        pygame.display.init()
        pygame.display.set_caption(title)
        self.scale, self.screen, self.quit = scale, None, False
        self.pad = Gamepad()

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        pg = self.pg
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key == pg.K_ESCAPE):
                self.quit = True
        h, w = frame.shape[:2]
        if self.screen is None:
            self.screen = pg.display.set_mode((w * self.scale, h * self.scale))
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        self.screen.blit(pg.transform.scale(surf, (w * self.scale, h * self.scale)), (0, 0))
        pg.display.flip()
        act = self._keys(pg.key.get_pressed(), pg)
        if self.pad.ok:
            act = np.where(np.abs(self.pad.state) > np.abs(act), self.pad.state, act)
        return act.astype(np.float32)

    def close(self) -> None:
        self.pg.display.quit()


def fixed_driver(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    act = np.zeros(5, np.float32)
    if kind == "throttle":
        act[2] = 1.0
    return lambda frame: act


def run(rom, state=None, profile=None, driver: str = "throttle", seconds: float | None = None,
        steps: int | None = None, every: int = 15, rate: float | None = None, action_repeat: int = 1,
        out=sys.stdout) -> dict:
    """Drive ``rom`` from ``state`` and print a status line every ``every`` steps; returns a summary."""
    from envs.mupen.env import MupenEnv

    if driver not in DRIVERS:
        raise ValueError(f"driver {driver!r}: one of {', '.join(DRIVERS)}")
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if seconds is None and steps is None and driver != "keyboard":
        raise ValueError("give --seconds or --steps (only the keyboard driver runs until you quit)")
    window = KeyboardWindow() if driver == "keyboard" else None
    act = window or fixed_driver(driver)
    if window is not None and rate is None:
        rate = 60.0  # about the game's own pace, so a human can drive
    env = MupenEnv(rom, profile=profile, state=state, action_repeat=action_repeat)
    lines, n, info = 0, 0, {}
    started = time.monotonic()
    try:
        obs, info = env.reset()
        print(format_line(info, 0), file=out, flush=True)
        while True:
            if steps is not None and n >= steps:
                break
            if seconds is not None and time.monotonic() - started >= seconds:
                break
            if window is not None and window.quit:
                break
            t0 = time.monotonic()
            obs, _, terminated, truncated, info = env.step(act(obs))
            n += 1
            if n % every == 0 or terminated:
                print(format_line(info, n * action_repeat), file=out, flush=True)
                lines += 1
            if terminated:
                break
            if rate:
                time.sleep(max(0.0, action_repeat / rate - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        env.close()
        if window is not None:
            window.close()
    game = {k: v for k, v in info.items() if k not in BASE_KEYS}
    return {"profile": env.profile.name, "driver": driver, "steps": n, "polls": n * action_repeat, "lines": lines,
            "restarts": env.restarts, "last": game}
