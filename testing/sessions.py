"""Synthetic sessions for the dataset tests: game-like frames, desktop screenshots,
written through the real SessionWriter."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from dataset.session import SessionWriter


def desktop_image(h: int, w: int, rng) -> np.ndarray:
    """A desktop screenshot look-alike: wallpaper, windows with title bars and text, a taskbar."""
    wall = tuple(int(v) for v in rng.integers(0, 256, 3))
    img = Image.new("RGB", (w, h), wall)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = x0 + int(rng.integers(w // 3, w // 2 + 20)), y0 + int(rng.integers(h // 3, h // 2 + 20))
        bar = tuple(int(v) for v in rng.integers(0, 256, 3))
        panel = (255, 255, 255) if rng.random() < 0.6 else (int(rng.integers(200, 256)),) * 3
        d.rectangle((x0, y0, x1, y1), fill=panel, outline=(120, 120, 120))
        d.rectangle((x0, y0, x1, y0 + 14), fill=bar)
        d.text((x0 + 4, y0 + 2), "Terminal - user@host: ~/KartPilot", fill=(255, 255, 255))
        for k, yy in enumerate(range(y0 + 20, y1 - 8, 11)):
            words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(2, 9))))
                             for _ in range(int(rng.integers(2, 8))))
            d.text((x0 + 6, yy), words, fill=(0, 0, 0) if k % 5 else (30, 30, 160))
    d.rectangle((0, h - 18, w, h), fill=(40, 40, 48))
    d.text((6, h - 15), "Start   Files   Terminal   Browser     12:34", fill=(230, 230, 230))
    return np.asarray(img)


def game_image(h: int, w: int, i: int) -> np.ndarray:
    """A simple first-person road scene that moves with i."""
    img = Image.new("RGB", (w, h), (90, 150, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((0, h // 2, w, h), fill=(40, 160, 60))
    sway = int(w * 0.15 * np.sin(i / 20))
    d.polygon([(w // 2 - 10 + sway, h // 2), (w // 2 + 10 + sway, h // 2), (w - 10, h), (10, h)],
              fill=(90, 90, 90))
    y = h // 2 + (i * 4) % (h // 2)
    d.rectangle((w // 2 - 3 + sway // 2, y, w // 2 + 3 + sway // 2, y + 12), fill=(250, 250, 250))
    return np.asarray(img)


def driving_action(i: int) -> np.ndarray:
    return np.array([0.5 * np.sin(i / 15), 0.0, 1.0, 0.0, float(i % 50 == 0)], np.float32)


def write_session(path, frames, actions, *, source="sim", track="luigi", rate=30.0, driver="expert"):
    h, w = frames[0].shape[:2]
    with SessionWriter(path, {"source": source, "track": track, "resolution": [h, w], "rate_hz": rate}) as sw:
        for k, (f, a) in enumerate(zip(frames, actions, strict=True)):
            sw.append(f, a, driver, t=100.0 + k / rate)
    return path


def game_session(path, n=60, h=120, w=160, start=0):
    frames = [game_image(h, w, start + i) for i in range(n)]
    return write_session(path, frames, [driving_action(start + i) for i in range(n)])

