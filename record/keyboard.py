"""Keyboard driving for the sim source: a pygame play window.

Arrows steer (left/right) and tilt the stick (up/down); X or Space = A
(accelerate), Z or C = B (brake), Shift or V = R (hop). Escape or closing the
window stops the recording. The window shows the frame being recorded.
"""

from __future__ import annotations

import os

import numpy as np

from common import action as act


class KeyboardDriver:
    driver = "human"

    def __init__(self, title: str = "KartPilot - recording (Esc to stop)", scale: int = 2):
        os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
        import pygame

        self.pg = pygame
        pygame.display.init()
        self.scale = scale
        self.title = title
        self.screen = None
        self.held: set[int] = set()  # from KEYDOWN/KEYUP events, not get_pressed: works with posted events
        self.quit = False
        k = pygame
        self._keys = {
            "left": {k.K_LEFT}, "right": {k.K_RIGHT}, "up": {k.K_UP}, "down": {k.K_DOWN},
            "a": {k.K_x, k.K_SPACE}, "b": {k.K_z, k.K_c}, "rb": {k.K_LSHIFT, k.K_RSHIFT, k.K_v},
        }

    def show(self, frame: np.ndarray) -> None:
        pg = self.pg
        h, w = frame.shape[:2]
        if self.screen is None:
            self.screen = pg.display.set_mode((w * self.scale, h * self.scale))
            pg.display.set_caption(self.title)
        surf = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        self.screen.blit(pg.transform.scale(surf, self.screen.get_size()), (0, 0))
        pg.display.flip()

    def _pump(self) -> None:
        pg = self.pg
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key == pg.K_ESCAPE):
                self.quit = True
            elif ev.type == pg.KEYDOWN:
                self.held.add(ev.key)
            elif ev.type == pg.KEYUP:
                self.held.discard(ev.key)

    def _on(self, name: str) -> bool:
        return bool(self._keys[name] & self.held)

    def state(self) -> np.ndarray:
        self._pump()
        x = float(self._on("right")) - float(self._on("left"))
        y = float(self._on("up")) - float(self._on("down"))
        return act.as_action([x, y, float(self._on("a")), float(self._on("b")), float(self._on("rb"))])

    def close(self) -> None:
        self.pg.display.quit()
