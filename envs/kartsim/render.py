"""First-person Mode-7 renderer, batched over karts (numba, parallel over rows).

The view is defined on a virtual 4:3 full frame in normalised coordinates
(u across 0..1, v down 0..1), so any output size is a resampling of the same
picture. A full render maps its rows to v in [0, 1]; the model-size render
(66x200) maps its rows to v in [CROP_TOP, 1 - CROP_BOTTOM] of common.frames, i.e.
it draws straight away what ``to_model_input`` keeps of a full frame.

Below the horizon every pixel is a ray hitting the ground plane: its distance
depends only on the row, its sideways offset on the column, so a row is a
straight line through the map texture (classic Mode 7). Distance fog picks one
of ``NFOG`` pre-blended palettes per row. Above the horizon: sky gradient and a
panoramic band (hills, mesas or stars) scrolled by the kart's heading. The kart
sprite is drawn at the bottom centre, leaning with the stick, with drift sparks
and a boost flame.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from common import frames

from . import kart as K
from .physics import BOOST, CHARGE, DDIR, FALL, HOLD, HOP, STEER, TH, X, Y
from .texture import NPAL, THEMES, _hex

V_HORIZON = 0.36  # horizon height in the full frame
TAN_HALF_FOV = math.tan(math.radians(35.0))  # 70 degree horizontal field of view
CAM_H = 3.0  # camera height above the ground
CAM_BACK = 5.5  # camera distance behind the kart
FOG0, FOG1, FOG_MAX = 22.0, 110.0, 0.88
NFOG = 16
MAX_D = 400.0
PANO_W, PANO_H = 1024, 96
# kart sprite rectangle in the full frame (u0, u1, v0, v1)
SPRITE_RECT = (0.405, 0.595, 0.72, 0.90)
SPR_H, SPR_W = 48, 64
FULL_ASPECT = 0.75  # height / width of the virtual full frame


def view_rows_cols(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised v of each output row and u of each column for an output ``size`` (H, W)."""
    h, w = size
    if (h, w) == frames.MODEL_SHAPE[:2]:
        v0, v1 = frames.CROP_TOP, 1.0 - frames.CROP_BOTTOM
    else:
        v0, v1 = 0.0, 1.0
    rows = v0 + (np.arange(h) + 0.5) / h * (v1 - v0)
    cols = (np.arange(w) + 0.5) / w
    return rows, cols


class Theme:
    """Colour tables for one theme: fogged ground palettes, sky panorama, sky palette."""

    def __init__(self, name: str):
        th = THEMES[name]
        base = th["palette"].astype(np.float64)
        haze = np.array(_hex(th["haze"]), float)
        self.ground = np.empty((NFOG, NPAL, 3), np.uint8)
        for f in range(NFOG):
            a = FOG_MAX * f / (NFOG - 1)
            self.ground[f] = np.clip(base * (1 - a) + haze * a + 0.5, 0, 255).astype(np.uint8)
        g = self.ground.astype(np.uint32)
        self.ground32 = g[..., 0] | (g[..., 1] << 8) | (g[..., 2] << 16)  # packed RGB
        self.sky_pal, self.sky = _sky(th)
        self.default_ground = 24 if name == "space" else 16


