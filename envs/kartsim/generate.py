"""Procedural tracks: a seeded generator whose every output passes the track rules.

``generate(seed, style)`` returns a track spec (the same JSON object a track
file holds). The same seed and style always give the same track. A candidate
that breaks the rules the loader enforces (self-overlap, a turn tighter than
the half width), or the stricter drivability margins below, is thrown away and
the next candidate of the same seed is drawn, so every seed yields a track.

Shape: the convex hull of a few random points, with the middle of each edge
pushed in (deep: hairpins and inlets; shallow: kinks and chicanes) or out,
smoothed by the loader's spline and scaled up until its tightest turn keeps
the margins (long sweepers where the hull is round, tight corners where it is
sharp). Width, surfaces, kerbs and themes are drawn per track.

``--track gen:S`` (or ``gen:S:grass`` / ``gen:S:void``) names one anywhere a
track is accepted; ``python -m envs.kartsim generate --seed S --out T.json``
writes it to a file.
"""

from __future__ import annotations

import math

import numpy as np

from .track import TrackError, resample_closed

STYLES = ("mixed", "grass", "void")
# Seeds from EVAL_SEED_START on are reserved for measuring generalisation (bench.generalise):
# training tracks are drawn below it, so no evaluation track is ever trained on.
EVAL_SEED_START = 1_000_000
TRAIN_SEEDS = range(0, EVAL_SEED_START)
PREFIX = "gen:"
MAX_TRIES = 400
# Drivability margins, stricter than the loader's rules (which refuse only what
# cannot be driven at all): every turn at least 1.4x the half width in radius
# and at least 9 units, so the expert and a cloned policy can take it.
MAX_KAPPA_HALF_WIDTH = 0.7
MIN_RADIUS = 9.0
SPACING = 10.0  # units between control points
HAIRPIN_P = 0.2  # chance that a hull edge gets a hairpin
MIN_LENGTH, MAX_LENGTH = 450.0, 1250.0  # units of centreline (the built-ins: 649-870)


class GenError(TrackError):
    """A ``gen:`` track name or a style that cannot be understood."""


def parse_name(name: str) -> tuple[int, str]:
    """``gen:S`` or ``gen:S:STYLE`` -> (seed, style)."""
    parts = str(name)[len(PREFIX):].split(":")
    if not str(name).startswith(PREFIX) or not 1 <= len(parts) <= 2 or not parts[0].isdigit():
        raise GenError(f"generated track {name!r}: expected gen:SEED or gen:SEED:STYLE with STYLE one of {STYLES}")
    style = parts[1] if len(parts) == 2 else "mixed"
    if style not in STYLES:
        raise GenError(f"generated track {name!r}: style {style!r} is not one of {STYLES}")
    return int(parts[0]), style


def parse_range(name) -> tuple[range, str] | None:
    """``gen:A-B`` or ``gen:A-B:STYLE`` (a distribution: seeds A..B-1) -> (seeds, style); else None."""
    if not isinstance(name, str) or not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].split(":")
    lo, dash, hi = parts[0].partition("-")
    if not dash:
        return None
    style = parts[1] if len(parts) == 2 else "mixed"
    if len(parts) > 2 or not (lo.isdigit() and hi.isdigit()) or int(hi) <= int(lo) or style not in STYLES:
        raise GenError(f"track distribution {name!r}: expected gen:FIRST-END[:STYLE] with FIRST < END "
                       f"and STYLE one of {STYLES}")
    return range(int(lo), int(hi)), style


