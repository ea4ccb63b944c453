"""Tracks as data: load and validate a track JSON, build its geometry and map.

A track file is a JSON object::

    {"name": "luigi",
     "points": [[x, y, width], ...],          # closed centreline, >= 4 points
     "surface": {"offroad": "grass"|"void",    # what lies beside the road
                 "offroad_speed": 0.45,        # grass: speed cap as a fraction
                 "kerb": 0.8},                 # kerb strip width at the road edge
     "theme": "meadow"|"space"|"desert",       # colours only
     "checkpoint_spacing": 20}                 # units between checkpoints

The points are smoothed with a closed Catmull-Rom spline and resampled every
``DS`` units. Driving direction is the order of the points; the start/finish
line is at the first point. Every problem raises :class:`TrackError` naming the
file and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numba as nb
import numpy as np

from .texture import CLASS_OF, THEMES, build_texture

TRACK_DIR = Path(__file__).parent / "tracks"
DS = 0.5  # centreline sample spacing (units)
CELL = 0.25  # map texel size (units)
NEAR_CELL = 1.0  # coarse nearest-sample grid cell
MARGIN = 40.0  # map border beyond the track
OFFROAD_KINDS = ("grass", "void")


class TrackError(ValueError):
    """A track file that cannot be used; the message names the file and field."""


def _err(src: str, fieldname: str, problem: str) -> TrackError:
    return TrackError(f"{src}: field '{fieldname}': {problem}")


def _num(src, fieldname, value, lo=-math.inf, hi=math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(src, fieldname, f"expected a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise _err(src, fieldname, f"{value} is outside [{lo}, {hi}]")
    return float(value)


def validate(spec, src: str) -> dict:
    """Check a parsed track JSON; return it normalised (defaults filled in)."""
    if not isinstance(spec, dict):
        raise _err(src, "<root>", f"expected a JSON object, got {type(spec).__name__}")
    name = spec.get("name", Path(src).stem)
    if not isinstance(name, str) or not name:
        raise _err(src, "name", f"expected a non-empty string, got {name!r}")
    pts = spec.get("points")
    if pts is None:
        raise _err(src, "points", "missing (a list of [x, y, width] centreline points)")
    if not isinstance(pts, list) or len(pts) < 4:
        raise _err(src, "points", "expected a list of at least 4 [x, y, width] points")
    out = []
    for i, p in enumerate(pts):
        if not isinstance(p, (list, tuple)) or len(p) != 3:
            raise _err(src, f"points[{i}]", f"expected [x, y, width], got {p!r}")
        x = _num(src, f"points[{i}][0]", p[0])
        y = _num(src, f"points[{i}][1]", p[1])
        w = _num(src, f"points[{i}][2]", p[2], 2.0, 80.0)
        if out and math.hypot(x - out[-1][0], y - out[-1][1]) < 1e-6:
            raise _err(src, f"points[{i}]", "repeats the previous point")
        out.append((x, y, w))
    surf = spec.get("surface", {})
    if not isinstance(surf, dict):
        raise _err(src, "surface", f"expected an object, got {surf!r}")
    kind = surf.get("offroad", "grass")
    if kind not in OFFROAD_KINDS:
        raise _err(src, "surface.offroad", f"expected one of {OFFROAD_KINDS}, got {kind!r}")
    surface = {
        "offroad": kind,
        "offroad_speed": _num(src, "surface.offroad_speed", surf.get("offroad_speed", 0.45), 0.05, 1.0),
        "kerb": _num(src, "surface.kerb", surf.get("kerb", 0.8), 0.0, 5.0),
    }
    for key in surf:
        if key not in surface:
            raise _err(src, f"surface.{key}", "unknown key (known: offroad, offroad_speed, kerb)")
    theme = spec.get("theme", "space" if kind == "void" else "meadow")
    if theme not in THEMES:
        raise _err(src, "theme", f"expected one of {tuple(THEMES)}, got {theme!r}")
    spacing = _num(src, "checkpoint_spacing", spec.get("checkpoint_spacing", 20.0), 5.0, 500.0)
    return {"name": name, "points": out, "surface": surface, "theme": theme,
            "checkpoint_spacing": spacing, "description": str(spec.get("description", ""))}


def _catmull_rom_closed(p: np.ndarray, per_seg: int = 24) -> np.ndarray:
    """Densely sample a closed Catmull-Rom spline through rows of ``p`` (n, k)."""
    t = np.linspace(0.0, 1.0, per_seg, endpoint=False)[None, :, None]
    p0, p1, p2, p3 = (np.roll(p, k, axis=0)[:, None, :] for k in (1, 0, -1, -2))  # all segments at once
    segs = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
    return segs.reshape(-1, p.shape[1])


def resample_closed(dense: np.ndarray, ds: float) -> tuple[np.ndarray, float]:
    """Resample a closed polyline (rows x, y, extra...) at equal arc-length steps."""
    nxt = np.roll(dense, -1, axis=0)
    seg = np.hypot(nxt[:, 0] - dense[:, 0], nxt[:, 1] - dense[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(cum[-1])
    m = max(8, int(round(length / ds)))
    s = np.arange(m) * (length / m)
    closed = np.vstack([dense, dense[:1]])
    out = np.stack([np.interp(s, cum, closed[:, k]) for k in range(dense.shape[1])], axis=1)
    return out, length


def frame_of(xy: np.ndarray, length: float):
    """Unit tangents, left normals, headings and signed curvature of a closed line."""
    m = len(xy)
    step = length / m
    d1 = (np.roll(xy, -1, 0) - np.roll(xy, 1, 0)) / (2 * step)
    tan = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    nrm = np.stack([-tan[:, 1], tan[:, 0]], axis=1)
    head = np.arctan2(tan[:, 1], tan[:, 0])
    dh = np.angle(np.exp(1j * (np.roll(head, -1) - np.roll(head, 1))))
    kappa = dh / (2 * step)
    return tan, nrm, head, kappa


@nb.njit(cache=True)
def _near_grid(xy, ox, oy, cell, gh, gw, radius):
    """Coarse grid of the nearest centreline sample (-1 beyond ``radius``)."""
    idx = np.full((gh, gw), -1, np.int32)
    best = np.full((gh, gw), radius * radius, np.float32)
    r = int(radius / cell) + 1
    for i in range(xy.shape[0]):
        cx = int((xy[i, 0] - ox) / cell)
        cy = int((xy[i, 1] - oy) / cell)
        for gy in range(max(0, cy - r), min(gh, cy + r + 1)):
            py = oy + (gy + 0.5) * cell - xy[i, 1]
            for gx in range(max(0, cx - r), min(gw, cx + r + 1)):
                px = ox + (gx + 0.5) * cell - xy[i, 0]
                d = px * px + py * py
                if d < best[gy, gx]:
                    best[gy, gx] = d
                    idx[gy, gx] = i
    return idx


@dataclass
class Track:
    """A loaded track: centreline samples, checkpoints, map texture and lookups."""

    name: str
    source: str
    spec: dict
    length: float
    xy: np.ndarray  # (M, 2) centreline samples every length/M units
    width: np.ndarray  # (M,)
    tan: np.ndarray
    nrm: np.ndarray
    heading: np.ndarray
    kappa: np.ndarray
    s: np.ndarray
    void: bool
    offroad_speed: float
    kerb: float
    theme: str
    cp_s: np.ndarray  # checkpoint arc positions (cp 0 = start/finish line)
    cp_idx: np.ndarray
    tex: np.ndarray = field(repr=False)  # (TH, TW) uint8 palette index per texel
    origin: tuple = (0.0, 0.0)
    near: np.ndarray = field(default=None, repr=False)  # coarse nearest-sample grid
    near_origin: tuple = (0.0, 0.0)

    @property
    def ds(self) -> float:
        return self.length / len(self.xy)

    @property
    def mean_width(self) -> float:
        return float(self.width.mean())

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The road's two edges, right then left of the driving direction, as closed (M+1, 2) lines."""
        centre = np.vstack([self.xy, self.xy[:1]])
        half = np.concatenate([self.width, self.width[:1]])[:, None] / 2
        nrm = np.vstack([self.nrm, self.nrm[:1]])
        return centre - half * nrm, centre + half * nrm

    def surface_at(self, x: float, y: float) -> int:
        """Surface class at a point: 0 road, 1 kerb, 3 off-road, 4 void."""
        ix = math.floor((x - self.origin[0]) / CELL)
        iy = math.floor((y - self.origin[1]) / CELL)
        if 0 <= iy < self.tex.shape[0] and 0 <= ix < self.tex.shape[1]:
            return int(CLASS_OF[self.tex[iy, ix]])
        return 4 if self.void else 3


