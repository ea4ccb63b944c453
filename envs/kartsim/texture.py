"""The track map texture: one palette index per texel, and the theme palettes.

The texture stores *what* a texel is (road speckle, kerb, centre dash, start
line, off-road stripe, void, star...) as a palette index; ``CLASS_OF`` maps an
index to its surface class, and each theme maps indices to colours. Patterns
that move past the camera (kerb stripes, dashes, grass stripes) make speed
visible; road, off-road and void get clearly different colours.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# surface classes
ROAD, KERB, OFFROAD, VOID = 0, 1, 3, 4

# palette index layout
P_ROAD = 0  # 0..3 asphalt speckle
P_KERB = 8  # 8, 9 alternating kerb colours
P_DASH = 10  # centre dashes
P_START = 11  # 11, 12 chequered start/finish line
P_RAINBOW = 32  # 32..55: 12 hue bands x (middle, edge)
P_OFF = 16  # 16..19 off-road: stripe x speckle
P_VOID = 24  # 24 void, 25 star
NPAL = 64

CLASS_OF = np.full(NPAL, ROAD, np.uint8)
CLASS_OF[P_KERB:P_KERB + 2] = KERB
CLASS_OF[P_OFF:P_OFF + 4] = OFFROAD
CLASS_OF[P_VOID:P_VOID + 2] = VOID

PATTERN_PLAIN, PATTERN_RAINBOW = 0, 1


def _hex(c: str) -> tuple[int, int, int]:
    return tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))


def _palette(road, kerb, dash, off, void, rainbow=False) -> np.ndarray:
    pal = np.zeros((NPAL, 3), np.float64)
    r = np.array(_hex(road), float)
    for i, f in enumerate((1.0, 0.93, 1.07, 0.97)):
        pal[P_ROAD + i] = r * f
    pal[P_KERB], pal[P_KERB + 1] = _hex(kerb[0]), _hex(kerb[1])
    pal[P_DASH] = _hex(dash)
    pal[P_START], pal[P_START + 1] = (245, 245, 245), (25, 25, 25)
    o1, o2 = np.array(_hex(off[0]), float), np.array(_hex(off[1]), float)
    pal[P_OFF], pal[P_OFF + 1], pal[P_OFF + 2], pal[P_OFF + 3] = o1, o1 * 0.94, o2, o2 * 0.94
    pal[P_VOID], pal[P_VOID + 1] = _hex(void), (200, 200, 235)
    if rainbow:
        import colorsys

        for h in range(12):
            rgb = np.array(colorsys.hsv_to_rgb(h / 12.0, 0.55, 0.95)) * 255
            pal[P_RAINBOW + 2 * h] = rgb
            pal[P_RAINBOW + 2 * h + 1] = rgb * 0.75 + 255 * 0.25
    else:
        pal[P_RAINBOW:P_RAINBOW + 24] = r
    return np.clip(pal, 0, 255)


# sky: top colour, horizon colour, scenery colour (hills/mesas), haze for fog, scenery kind
THEMES = {
    "meadow": {
        "pattern": PATTERN_PLAIN,
        "palette": _palette("#6b6b72", ("#d42a2a", "#f2f2f2"), "#f0f0f0", ("#3f9a3a", "#4fae44"), "#3f9a3a"),
        "sky": ("#3d7fd9", "#a9d2f5"), "scenery": "#3c7d3a", "haze": "#b8d6ee", "hills": "round",
    },
    "space": {
        "pattern": PATTERN_RAINBOW,
        "palette": _palette("#c0c0c0", ("#ffffff", "#ffffff"), "#ffffff", ("#0b0b26", "#0b0b26"), "#080820", rainbow=True),
        "sky": ("#02020c", "#141438"), "scenery": "#1c1c4a", "haze": "#0c0c2a", "hills": "stars",
    },
    "desert": {
        "pattern": PATTERN_PLAIN,
        "palette": _palette("#75665c", ("#f2c230", "#222222"), "#f5e6b0", ("#d8b26e", "#e4c283"), "#d8b26e"),
        "sky": ("#e0823c", "#f6d39a"), "scenery": "#a4573a", "haze": "#f0cfa0", "hills": "mesa",
    },
}


@nb.njit(cache=True)
def _hash(ix, iy):
    h = (ix * 73856093) ^ (iy * 19349663)
    h = (h ^ (h >> 13)) * 1274126177
    return (h ^ (h >> 16)) & 0xFFFF


@nb.njit(cache=True)
def build_texture(xy, nrm, width, s, length, near, ox, oy, near_cell, cell, th, tw, kerb, void, pattern):
    """Classify every texel by its nearest centreline sample (refined around the
    coarse grid's guess) and give it a palette index."""
    tex = np.empty((th, tw), np.uint8)
    m = xy.shape[0]
    gh, gw = near.shape
    for iy in range(th):
        y = oy + (iy + 0.5) * cell
        for ix in range(tw):
            x = ox + (ix + 0.5) * cell
            gx = int((x - ox) / near_cell)
            gy = int((y - oy) / near_cell)
            g = -1
            if 0 <= gx < gw and 0 <= gy < gh:
                g = near[gy, gx]
            h = _hash(ix, iy)
            if g < 0:
                far = True
            else:
                best = 1e30
                bi = g
                for k in range(-8, 9):
                    i = (g + k) % m
                    dx = x - xy[i, 0]
                    dy = y - xy[i, 1]
                    dd = dx * dx + dy * dy
                    if dd < best:
                        best = dd
                        bi = i
                d = (x - xy[bi, 0]) * nrm[bi, 0] + (y - xy[bi, 1]) * nrm[bi, 1]
                half = width[bi] * 0.5
                ad = abs(d)
                far = ad > half
            if far:
                if void:
                    tex[iy, ix] = P_VOID + (1 if h % 211 == 0 else 0)
                else:
                    stripe = (int(np.floor(x / 6.0)) + int(np.floor(y / 6.0))) & 1
                    tex[iy, ix] = P_OFF + 2 * stripe + (1 if (h & 7) == 0 else 0)
                continue
            si = s[bi]
            if ad > half - kerb:
                tex[iy, ix] = P_KERB + (int(si / 1.5) & 1)
            elif si < 1.5 or si > length - 0.5:
                tex[iy, ix] = P_START + ((int((si + 1.0) * 1.5) + int((d + 100.0) * 1.5)) & 1)
            elif pattern == PATTERN_RAINBOW:
                band = int(si / 4.0) % 12
                edge = 1 if ad > half - kerb - 0.6 else 0
                tex[iy, ix] = P_RAINBOW + 2 * band + edge
            elif ad < 0.18 and (si % 6.0) < 3.0:
                tex[iy, ix] = P_DASH
            else:
                tex[iy, ix] = P_ROAD + (h & 3)
    return tex