def _sky(th) -> tuple[np.ndarray, np.ndarray]:
    """Sky palette (rows of gradient, then scenery) and the (PANO_H, PANO_W) panorama."""
    top, hor = np.array(_hex(th["sky"][0]), float), np.array(_hex(th["sky"][1]), float)
    pal = np.zeros((64, 3), np.uint8)
    for i in range(48):
        a = i / 47.0
        pal[i] = np.clip(top * (1 - a) + hor * a, 0, 255)
    scen = np.array(_hex(th["scenery"]), float)
    pal[48] = scen
    pal[49] = np.clip(scen * 0.8, 0, 255)
    pal[50] = (235, 235, 255)  # star / cloud
    rows = np.arange(PANO_H)[:, None]
    grad = (rows * 47 // (PANO_H - 1)).astype(np.uint8)
    pano = np.repeat(grad, PANO_W, axis=1)
    ang = np.arange(PANO_W) / PANO_W * 2 * np.pi
    rng = np.random.default_rng(7)
    if th["hills"] == "stars":
        ys, xs = rng.integers(0, PANO_H, 260), rng.integers(0, PANO_W, 260)
        pano[ys, xs] = 50
        height = 0.06 + 0.03 * np.sin(3 * ang) + 0.02 * np.sin(7 * ang + 1.0)
        height *= 0.5
    elif th["hills"] == "mesa":
        height = 0.10 + 0.06 * (np.sin(2 * ang + 0.5) > 0.3) + 0.05 * (np.sin(5 * ang + 2) > 0.6)
    else:
        height = 0.08 + 0.04 * np.sin(3 * ang) + 0.025 * np.sin(8 * ang + 1.3) + 0.012 * np.sin(19 * ang)
        for _ in range(6):  # a few clouds
            cx, cy = rng.integers(0, PANO_W), rng.integers(10, PANO_H // 2)
            pano[cy:cy + 4, cx:cx + 30] = 50
    height = (height / V_HORIZON * PANO_H).astype(int)
    for x in range(PANO_W):
        hgt = height[x]
        pano[PANO_H - hgt:, x] = 48
        pano[PANO_H - max(1, hgt // 5):, x] = 49
    return pal, pano


def _sprites() -> np.ndarray:
    """Kart sprites (3 leans x 4 effects, SPR_H x SPR_W RGBA): body, driver, wheels."""
    out = np.zeros((3, 4, SPR_H, SPR_W, 4), np.uint8)
    yy, xx = np.mgrid[0:SPR_H, 0:SPR_W]
    for lean in range(3):
        sh = (lean - 1) * 4  # lean left/right: shift the top of the kart
        img = np.zeros((SPR_H, SPR_W, 4), np.uint8)

        def box(x0, x1, y0, y1, col, shear=0.0, img=img):
            xs = xx - (shear * (SPR_H - yy) / SPR_H)
            m = (xs >= x0) & (xs < x1) & (yy >= y0) & (yy < y1)
            img[m, :3] = col
            img[m, 3] = 255

        box(6, 18, 30, 46, (20, 20, 20))  # rear wheels
        box(46, 58, 30, 46, (20, 20, 20))
        box(12, 52, 24, 42, (210, 30, 30), sh)  # body
        box(16, 48, 38, 44, (90, 90, 95))  # bumper
        box(22, 42, 8, 26, (40, 60, 200), sh)  # driver
        box(24, 40, 0, 12, (230, 40, 40), sh * 1.4)  # cap
        box(28, 36, 40, 46, (60, 60, 60))  # exhaust
        for eff in range(4):
            e = img.copy()
            if eff in (1, 2):  # drift smoke / mini-turbo sparks at the rear wheels
                col = (235, 235, 235) if eff == 1 else (255, 150, 30)
                for x0 in (2, 54):
                    m = (xx >= x0) & (xx < x0 + 8) & (yy >= 40) & ((xx + yy) % 3 == 0)
                    e[m, :3] = col
                    e[m, 3] = 255
            if eff == 3:  # boost flame
                m = (xx >= 26) & (xx < 38) & (yy >= 44)
                e[m, :3] = (90, 170, 255)
                e[m, 3] = 255
            out[lean, eff] = e
    return out.reshape(12, SPR_H, SPR_W, 4)


SPRITES = _sprites()


@nb.njit(fastmath=True, cache=True)
def _draw_row(job, out, cam, tex, tox, toy, inv_cell, default_idx, ground, ground32, row_v, col_u, row_d, row_fog,
              col_l, col_a, sky, sky_pal, sprites, spr_rect):
    """Row ``job % H`` of kart ``job // H``: ground or sky, then the kart sprite."""
    h, w = out.shape[1], out.shape[2]
    th_, tw_ = tex.shape
    ph, pw = sky.shape
    n = job // h
    r = job - n * h
    cx, cy, hd = cam[n, 0], cam[n, 1], cam[n, 2]
    fx, fy = np.cos(hd), np.sin(hd)
    v = row_v[r]
    if row_d[r] > 0.0:
        d = row_d[r]
        f = row_fog[r]
        bx = (cx + fx * d - tox) * inv_cell
        by = (cy + fy * d - toy) * inv_cell
        # the camera's right is the forward vector turned clockwise
        rx = fy * d * inv_cell
        ry = -fx * d * inv_cell
        # a row is a straight segment through the texture: step along it
        px = bx + rx * col_l[0]
        py = by + ry * col_l[0]
        dl = col_l[1] - col_l[0] if w > 1 else 0.0
        dpx = rx * dl
        dpy = ry * dl
        ex = px + dpx * (w - 1)
        ey = py + dpy * (w - 1)
        orow = out[n, r]
        gpal = ground[f]
        if (0.0 <= px < tw_ and 0.0 <= py < th_ and 0.0 <= ex < tw_ and 0.0 <= ey < th_):
            gp32 = ground32[f]
            for c in range(w):  # whole row inside the map: no bounds checks
                q = gp32[tex[int(py), int(px)]]  # one load for the three channels
                orow[c, 0] = q & 0xFF
                orow[c, 1] = (q >> 8) & 0xFF
                orow[c, 2] = (q >> 16) & 0xFF
                px += dpx
                py += dpy
        else:
            for c in range(w):
                p = default_idx
                if 0.0 <= px < tw_ and 0.0 <= py < th_:
                    p = tex[int(py), int(px)]
                orow[c, 0] = gpal[p, 0]
                orow[c, 1] = gpal[p, 1]
                orow[c, 2] = gpal[p, 2]
                px += dpx
                py += dpy
    else:
        py = min(ph - 1, max(0, int(v / (spr_rect[4]) * ph)))
        base = -hd / (2.0 * np.pi) * pw
        for c in range(w):
            px = int(base + col_a[c] * pw) % pw
            p = sky[py, px]
            out[n, r, c, 0] = sky_pal[p, 0]
            out[n, r, c, 1] = sky_pal[p, 1]
            out[n, r, c, 2] = sky_pal[p, 2]
    # kart sprite
    sv0 = spr_rect[2] + cam[n, 4]
    sv1 = spr_rect[3] + cam[n, 4]
    if sv0 <= v < sv1:
        si = int(cam[n, 3])
        sh, sw = sprites.shape[1], sprites.shape[2]
        yy = int((v - sv0) / (sv1 - sv0) * sh)
        for c in range(w):
            u = col_u[c]
            if spr_rect[0] <= u < spr_rect[1]:
                xx = int((u - spr_rect[0]) / (spr_rect[1] - spr_rect[0]) * sw)
                if sprites[si, yy, xx, 3] > 0:
                    out[n, r, c, 0] = sprites[si, yy, xx, 0]
                    out[n, r, c, 1] = sprites[si, yy, xx, 1]
                    out[n, r, c, 2] = sprites[si, yy, xx, 2]


@nb.njit(parallel=True, fastmath=True, cache=True)
def render_batch(out, cam, tex, tox, toy, inv_cell, default_idx, ground, ground32, row_v, col_u, row_d, row_fog,
                 col_l, col_a, sky, sky_pal, sprites, spr_rect):
    """Draw every kart's view into ``out`` (N, H, W, 3), rows in parallel.

    ``cam`` rows: camera x, y, heading, sprite index, sprite vertical shift."""
    for job in nb.prange(out.shape[0] * out.shape[1]):
        _draw_row(job, out, cam, tex, tox, toy, inv_cell, default_idx, ground, ground32, row_v, col_u, row_d, row_fog, col_l, col_a, sky, sky_pal, sprites, spr_rect)


@nb.njit(fastmath=True, cache=True)
def render_serial(out, cam, tex, tox, toy, inv_cell, default_idx, ground, ground32, row_v, col_u, row_d, row_fog,
                 col_l, col_a, sky, sky_pal, sprites, spr_rect):
    """``render_batch`` on this thread: for small batches (one kart of MultiTrackBatch), where
    starting a parallel region costs more than the rows, and numba's TBB layer, called tens of
    thousands of times in a row on tiny regions, gets slower with every call (0.08 -> 1.6 ms)."""
    for job in range(out.shape[0] * out.shape[1]):
        _draw_row(job, out, cam, tex, tox, toy, inv_cell, default_idx, ground, ground32, row_v, col_u, row_d, row_fog, col_l, col_a, sky, sky_pal, sprites, spr_rect)


SERIAL_PIXELS = 50_000  # batches with fewer pixels than this render on the calling thread


class Renderer:
    """Precomputed per-size tables for one track; ``draw(fs, ist, out)`` renders all karts."""

    def __init__(self, track, size: tuple[int, int]):
        self.track = track
        self.size = (int(size[0]), int(size[1]))
        self.theme = Theme(track.theme)
        rows, cols = view_rows_cols(self.size)
        self.row_v, self.col_u = rows, cols
        slope = (rows - V_HORIZON) * FULL_ASPECT * 2 * TAN_HALF_FOV
        with np.errstate(divide="ignore"):
            d = np.where(slope > 1e-6, CAM_H / np.maximum(slope, 1e-9), -1.0)
        self.row_d = np.where(d > 0, np.minimum(d, MAX_D), -1.0)
        fog = np.clip((self.row_d - FOG0) / (FOG1 - FOG0), 0, 1) * (NFOG - 1)
        self.row_fog = np.round(fog).astype(np.int64)
        self.col_l = (cols - 0.5) * 2 * TAN_HALF_FOV
        self.col_a = np.arctan(self.col_l) / (2 * np.pi)
        from .track import CELL

        self.inv_cell = 1.0 / CELL
        self.rect = np.array([*SPRITE_RECT, V_HORIZON], np.float64)

    def cameras(self, fs, ist) -> np.ndarray:
        n = fs.shape[0]
        cam = np.empty((n, 5), np.float64)
        th = fs[:, TH]
        cam[:, 0] = fs[:, X] - np.cos(th) * CAM_BACK
        cam[:, 1] = fs[:, Y] - np.sin(th) * CAM_BACK
        cam[:, 2] = th
        lean = np.where(fs[:, STEER] < -0.3, 0, np.where(fs[:, STEER] > 0.3, 2, 1))
        eff = np.where(fs[:, BOOST] > 0, 3, np.where(ist[:, DDIR] != 0, np.where(fs[:, CHARGE] >= K.MT_CHARGE, 2, 1), 0))
        cam[:, 3] = lean * 4 + eff
        hop = np.where(fs[:, HOP] > 0, np.sin(np.pi * (1 - fs[:, HOP] / K.HOP_TIME)) * -0.04, 0.0)
        sink = np.where(fs[:, FALL] > 0, (1 - fs[:, FALL] / K.FALL_TIME) * 0.3, 0.0)
        sink = np.where(fs[:, HOLD] > 0, fs[:, HOLD] / K.RESPAWN_HOLD * -0.2, sink)
        cam[:, 4] = hop + sink
        return cam

    def draw(self, fs, ist, out) -> np.ndarray:
        t = self.track
        kernel = render_serial if out.shape[0] * out.shape[1] * out.shape[2] < SERIAL_PIXELS else render_batch
        kernel(out, self.cameras(fs, ist), t.tex, t.origin[0], t.origin[1], self.inv_cell,
                     self.theme.default_ground, self.theme.ground, self.theme.ground32, self.row_v, self.col_u, self.row_d,
                     self.row_fog, self.col_l, self.col_a, self.theme.sky, self.theme.sky_pal, SPRITES,
                     self.rect)
        return out