@nb.njit(cache=True)
def _first_overlap(xy, width, step):
    """The first (every 4th sample i, then sample j) pair where the track comes back on itself: closer
    than their mean width + 1 while more than 1.5 x their summed widths + 4 apart along the line;
    (-1, -1) when none."""
    m = len(xy)
    for i in range(0, m, 4):
        for j in range(m):
            w = width[j] + width[i]
            dx, dy = xy[j, 0] - xy[i, 0], xy[j, 1] - xy[i, 1]
            near = w / 2 + 1.0
            if dx * dx + dy * dy < (near + 1e-6) * (near + 1e-6) and math.hypot(dx, dy) < near:
                sep = abs(j - i)
                if min(sep, m - sep) * step > w * 1.5 + 4.0:
                    return i, j
    return -1, -1


def _check_geometry(src: str, xy, width, kappa, length, ctrl_s):
    """Reject self-intersecting tracks and turns tighter than the half width."""
    m = len(xy)

    def at(i):  # nearest control point to sample i, for the message
        return int(np.argmin(np.abs(ctrl_s - i * length / m)))

    tight = np.abs(kappa) * (width / 2) > 0.95
    if tight.any():
        i = int(np.argmax(tight))
        raise _err(src, f"points[{at(i)}]", f"turn radius {1 / abs(kappa[i]):.1f} is tighter than half the width {width[i] / 2:.1f}")
    i, j = _first_overlap(xy, width, length / m)
    if i >= 0:
        raise _err(src, "points", f"the track overlaps itself near points[{at(i)}] and points[{at(j)}]")