def is_generated(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def track_name(seed: int, style: str = "mixed") -> str:
    return f"{PREFIX}{seed}" if style == "mixed" else f"{PREFIX}{seed}:{style}"


def _hull(p: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points, anticlockwise (monotone chain)."""
    pts = sorted(map(tuple, p))

    def half(seq):
        out: list = []
        for q in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(q)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def _loop(rng: np.random.Generator) -> np.ndarray:
    """A closed outline: the hull of random points, each edge's midpoint pushed in or out
    (deep pushes make hairpins and inlets, shallow ones chicanes and kinks)."""
    hull = _hull(rng.uniform(0.0, 100.0, (int(rng.integers(7, 14)), 2)))
    pts = []
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        pts.append(a)
        edge = b - a
        n = np.array([-edge[1], edge[0]])  # points inwards for an anticlockwise hull
        kind = rng.random()
        if kind < HAIRPIN_P and np.hypot(*edge) > 30.0:  # a hairpin: a narrow inlet, in and back out
            t, half = rng.uniform(0.4, 0.6), rng.uniform(0.17, 0.24)
            depth = rng.uniform(0.3, 0.55)
            pts += [a + edge * (t - half), a + edge * t + n * depth, a + edge * (t + half)]
        elif kind < 0.7:  # a bend in or out: kinks, chicanes, bulges
            pts.append(a + edge * rng.uniform(0.35, 0.65) + n * rng.uniform(-0.1, 0.4))
        else:
            pts.append(a + edge * rng.uniform(0.35, 0.65))
    return np.array(pts)


def _round_corners(p: np.ndarray, times: int) -> np.ndarray:
    """Chaikin corner cutting of a closed polygon: each pass rounds every corner further."""
    for _ in range(times):
        q = np.roll(p, -1, axis=0)
        p = np.stack([0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q], axis=1).reshape(-1, 2)
    return p


def _controls(dense: np.ndarray) -> np.ndarray:
    """Evenly spaced control points along a closed line (no spline kinks where points bunch up)."""
    dense, length = resample_closed(dense, 1.0)
    m = max(16, int(round(length / SPACING)))
    return dense[np.round(np.arange(m) * len(dense) / m).astype(int) % len(dense)]


def _candidate(rng: np.random.Generator, seed: int, style: str) -> dict | None:
    """One try at a track: an outline, smoothed, scaled up until its tightest turn keeps the
    drivability margins. None when that makes it too long (the caller draws again)."""
    from .track import DS, _catmull_rom_closed, frame_of

    void = rng.random() < 0.5 if style == "mixed" else style == "void"
    width = rng.uniform(9.0, 14.0) if void else rng.uniform(9.0, 17.0)
    outline = _round_corners(_loop(rng), int(rng.integers(4, 7)))
    dense, length = resample_closed(_catmull_rom_closed(outline, per_seg=32), 1.0)
    scale = MIN_LENGTH / length
    for _ in range(4):  # scale until the loader's own spline through the control points keeps the margins
        xy = _controls(dense * scale)
        fine, flen = resample_closed(_catmull_rom_closed(xy), DS)
        kmax = float(np.abs(frame_of(fine, flen)[3]).max())
        need = max(kmax * 1.15 * width / 2 / (0.95 * MAX_KAPPA_HALF_WIDTH), kmax * MIN_RADIUS / 0.95)
        if need <= 1.0:
            break
        scale *= need
        if length * scale > MAX_LENGTH:
            return None
    m = len(xy)
    w = width * (1 + rng.uniform(0.0, 0.15) * np.cos(2 * math.pi * np.arange(m) / m * int(rng.integers(1, 4))
                                                    + rng.uniform(0, 2 * math.pi)))
    pts = np.column_stack([xy, w])
    if rng.random() < 0.5:  # clockwise or anticlockwise
        pts = pts[::-1]
    pts = np.roll(pts, -int(rng.integers(m)), axis=0)  # the start line anywhere
    pts[:, :2] -= pts[:, :2].min(axis=0) - 10.0  # positive coordinates, like the built-ins
    theme = "space" if void else ("meadow", "desert")[int(rng.integers(2))]
    return {
        "name": track_name(seed, style),
        "description": f"generated track, seed {seed}, style {style}",
        "points": [[round(float(a), 2), round(float(b), 2), round(float(c), 2)] for a, b, c in pts],
        "surface": {"offroad": "void" if void else "grass",
                    "offroad_speed": round(float(rng.uniform(0.35, 0.55)), 2),
                    "kerb": round(float(rng.uniform(0.5, 1.0)), 2)},
        "theme": theme,
        "checkpoint_spacing": 20,
    }


def drivable(spec: dict, src: str) -> bool:
    """True when the loader accepts ``spec`` and its turns keep the drivability margins."""
    from .track import geometry, validate

    try:
        geo = geometry(validate(spec, src), src)
    except TrackError:
        return False
    kappa = np.abs(geo["kappa"])
    return bool((kappa * geo["width"] / 2).max() <= MAX_KAPPA_HALF_WIDTH and kappa.max() <= 1.0 / MIN_RADIUS)


def generate(seed: int, style: str = "mixed") -> dict:
    """The track spec of ``seed`` in ``style`` (``mixed``, ``grass`` or ``void``)."""
    if style not in STYLES:
        raise GenError(f"style {style!r} is not one of {STYLES}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GenError(f"seed must be a non-negative integer, got {seed!r}")
    for attempt in range(MAX_TRIES):
        spec = _candidate(np.random.default_rng([int(seed), attempt]), int(seed), style)
        if spec is not None and drivable(spec, spec["name"]):
            spec["attempt"] = attempt
            return spec
    raise GenError(f"no drivable track for seed {seed} in {MAX_TRIES} candidates")  # never seen in tests


def from_name(name: str) -> dict:
    """The spec of a ``gen:S[:STYLE]`` track name."""
    seed, style = parse_name(name)
    return generate(seed, style)


def generated_tracks(seeds, style: str = "mixed"):
    """A track sampler for ``VecKartSim(track_sampler=...)``: a uniformly drawn seed of ``seeds``."""
    seeds = list(seeds)
    if not seeds:
        raise GenError("generated_tracks needs at least one seed")

    def sample(rng: np.random.Generator) -> str:
        return track_name(int(seeds[int(rng.integers(len(seeds)))]), style)

    return sample
