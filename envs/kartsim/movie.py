"""Input movies (one action per frame) and the planned-lap cache.

A movie is a JSON object (never a pickle)::

    {"kind": "kartsim-movie", "version": 1,
     "track": "rainbow" | "path/to/track.json" | "gen:7:void",
     "track_hash": "<sha256 of the track's validated spec>",
     "seed": 0, "laps": 3, "fps": 30,
     "lap_times": [...], "best_lap_s": ..., "race_time_s": ..., "falls": 0, "mini_turbos": 41,
     "frames": N, "actions": [[x, y, a, b, rb], ...],        # N rows, float32 values
     "made_by": {"planner": {...settings...}, "plan_time_s": ...}}

``lap_times`` are the exact game times (multiples of 1/30 s as the sim sums
them); replaying the actions in ``envs.kartsim.make(track, seed=seed, laps=laps)``
gives them again, bit for bit. The track hash ties a movie to one version of
its track: replaying against a changed track is refused, naming the movie.

The plan cache (``tracks --json``'s ``planned_best_lap_s``) keeps, per track
hash, the best verified movie found so far, as ``<hash>.json`` (a movie) in
``$KARTSIM_PLAN_CACHE`` or ``data/kartsim_plans/`` at the repository root.
Every file is written to a temporary sibling, fsynced and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from common.action import HIGH, LOW
from common.atomic import write_text

from .splits import SECTORS, LapStyle, SplitTimer

KIND = "kartsim-movie"
VERSION = 1
CACHE_ENV = "KARTSIM_PLAN_CACHE"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "data" / "kartsim_plans"


class MovieError(ValueError):
    """A movie file that cannot be used; the message names the file."""


def track_hash(track) -> str:
    """sha256 of a track's validated spec (a built-in name, a path, a ``gen:`` name or a Track)."""
    from .track import load

    t = track if hasattr(track, "spec") else load(track)
    text = json.dumps(t.spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def write_json_atomic(path: str | os.PathLike, obj: dict) -> Path:
    """Write ``obj`` as JSON through ``common.atomic`` (temp sibling, fsync, rename)."""
    write_text(path, json.dumps(obj, separators=(",", ":")))
    return Path(path)


def make_movie(result: dict, track: str) -> dict:
    """A movie from ``planner.plan_race``'s result."""
    acts = np.asarray(result["actions"], np.float32).reshape(-1, 5)
    return {"kind": KIND, "version": VERSION, "track": str(track), "track_hash": track_hash(track),
            "seed": int(result["seed"]), "laps": int(result["laps"]), "fps": 30,
            "lap_times": [float(t) for t in result["lap_times"]], "best_lap_s": result["best_lap_s"],
            "race_time_s": float(result["race_time_s"]), "falls": int(result["falls"]),
            "mini_turbos": int(result["mini_turbos"]), "finished": bool(result["finished"]),
            "frames": int(len(acts)), "actions": [[float(v) for v in row] for row in acts],
            "made_by": {"planner": result.get("planner"), "plan_time_s": result.get("plan_time_s")}}


def check_movie_target(path: str | os.PathLike) -> None:
    """A movie may replace only a movie: refuse a path that holds anything else (MovieError naming it)."""
    path = Path(path)
    if path.is_dir():
        raise MovieError(f"{path}: is a folder, not a movie file")
    if path.exists():
        try:
            kind = json.loads(path.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != KIND:
            raise MovieError(f"{path}: exists and is not a kartsim movie; not overwriting it")


def save_movie(path: str | os.PathLike, movie: dict) -> Path:
    check_movie_target(path)
    return write_json_atomic(path, movie)


def _field(src, movie, name, kind):
    if name not in movie:
        raise MovieError(f"{src}: field '{name}' is missing")
    v = movie[name]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise MovieError(f"{src}: field '{name}': expected an integer, got {v!r}")
    if kind is str and not isinstance(v, str):
        raise MovieError(f"{src}: field '{name}': expected a string, got {v!r}")
    if kind is list and not isinstance(v, list):
        raise MovieError(f"{src}: field '{name}': expected a list, got {type(v).__name__}")
    return v


def load_movie(path: str | os.PathLike) -> dict:
    """Read and check a movie; ``movie["actions"]`` becomes a (frames, 5) float32 array."""
    src = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"movie file not found: {src}") from None
    try:
        movie = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MovieError(f"{src}: not valid JSON: {exc}") from exc
    if not isinstance(movie, dict) or movie.get("kind") != KIND:
        raise MovieError(f"{src}: not a kartsim movie (expected \"kind\": \"{KIND}\")")
    if movie.get("version") != VERSION:
        raise MovieError(f"{src}: field 'version': {movie.get('version')!r}, this kartsim reads version {VERSION}")
    _field(src, movie, "track", str)
    _field(src, movie, "track_hash", str)
    _field(src, movie, "seed", int)
    laps = _field(src, movie, "laps", int)
    if laps < 1:
        raise MovieError(f"{src}: field 'laps': must be >= 1, got {laps}")
    rows = _field(src, movie, "actions", list)
    try:
        acts = np.array(rows, np.float64)
    except (TypeError, ValueError):
        raise MovieError(f"{src}: field 'actions': expected a list of [x, y, a, b, rb] rows") from None
    if acts.ndim != 2 or acts.shape[1] != 5:
        raise MovieError(f"{src}: field 'actions': expected rows of 5 numbers, got shape {acts.shape}")
    bad = ~np.isfinite(acts).all(1) | (acts < LOW).any(1) | (acts > HIGH).any(1)
    if bad.any():
        raise MovieError(f"{src}: field 'actions[{int(np.argmax(bad))}]': not finite or out of range")
    movie["actions"] = acts.astype(np.float32)
    times = movie.get("lap_times", [])
    if not isinstance(times, list) or not all(isinstance(t, (int, float)) and math.isfinite(t) for t in times):
        raise MovieError(f"{src}: field 'lap_times': expected a list of numbers")
    return movie


def check_track(movie: dict, src: str, track: str | None = None) -> str:
    """The track to replay on (``track`` or the movie's), refused when its hash differs."""
    name = track or movie["track"]
    got = track_hash(name)
    if got != movie["track_hash"]:
        raise MovieError(f"{src}: made on another version of track {name!r} (track hash {movie['track_hash'][:12]}..., "
                         f"the track now hashes to {got[:12]}...): it would not replay the same")
    return name


def replay(movie: dict, track: str | None = None, src: str = "<movie>", size=(8, 8), sectors: int = SECTORS) -> dict:
    """Feed the movie's actions to a plain ``make(track, seed=seed, laps=laps)`` env, one per frame; with
    the best lap's split times over ``sectors`` stretches of the lap (``splits.SplitTimer``)."""
    from . import make

    name = check_track(movie, src, track)
    env = make(name, size=size, seed=movie["seed"], laps=movie["laps"])
    _, info = env.reset()
    used = 0
    timer, style = SplitTimer(sectors), LapStyle()
    for a in movie["actions"]:
        _, _, term, trunc, info = env.step(a)
        timer.see(info)
        style.see(info, env.unwrapped.position(), env.unwrapped.inside_edge())
        used += 1
        if term or trunc:
            break
    env.close()
    times = [float(t) for t in info["lap_times"]]
    return {"track": name, "seed": movie["seed"], "laps": movie["laps"], "frames": used,
            "lap_times": times, "best_lap_s": min(times) if times else None,
            "race_time_s": float(info["race_time"]), "finished": bool(info["finished"]),
            "falls": int(info["falls"]), "mini_turbos": int(info["mini_turbos"]),
            "matches": times == [float(t) for t in movie.get("lap_times", [])], "sectors": timer.best(times),
            "style": style.best(times)}


# -- the planned-lap cache ----------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def cached_plan(track) -> dict | None:
    """The cached best movie of this version of ``track`` (None if there is none or it is unreadable)."""
    path = cache_dir() / f"{track_hash(track)}.json"
    if not path.exists():
        return None
    try:
        return load_movie(path)
    except (MovieError, OSError):
        return None


def planned_lap(track) -> float | None:
    """The cached planned best lap of ``track`` in seconds: the reference a learned lap is measured
    against. None where the track was never planned or is no kartsim track (a set's or the emulator's
    label), so callers need not tell those apart."""
    try:
        movie = cached_plan(track)
    except (OSError, ValueError):
        return None
    return None if movie is None or movie.get("best_lap_s") is None else float(movie["best_lap_s"])


def store_plan(movie: dict) -> tuple[Path, bool]:
    """Keep ``movie`` in the cache if its track has none yet or it has a faster best lap."""
    path = cache_dir() / f"{movie['track_hash']}.json"
    old = cached_plan(movie["track"]) if path.exists() else None
    new_best = movie.get("best_lap_s")
    if new_best is None or movie.get("falls", 0) or not movie.get("finished", False):
        return path, False
    if old is not None and old.get("best_lap_s") is not None and old["best_lap_s"] <= new_best:
        return path, False
    out = dict(movie)
    out["actions"] = np.asarray(out["actions"], np.float32).tolist()
    write_json_atomic(path, out)
    return path, True
