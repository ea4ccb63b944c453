"""Pictures of a track: a first-person frame and a top-down map with the racing line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import kart as K
from .expert import Expert
from .render import Theme
from .sim import KartBatch
from .track import CELL, load


def top_down(track_name: str, max_px: int = 900) -> Image.Image:
    """The map texture seen from above (north up) with the expert's racing line
    coloured by planned speed (blue slow .. red fast), checkpoints and the start."""
    t = load(track_name)
    pal = Theme(t.theme).ground[0]
    f = max(1, int(np.ceil(max(t.tex.shape) / max_px)))
    img = pal[t.tex[::f, ::f]][::-1]  # texture rows go up the map
    im = Image.fromarray(np.ascontiguousarray(img))
    draw = ImageDraw.Draw(im)
    h = img.shape[0]

    def px(p):
        return ((p[0] - t.origin[0]) / CELL / f, h - 1 - (p[1] - t.origin[1]) / CELL / f)

    ex = Expert(t)
    v = ex.vprof
    pts = [px(p) for p in ex.line.xy]
    for i in range(0, len(pts), 2):
        a = min(1.0, max(0.0, (v[i] - 8.0) / (K.VBOOST - 8.0)))
        col = (int(255 * a), int(80 + 100 * (1 - abs(2 * a - 1))), int(255 * (1 - a)))
        draw.line([pts[i], pts[(i + 2) % len(pts)]], fill=col, width=3)
    for j, i in enumerate(t.cp_idx):
        x, y = px(t.xy[i])
        r = 5 if j == 0 else 3
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255) if j == 0 else (255, 230, 0),
                     outline=(0, 0, 0))
    zone = np.flatnonzero(ex.dzone != 0)
    for i in zone[::6]:
        x, y = px(ex.line.xy[i])
        draw.point((x, y), fill=(255, 255, 255))
    draw.text((8, 8), f"{t.name}: {t.length:.0f} units, start = white dot, line: blue slow .. red fast, "
              "white dots = drift", fill=(255, 255, 255))
    return im


def first_person(track_name: str, size=(240, 320), seconds: float = 3.0) -> np.ndarray:
    """The expert's view after driving ``seconds`` game seconds from the start."""
    sim = KartBatch(1, track_name, size)
    sim.reset_kart(0, np.random.default_rng(0))
    ex = Expert(sim.track)
    for _ in range(int(seconds * K.FPS)):
        sim.step(ex.actions(sim.fs, sim.ist))
    return sim.render()[0].copy()


def save_views(track_name: str, out: Path, size=(240, 320), seconds: float = 3.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    name = load(track_name).name
    frame = out / f"kartsim_{name}_view.png"
    Image.fromarray(first_person(track_name, size, seconds)).save(frame)
    top = out / f"kartsim_{name}_map.png"
    top_down(track_name).save(top)
    return {"frame": frame, "map": top}


def track_grid(names: list[str], cols: int = 4, cell_px: int = 300) -> Image.Image:
    """A contact sheet of track maps (``top_down`` of each), ``cols`` per row, each captioned."""
    rows = (len(names) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_px, rows * cell_px), (20, 20, 20))
    for i, name in enumerate(names):
        im = top_down(name, max_px=cell_px * 2)
        im.thumbnail((cell_px - 6, cell_px - 6))
        x, y = (i % cols) * cell_px + 3, (i // cols) * cell_px + 3
        sheet.paste(im, (x, y))
        t = load(name)
        ImageDraw.Draw(sheet).text((x + 4, y + cell_px - 20), f"{name}  {t.length:.0f} u  {'void' if t.void else 'grass'}",
                                   fill=(255, 255, 255))
    return sheet