def geometry(spec: dict, src: str) -> dict:
    """The smoothed centreline of a validated spec (``xy``, ``width``, ``tan``, ``nrm``,
    ``heading``, ``kappa``, ``length``), after the geometry rules (TrackError if broken)."""
    ctrl = np.array(spec["points"], dtype=np.float64)
    dense = _catmull_rom_closed(ctrl)
    samples, length = resample_closed(dense, DS)
    xy, width = samples[:, :2].copy(), samples[:, 2].copy()
    tan, nrm, head, kappa = frame_of(xy, length)
    # arc position of each control point (for error messages)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(np.vstack([ctrl[:, :2], ctrl[:1, :2]]), axis=0).T))])
    ctrl_s = cum[:-1] * (length / cum[-1])
    _check_geometry(src, xy, width, kappa, length, ctrl_s)
    return {"xy": xy, "width": width, "tan": tan, "nrm": nrm, "heading": head, "kappa": kappa, "length": length}


def build(spec: dict, src: str) -> Track:
    g = geometry(spec, src)
    xy, width, tan, nrm, head, kappa, length = (g[k] for k in ("xy", "width", "tan", "nrm", "heading", "kappa",
                                                               "length"))
    m = len(xy)
    surf = spec["surface"]
    k = max(4, int(round(length / spec["checkpoint_spacing"])))
    cp_s = np.arange(k) * (length / k)
    cp_idx = (np.round(cp_s / (length / m)).astype(np.int64)) % m
    lo = xy.min(0) - width.max() / 2 - MARGIN
    hi = xy.max(0) + width.max() / 2 + MARGIN
    gw, gh = (np.ceil((hi - lo) / NEAR_CELL).astype(int) + 1).tolist()
    near = _near_grid(xy, lo[0], lo[1], NEAR_CELL, gh, gw, float(width.max() / 2 + MARGIN))
    tw, th = (np.ceil((hi - lo) / CELL).astype(int) + 1).tolist()
    s = np.arange(m) * (length / m)
    tex = build_texture(xy, nrm, width, s, length, near, lo[0], lo[1], NEAR_CELL, CELL, th, tw,
                        surf["kerb"], surf["offroad"] == "void", THEMES[spec["theme"]]["pattern"])
    return Track(
        name=spec["name"], source=src, spec=spec, length=length, xy=xy, width=width, tan=tan, nrm=nrm,
        heading=head, kappa=kappa, s=s, void=surf["offroad"] == "void",
        offroad_speed=surf["offroad_speed"], kerb=surf["kerb"], theme=spec["theme"],
        cp_s=cp_s, cp_idx=cp_idx, tex=tex, origin=(float(lo[0]), float(lo[1])), near=near,
        near_origin=(float(lo[0]), float(lo[1])),
    )


def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in TRACK_DIR.glob("*.json")))


def resolve(track: str) -> Path | str:
    """Built-in name or path -> the JSON file (FileNotFoundError naming it); a generated
    track's name (``gen:S[:STYLE]``, see generate.py) is returned as it is."""
    from .generate import is_generated, parse_name

    if is_generated(track):
        parse_name(track)  # GenError (a TrackError) for a malformed name
        return track
    if isinstance(track, os.PathLike) or str(track).endswith(".json") or os.sep in str(track):
        path = Path(track)
    else:
        path = TRACK_DIR / f"{track}.json"
        if not path.exists():
            raise FileNotFoundError(f"unknown track {track!r}: built-ins are {builtin_names()}, or pass a path to a track .json")
    if not path.exists():
        raise FileNotFoundError(f"track file not found: {path}")
    return path


_CACHE: dict = {}


def load(track: str | os.PathLike = "luigi") -> Track:
    """Load (and cache) a built-in track by name or a user's track JSON by path."""
    path = resolve(track)
    if isinstance(path, str):  # generated: the name is the whole source
        from .generate import from_name

        if path not in _CACHE:
            _CACHE[path] = build(validate(from_name(path), path), path)
        return _CACHE[path]
    key = (str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _CACHE:
        src = str(path)
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TrackError(f"{src}: not valid JSON: {exc}") from exc
        _CACHE[key] = build(validate(spec, src), src)
    return _CACHE[key]
