"""python -m envs.kartsim {play,tracks,expert,plan,replay,bench,render,generate}: the simulator's command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from common.cli import add_command, add_json, emit_json, fail, format_size, int_at_least, reported, size_arg
from common.defaults import EXPERT_MARGIN, SECTORS

PROG = "python -m envs.kartsim"
_size = size_arg(minimum=8)


def cmd_tracks(args) -> dict:
    from . import HELD_OUT, TRACKS, load, lower_bound_s
    from .movie import cache_dir, cached_plan

    names = list(TRACKS) + [t for t in args.track or [] if t not in TRACKS]
    rows = []
    for name in names:
        t = load(name)
        plan = cached_plan(name)
        if plan is None and args.plan:
            _plan_and_store(name, args.plan_laps, 0, None, progress=not args.json)
            plan = cached_plan(name)
        rows.append({"name": t.name if name in TRACKS else name, "length": round(t.length, 1),
                     "width": round(t.mean_width, 1), "offroad": "void" if t.void else "grass",
                     "checkpoints": len(t.cp_s), "lower_bound_s": lower_bound_s(name),
                     "planned_best_lap_s": None if plan is None else round(plan["best_lap_s"], 3),
                     "held_out": name == HELD_OUT, "description": t.spec.get("description", "")})
    if not args.json:
        for r in rows:
            planned = "  -   " if r["planned_best_lap_s"] is None else f"{r['planned_best_lap_s']:6.2f}"
            print(f"{r['name']:10s} length {r['length']:7.1f}  width {r['width']:5.1f}  {r['offroad']:5s}  "
                  f"lower bound {r['lower_bound_s']:6.2f} s  planned {planned} s  {r['description']}")
        print(f"(planned laps: the best verified planner movie per track version, cached in {cache_dir()}; "
              "`tracks --plan` computes missing ones)")
    return {"tracks": rows, "plan_cache": str(cache_dir())}


def _plan_and_store(track, laps, seed, config, progress: bool, out=None) -> dict:
    """Plan a race, verify it by replaying it in a plain env, save the movie, keep it in the cache."""
    from .movie import check_movie_target, make_movie, replay, save_movie, store_plan
    from .planner import plan_race

    def show(lap, total, t):
        print(f"plan {track}: lap {lap}/{total} done after {t:.1f} s of planning", file=sys.stderr, flush=True)

    if out is not None:
        check_movie_target(out)  # before the planning, not after
    res = plan_race(track, laps, seed, config, progress=show if progress else None)
    movie = make_movie(res, track)
    check = replay({**movie, "actions": res["actions"]}, src=str(out or "<plan>"))
    if not check["matches"]:  # never write a movie that does not verify
        raise RuntimeError(f"plan {track}: replay gave lap times {check['lap_times']}, the plan {movie['lap_times']}")
    if out is not None:
        save_movie(out, movie)
    cache_path, cached = store_plan(movie)
    return {"result": res, "movie": movie, "cache": str(cache_path), "cached": cached}


def cmd_expert(args) -> dict:
    from .expert import run_expert

    out = run_expert(args.track, args.laps, args.seed, progress=not args.json, margin_frac=args.margin)
    if not args.json:
        print(f"{out['track']}: {out['laps']} laps {out['lap_times']} best {out['best_lap_s']} s, "
              f"falls {out['falls']}, lower bound {out['lower_bound_s']} s")
    return out


def cmd_follow(args) -> dict:
    from .follow import PlannedLine, run_follower
    from .movie import load_movie
    from .planner import PlannerConfig

    if args.movie:
        movie = load_movie(args.movie)
        track = args.track or movie["track"]
        line = PlannedLine.from_movie(movie, track, src=str(args.movie))
    else:
        track = args.track or "luigi"
        line = PlannedLine.plan(track, PlannerConfig(edge=args.edge), seed=args.seed)
    out = run_follower(track, args.laps, args.seed, line)
    out["movie"] = args.movie
    if not args.json:
        print(f"{out['track']}: the follower of a planned lap of {out['planned_lap_s']} s: laps {out['lap_times']} "
              f"best {out['best_lap_s']} s, falls {out['falls']}, mini-turbos {out['mini_turbos']}")
    return out


def _round(v):
    return None if v is None else round(float(v), 3)


def cmd_plan(args) -> dict:
    from .expert import run_expert
    from .line import lower_bound_s
    from .planner import PlannerConfig, edge_clearance, lap_gap

    cfg = PlannerConfig(samples=args.samples, rounds=args.rounds, horizon=args.horizon,
                        replan_every=args.replan_every, edge=args.edge)
    done = _plan_and_store(args.track, args.laps, args.seed, cfg, progress=not args.json, out=args.out)
    res = done["result"]
    expert = run_expert(args.track, args.laps, args.seed)
    lb = lower_bound_s(args.track)
    best = res["best_lap_s"]
    least, near = edge_clearance(args.track, res["actions"], args.laps, args.seed)
    out = {"track": args.track, "laps": args.laps, "seed": args.seed, "edge": args.edge,
           "lap_times": [_round(t) for t in res["lap_times"]], "best_lap_s": _round(best),
           "race_time_s": _round(res["race_time_s"]), "finished": res["finished"], "falls": res["falls"],
           "mini_turbos": res["mini_turbos"], "expert_best_lap_s": expert["best_lap_s"],
           "expert_lap_times": expert["lap_times"], "lower_bound_s": lb,
           "faster_than_expert": None if best is None else round(lap_gap(best, expert["best_lap_s"]), 4),
           "above_lower_bound": None if best is None else round(best / lb - 1.0, 4),
           "closest_to_edge_u": round(least, 3), "near_edge_share": round(near, 4),
           "plan_time_s": round(res["plan_time_s"], 1), "frames": res["frames"], "rollouts": res["rollouts"],
           "out": str(args.out), "replay_matches": True, "cache": done["cache"], "cached": done["cached"]}
    if not args.json:
        print(f"{args.track}: planned laps {out['lap_times']} best {out['best_lap_s']} s "
              f"({100 * (out['faster_than_expert'] or 0):.1f}% faster than the expert's {out['expert_best_lap_s']} s, "
              f"{100 * (out['above_lower_bound'] or 0):.1f}% above the lower bound {lb} s), falls {out['falls']}, "
              f"mini-turbos {out['mini_turbos']}, closest to the road edge {out['closest_to_edge_u']} units; "
              f"planned in {out['plan_time_s']} s; movie {args.out}")
    return out


def cmd_replay(args) -> dict:
    from .movie import load_movie, replay

    movie = load_movie(args.movie)
    res = replay(movie, track=args.track, src=str(args.movie), sectors=args.sectors)
    out = {"movie": str(args.movie), "track": res["track"], "seed": res["seed"], "laps": res["laps"],
           "frames": res["frames"], "lap_times": [_round(t) for t in res["lap_times"]],
           "best_lap_s": _round(res["best_lap_s"]), "race_time_s": _round(res["race_time_s"]),
           "finished": res["finished"], "falls": res["falls"], "mini_turbos": res["mini_turbos"],
           "recorded_lap_times": [_round(t) for t in movie.get("lap_times", [])], "matches": res["matches"],
           "sectors": res["sectors"], "style": res["style"]}
    if not args.json:
        print(f"{args.movie}: {res['track']} laps {out['lap_times']} best {out['best_lap_s']} s, falls {out['falls']}, "
              f"mini-turbos {out['mini_turbos']}; " + ("matches the recorded lap times" if res["matches"]
                                                      else f"DOES NOT match the recorded {out['recorded_lap_times']}"))
        if res["sectors"]:
            print(f"split times of lap {res['sectors']['lap'] + 1} (the best): "
                  + " ".join(f"{s:.2f}" for s in res["sectors"]["sectors_s"]))
        if res["style"]:
            st = res["style"]
            print(f"its line {st['path_u']:.1f} units at {st['mean_speed_u_s']:.2f} units/s, boosting "
                  f"{st['boost_share']:.0%} and drifting {st['drift_share']:.0%} of it ({st['drifts']} drifts, "
                  f"{st['mini_turbos']} mini-turbos), at least "
                  f"{st['closest_to_edge_u']:.2f} units inside the edge ({st['near_edge_share']:.0%} within 0.5)")
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
    out = {"bench": "kartsim", "machine": machine_info(), "envs": args.envs, "size": format_size(args.size),
           "track": args.track, "steps": args.steps,
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

    from .generate import generate, track_name
    from .track import geometry, validate

    seeds = list(range(args.seed, args.seed + args.count))
    out: dict = {"style": args.style, "tracks": []}
    if args.out:
        if args.count != 1:
            raise ValueError("--out writes one track: use it without --count")
        from common.atomic import write_text

        write_text(args.out, json.dumps(generate(args.seed, args.style), indent=1))  # never half-written
        out["out"] = str(args.out)
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = add_command(sub, "play", cmd_play,
                    help="drive yourself in a pygame window (arrows/WASD steer, "
                    "Z or Space = A accelerate, X = B brake, C or Shift = R hop/drift; gamepad via inputs)")
    p.add_argument("--track", default="luigi", help="built-in name or path to a track .json")
    p.add_argument("--scale", type=int, default=2, help="window scale of the 240x320 (HxW) view")
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--frames", type=int, default=None, help="quit after this many frames (smoke tests)")
    add_json(p)
    p = add_command(sub, "tracks", cmd_tracks,
                    help="list built-in tracks with length, width and lap-time lower bound")
    p.add_argument("--track", action="append", help="also describe this track (a .json path or gen:SEED[:STYLE]; "
                   "repeatable)")
    p.add_argument("--plan", action="store_true",
                   help="plan the tracks that have no cached planned lap yet (slow: a minute or more each)")
    p.add_argument("--plan-laps", type=int, default=2, help="laps planned by --plan (default: %(default)s)")
    add_json(p)
    p = add_command(sub, "plan", cmd_plan,
                    help="search for the fastest race (sampling MPC with full state access) and save it "
                    "as an input movie that replays to the same lap times",
                    description="Plan a race with the planner (envs/kartsim/planner.py), verify it by replaying "
                    "it in a plain env, save the input movie (JSON) and keep it in the plan cache if it is the "
                    "track version's best. Prints lap times, falls, mini-turbos, the expert's best lap and the "
                    "lower bound for comparison, and the planning time.")
    p.add_argument("--track", default="luigi", help="built-in name, track .json path, or gen:SEED[:STYLE]")
    p.add_argument("--laps", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="env seed (start jitter), as make(track, seed=...)")
    p.add_argument("--out", required=True, help="the movie file to write (.json)")
    p.add_argument("--samples", type=int, default=48, help="candidates per search round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="search rounds per replan (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=40, help="frames searched ahead (default: %(default)s)")
    p.add_argument("--replan-every", type=int, default=2, help="frames executed per replan (default: %(default)s)")
    p.add_argument("--edge", type=float, default=0.0, metavar="U",
                   help="keep the kart centre U units inside the road edge (candidates closer are penalised): a "
                   "slightly slower race that a closed-loop driver can follow (default: %(default)s)")
    add_json(p)
    p = add_command(sub, "follow", cmd_follow,
                    help="drive a planned race's line and drift timings closed-loop (the follower teacher)",
                    description="Plan a race with --edge (or take --movie), then let the follower "
                    "(envs/kartsim/follow.py) drive its best lap's line with its pedal, hop and drift timings, "
                    "steering back to the line from wherever the kart is. Prints its lap times beside the "
                    "planned lap's.")
    p.add_argument("--track", help="built-in name, track .json path, or gen:SEED[:STYLE] (default: the movie's, "
                   "else luigi)")
    p.add_argument("--movie", help="follow this movie's best lap instead of planning one")
    p.add_argument("--edge", type=float, default=1.2, metavar="U",
                   help="the plan's edge setting, as plan --edge; not used with --movie (default: %(default)s)")
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    add_json(p)
    p = add_command(sub, "replay", cmd_replay,
                    help="replay an input movie in a plain env: lap times, falls, mini-turbos",
                    description="Replay a movie (from `plan`) action by action in make(track, seed=...) and "
                    "report what it achieved; a movie made on another version of its track is refused.")
    p.add_argument("movie", help="movie file (.json)")
    p.add_argument("--track", help="replay on this track instead of the one the movie names (same version only)")
    p.add_argument("--sectors", type=int_at_least(1), default=SECTORS, metavar="N",
                   help="split the best lap into N equal stretches of the lap and time each (default: %(default)s)")
    add_json(p)
    p = add_command(sub, "expert", cmd_expert,
                    help="let the scripted expert race (headless) and print lap times")
    p.add_argument("--track", default="luigi")
    p.add_argument("--laps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--margin", type=float, default=EXPERT_MARGIN, metavar="F",
                   help="its racing line's distance from each road edge, as a share of the mean width (1.2 to "
                   "3 units); smaller is faster and closer to the edge. Lap-time ratios everywhere are measured "
                   "against the default (default: %(default)s)")
    add_json(p)
    p = add_command(sub, "bench", cmd_bench, help="env steps per second of VecKartSim (physics + rendering)")
    p.add_argument("--envs", type=int, default=24)
    p.add_argument("--steps", type=int, default=300, help="vector steps per timed run")
    p.add_argument("--size", type=_size, default=(66, 200), metavar="HxW",
                   help="rendered frame size, rows x columns (default: 66x200, the model's input)")
    p.add_argument("--track", default="luigi")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    add_json(p)
    p = add_command(sub, "render", cmd_render,
                    help="save a first-person frame and a top-down map with the racing line")
    p.add_argument("--track", default="luigi")
    p.add_argument("--out", default="data/kartsim_render", help="folder for the two pictures (default: %(default)s)")
    p.add_argument("--size", type=_size, default=(240, 320), metavar="HxW",
                   help="first-person frame size, rows x columns (default: 240x320)")
    p.add_argument("--seconds", type=float, default=3.0, help="game seconds the expert drives before the frame")
    add_json(p)
    p = add_command(sub, "generate", cmd_generate,
                    help="procedural tracks: the same seed always gives the same track, and every "
                    "one passes the track rules; --track gen:SEED[:STYLE] uses one anywhere without a file")
    p.add_argument("--seed", type=int, default=0, help="the (first) seed, >= 0")
    p.add_argument("--style", choices=("mixed", "grass", "void"), default="mixed",
                   help="grass run-off, void (falling off), or either, chosen by the seed (default)")
    p.add_argument("--count", type=int, default=1, help="describe this many seeds from --seed on")
    p.add_argument("--out", help="write the track JSON of --seed here (a normal track file)")
    p.add_argument("--picture", help="save a PNG grid of the maps of the seeds described")
    add_json(p)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "laps", 1) < 1 or getattr(args, "plan_laps", 1) < 1:
        fail(args.prog, f"--{'laps' if getattr(args, 'laps', 1) < 1 else 'plan-laps'} must be >= 1")
    with reported(args.prog):  # TrackError and MovieError are ValueErrors; a missing file an OSError
        out = args.fn(args)
    if args.json:
        emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
