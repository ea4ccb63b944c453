"""python -m envs.kartsim {play,tracks,expert,bench,render,generate}: the simulator's command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW like 66x200 or 240x320, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small")
    return h, w


def cmd_tracks(args) -> dict:
    from . import TRACKS, load, lower_bound_s

    names = list(TRACKS) + [t for t in args.track or [] if t not in TRACKS]
    rows = []
    for name in names:
        t = load(name)
        rows.append({"name": t.name if name in TRACKS else name, "length": round(t.length, 1),
                     "width": round(t.mean_width, 1), "offroad": "void" if t.void else "grass",
                     "checkpoints": len(t.cp_s), "lower_bound_s": lower_bound_s(name),
                     "held_out": name == "twisty", "description": t.spec.get("description", "")})
    if not args.json:
        for r in rows:
            print(f"{r['name']:10s} length {r['length']:7.1f}  width {r['width']:5.1f}  {r['offroad']:5s}  "
                  f"lower bound {r['lower_bound_s']:6.2f} s  {r['description']}")
    return {"tracks": rows}


def cmd_expert(args) -> dict:
    from .expert import run_expert

    out = run_expert(args.track, args.laps, args.seed, progress=not args.json)
    if not args.json:
        print(f"{out['track']}: {out['laps']} laps {out['lap_times']} best {out['best_lap_s']} s, "
              f"falls {out['falls']}, lower bound {out['lower_bound_s']} s")
    return out


def cmd_bench(args) -> dict:
    import numba

    from common.machine import machine_info, machine_line

    from .vector import VecKartSim

    print(machine_line(), flush=True)
    vec = VecKartSim(args.envs, args.track, args.size, seed=0, copy=False)
    vec.reset()
    rng = np.random.default_rng(0)
    acts = np.zeros((64, args.envs, 5), np.float32)
    acts[..., 0] = rng.uniform(-0.6, 0.6, acts.shape[:2])
    acts[..., 2] = 1.0
    for i in range(10):  # warm-up (JIT from cache, caches)
        vec.step(acts[i % 64])
    rates, cpu_rates = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.steps):
            vec.step(acts[i % 64])
        rates.append(args.envs * args.steps / (time.perf_counter() - t0))
        cpu_rates.append(args.envs * args.steps / max(time.process_time() - c0, 1e-9))
    # steps_per_cpu_s: per second of CPU used (all threads), less sensitive to other load
    out = {"bench": "kartsim", "machine": machine_info(), "envs": args.envs, "size": f"{args.size[0]}x{args.size[1]}", "track": args.track, "steps": args.steps,
           "steps_per_s": round(max(rates), 1), "steps_per_s_runs": [round(r, 1) for r in rates],
           "steps_per_cpu_s": round(max(cpu_rates), 1), "threads": numba.get_num_threads()}
    if not args.json:
        print(f"{args.envs} envs at {out['size']} on {args.track}: {out['steps_per_s']:.0f} env steps/s "
              f"(physics + rendering; best of {args.repeat})")
    return out


def cmd_render(args) -> dict:
    from .top_down import save_views

    paths = save_views(args.track, Path(args.out), args.size, args.seconds)
    if not args.json:
        for p in paths.values():
            print(p)
    return {"track": args.track, **{k: str(v) for k, v in paths.items()}}


def cmd_generate(args) -> dict:
    import os

    from .generate import generate, track_name
    from .track import geometry, validate

    seeds = list(range(args.seed, args.seed + args.count))
    out: dict = {"style": args.style, "tracks": []}
    if args.out:
        if args.count != 1:
            raise ValueError("--out writes one track: use it without --count")
        spec = generate(args.seed, args.style)
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(spec, indent=1))
        os.replace(tmp, path)  # never a half-written track file
        out["out"] = str(path)
    for s in seeds:
        name = track_name(s, args.style)
        geo = geometry(validate(generate(s, args.style), name), name)
        row = {"name": name, "seed": s, "length": round(float(geo["length"]), 1),
               "width": round(float(geo["width"].mean()), 1),
               "offroad": generate(s, args.style)["surface"]["offroad"]}
        out["tracks"].append(row)
        if not args.json:
            print(f"{name:14s} length {row['length']:7.1f}  width {row['width']:5.1f}  {row['offroad']}")
    if args.picture:
        from .top_down import track_grid

        Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
        track_grid([track_name(s, args.style) for s in seeds]).save(args.picture)
        out["picture"] = args.picture
        if not args.json:
            print(args.picture)
    if args.out and not args.json:
        print(f"wrote {args.out} (use it as --track {args.out}, or as --track {track_name(args.seed, args.style)})")
    return out


def cmd_play(args) -> dict:
    from .play import play

    return play(args.track, args.scale, args.laps, args.frames)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m envs.kartsim", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("play", help="drive yourself in a pygame window (arrows/WASD steer, "
                       "Z or Space = A accelerate, X = B brake, C or Shift = R hop/drift; gamepad via inputs)")
    p.add_argument("--track", default="luigi", help="built-in name or path to a track .json")
    p.add_argument("--scale", type=int, default=2, help="window scale of the 320x240 view")
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--frames", type=int, default=None, help="quit after this many frames (smoke tests)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(fn=cmd_play)
    p = sub.add_parser("tracks", help="list built-in tracks with length, width and lap-time lower bound")
    p.add_argument("--track", action="append", help="also describe this track .json (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tracks)
    p = sub.add_parser("expert", help="let the scripted expert race (headless) and print lap times")
    p.add_argument("--track", default="luigi")
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_expert)
    p = sub.add_parser("bench", help="env steps per second of VecKartSim (physics + rendering)")
    p.add_argument("--envs", type=int, default=24)
    p.add_argument("--steps", type=int, default=300, help="vector steps per timed run")
    p.add_argument("--size", type=_size, default=(66, 200), help="HxW, e.g. 66x200 or 240x320")
    p.add_argument("--track", default="luigi")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("render", help="save a first-person frame and a top-down map with the racing line")
    p.add_argument("--track", default="luigi")
    p.add_argument("--out", default="data/kartsim_render")
    p.add_argument("--size", type=_size, default=(240, 320))
    p.add_argument("--seconds", type=float, default=3.0, help="game seconds the expert drives before the frame")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_render)
    p = sub.add_parser("generate", help="procedural tracks: the same seed always gives the same track, and every "
                       "one passes the track rules; --track gen:SEED[:STYLE] uses one anywhere without a file")
    p.add_argument("--seed", type=int, default=0, help="the (first) seed, >= 0")
    p.add_argument("--style", choices=("mixed", "grass", "void"), default="mixed",
                   help="grass run-off, void (falling off), or either, chosen by the seed (default)")
    p.add_argument("--count", type=int, default=1, help="describe this many seeds from --seed on")
    p.add_argument("--out", help="write the track JSON of --seed here (a normal track file)")
    p.add_argument("--picture", help="save a PNG grid of the maps of the seeds described")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_generate)
    args = ap.parse_args(argv)
    from .track import TrackError

    try:
        out = args.fn(args)
    except (TrackError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
