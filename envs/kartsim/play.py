"""A human drives kartsim in a pygame window (keyboard, or a gamepad through ``inputs``).

Keys: arrows or WASD steer, Z / Space = A (accelerate), X = B (brake/reverse),
C / Shift = R (hop, drift), Backspace restarts, Esc quits. A gamepad (read with
the ``inputs`` package when one is plugged in) maps left stick, A, B and R.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from . import kart as K
from .env import KartSimEnv


class Gamepad:
    """Latest gamepad state from ``inputs`` in a background thread (absent pad: stays neutral)."""

    def __init__(self):
        self.state = np.zeros(5, np.float32)
        self.ok = False
        try:
            import inputs

            if inputs.devices.gamepads:
                self.ok = True
                threading.Thread(target=self._loop, args=(inputs,), daemon=True).start()
        except Exception:  # no pad, no permission, no inputs: keyboard only
            self.ok = False

    def _loop(self, inputs):
        while True:
            try:
                events = inputs.get_gamepad()
            except Exception:
                self.ok = False
                return
            for ev in events:
                if ev.code == "ABS_X":
                    self.state[0] = np.clip(ev.state / 32767.0, -1, 1)
                elif ev.code == "ABS_Y":  # evdev's y points down: flip once, here
                    self.state[1] = np.clip(-ev.state / 32767.0, -1, 1)
                elif ev.code == "BTN_SOUTH":
                    self.state[2] = float(ev.state)
                elif ev.code in ("BTN_WEST", "BTN_EAST"):
                    self.state[3] = float(ev.state)
                elif ev.code in ("BTN_TR", "ABS_RZ"):
                    self.state[4] = float(ev.state > 0)


def keyboard_action(pressed, pg) -> np.ndarray:
    act = np.zeros(5, np.float32)
    act[0] = float(pressed[pg.K_RIGHT] or pressed[pg.K_d]) - float(pressed[pg.K_LEFT] or pressed[pg.K_a])
    act[1] = float(pressed[pg.K_UP] or pressed[pg.K_w]) - float(pressed[pg.K_DOWN] or pressed[pg.K_s])
    act[2] = float(pressed[pg.K_z] or pressed[pg.K_SPACE])
    act[3] = float(pressed[pg.K_x])
    act[4] = float(pressed[pg.K_c] or pressed[pg.K_LSHIFT] or pressed[pg.K_RSHIFT])
    return act


def play(track: str = "luigi", scale: int = 2, laps: int = 3, max_frames: int | None = None) -> dict:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame as pg

    env = KartSimEnv(track=track, size=(240, 320), laps=laps)
    obs, info = env.reset(seed=0)
    pg.display.init()  # no pg.init(): the audio mixer is not needed
    pg.font.init()
    screen = pg.display.set_mode((320 * scale, 240 * scale))
    pg.display.set_caption(f"kartsim - {env.track.name} (Esc quits, Backspace restarts)")
    font = pg.font.SysFont("monospace", 9 * scale, bold=True)
    clock = pg.time.Clock()
    pad = Gamepad()
    frames, running, result = 0, True, {}
    while running:
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key == pg.K_ESCAPE):
                running = False
            elif ev.type == pg.KEYDOWN and ev.key == pg.K_BACKSPACE:
                obs, info = env.reset()
        act = keyboard_action(pg.key.get_pressed(), pg)
        if pad.ok:
            act = np.where(np.abs(pad.state) > np.abs(act), pad.state, act)
        obs, _, term, _, info = env.step(act)
        surf = pg.surfarray.make_surface(obs.swapaxes(0, 1))
        screen.blit(pg.transform.scale(surf, screen.get_size()), (0, 0))
        last = f"{info['lap_times'][-1]:.2f}" if info["lap_times"] else "-"
        lines = [f"LAP {min(info['lap'] + 1, laps)}/{laps}  TIME {info['race_time']:6.2f}  LAST {last}",
                 f"{info['speed'] * 3.6:5.0f} km/h  FALLS {info['falls']}  {'BOOST' if info['boost'] else ''}"]
        if info["surface"] == "falling":
            lines.append("LAKITU!")
        if term:
            lines.append(f"FINISHED {info['race_time']:.2f} s - Backspace to race again")
        for i, text in enumerate(lines):
            screen.blit(font.render(text, True, (255, 255, 255), (0, 0, 0)), (6, 6 + i * 11 * scale))
        pg.display.flip()
        clock.tick(K.FPS)
        result = {"track": track, "lap_times": info["lap_times"], "race_time": info["race_time"],
                  "falls": info["falls"], "finished": info["finished"]}
        if term:  # freeze on the finish until restart or quit
            while running:
                ev = pg.event.wait()
                if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key == pg.K_ESCAPE):
                    running = False
                elif ev.type == pg.KEYDOWN and ev.key == pg.K_BACKSPACE:
                    obs, info = env.reset()
                    break
        frames += 1
        if max_frames is not None and frames >= max_frames:
            running = False
    pg.quit()
    return result
