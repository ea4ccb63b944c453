"""Generalisation: a model on tracks it has never seen.

    python -m bench.generalise --model M [--tracks 100] [--laps 3] [--out DIR] [--json]

Drives the model (from pixels, 66x200, as it was trained) on ``--tracks``
procedurally generated tracks from the seed range reserved for evaluation
(``envs.kartsim.generate.EVAL_SEED_START`` on: training seeds lie below it, so
none of these was trained on), plus the held-out built-in track (twisty), for
``--laps`` laps each, 51 tracks at a time (one per env of a ``VecKartSim``; a kart that
makes no progress for 15 s of race time is stopped there, unfinished).
The scripted expert drives the same tracks from the same starts as the
reference.

Reports, overall and split by grass / void tracks:

* ``finish_rate``: share of tracks where the model completed every lap (and,
  on void tracks, never fell);
* ``median_ratio`` / ``p90_ratio``: the model's best lap over the expert's best
  lap, over the tracks it finished (1.0 = as fast as the expert);

and writes ``OUT/worst.png``, a contact sheet of the 8 worst tracks with the
driven trace over the expert's racing line, and ``OUT/generalise.json`` with a
row per track. ``--model expert`` measures the expert against itself (a sanity
check: ratio 1.0, finish rate 1.0 unless the expert itself fails).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from common.atomic import replacing, write_text  # noqa: E402
from common.cli import add_json, emit_json, reported  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WORST = 8
STALL_S = 15.0  # a kart whose race progress has not grown by STALL_LAP of a lap in this long is stopped
STALL_LAP = 0.02


def eval_tracks(n: int, style: str = "mixed", held_out: bool = True) -> list[str]:
    """The evaluation tracks: ``n`` generated ones from the reserved seed range, then twisty."""
    from envs.kartsim import HELD_OUT
    from envs.kartsim.generate import EVAL_SEED_START, track_name

    return [track_name(EVAL_SEED_START + i, style) for i in range(n)] + ([HELD_OUT] if held_out else [])


def drive(tracks: list[str], policy=None, *, laps: int = 3, envs: int = 51, seed: int = 0,
          progress: bool = False, time_caps: list[float | None] | None = None) -> list[dict]:
    """Drive ``policy`` (``Policy``-like: frames -> actions; None = the expert) on each track once;
    one result per track: lap times, falls, finished, the driven trace. ``time_caps``: race-time
    limit per track (None: kartsim's own, generous for any driver; a batch uses its largest)."""
    from envs import kartsim

    results: list[dict] = []
    for start in range(0, len(tracks), envs):
        chunk = tracks[start:start + envs]
        caps = (time_caps or [None] * len(tracks))[start:start + envs]
        limit = None if any(c is None for c in caps) else max(caps)
        vec = kartsim.VecKartSim(len(chunk), size=(66, 200), seed=seed, laps=laps, tracks=chunk,
                                 max_time_s=limit)
        obs, _ = vec.reset()
        done = np.zeros(len(chunk), bool)
        best = np.zeros(len(chunk))       # furthest race progress (laps) so far
        best_t = np.zeros(len(chunk))     # race time when it last grew by STALL_LAP
        traces: list[list] = [[] for _ in chunk]
        rows: list[dict | None] = [None] * len(chunk)
        while not done.all():
            act = vec.expert_actions() if policy is None else policy(obs)
            obs, _, term, trunc, info = vec.step(act, render=policy is not None)
            xy = vec.positions()
            prog = info["lap"] + info["progress"]
            grew = prog >= best + STALL_LAP
            best = np.where(grew, prog, best)
            best_t = np.where(grew, info["t"], best_t)
            # stuck (off the road, turned round): stop it now rather than at the time limit
            stalled = ~done & ~term & ~trunc & (info["t"] - best_t > STALL_S)
            trunc = trunc | stalled
            for i in np.flatnonzero(~done):
                traces[i].append(xy[i])
                if term[i] or trunc[i]:
                    track = vec.tracks[i]
                    lap_times = [round(float(t), 3) for t in info["lap_times"][i]]
                    falls = int(info["falls"][i])
                    rows[i] = {"track": chunk[i], "offroad": "void" if track.void else "grass",
                               "length": round(float(track.length), 1), "laps": int(info["lap"][i]),
                               "lap_times": lap_times, "best_lap_s": min(lap_times) if lap_times else None,
                               "falls": falls, "stalled": bool(stalled[i]),
                               "finished": bool(term[i]) and (falls == 0 or not track.void),
                               "trace": np.array(traces[i], np.float32)}
            done |= term | trunc
        results += rows
        vec.close()
        if progress:
            print(f"  {len(results)}/{len(tracks)} tracks", file=sys.stderr, flush=True)
    return results


def _stats(rows: list[dict]) -> dict:
    ratios = [r["ratio"] for r in rows if r["finished"] and r["ratio"] is not None]
    return {"tracks": len(rows), "finished": sum(r["finished"] for r in rows),
            "finish_rate": round(sum(r["finished"] for r in rows) / len(rows), 4) if rows else None,
            "median_ratio": round(float(np.median(ratios)), 4) if ratios else None,
            "p90_ratio": round(float(np.percentile(ratios, 90)), 4) if ratios else None}


def _badness(r: dict) -> tuple:
    """Sort key, worst first: unfinished (fewest laps, most falls), then the slowest ratio."""
    return (r["finished"], r["laps"], -r["falls"], -(r["ratio"] or 0.0))


def worst_sheet(rows: list[dict], path: Path) -> str:
    """The ``WORST`` worst tracks: road edges, the expert's racing line, the driven trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs import kartsim
    from envs.kartsim.expert import Expert

    pick = sorted(rows, key=_badness)[:WORST]
    cols = 4
    fig, axes = plt.subplots((len(pick) + cols - 1) // cols, cols, figsize=(16, 4.2 * ((len(pick) + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, pick, strict=False):
        t = kartsim.load(r["track"])
        for edge in t.edges():
            ax.plot(edge[:, 0], edge[:, 1], color="0.4", lw=0.8)
        line = Expert(t).line.xy
        ax.plot(line[:, 0], line[:, 1], color="tab:blue", lw=0.8, ls="--", label="expert's line")
        tr = r["trace"]
        if len(tr) > 1:
            jump = np.r_[False, np.linalg.norm(np.diff(tr, axis=0), axis=1) > 5.0]  # respawns: break the line
            seg = np.cumsum(jump)
            for k in np.unique(seg):
                part = tr[seg == k]
                ax.plot(part[:, 0], part[:, 1], color="tab:red", lw=1.0, label="driven" if k == 0 else None)
        ax.set_aspect("equal")
        status = "finished" if r["finished"] else f"{r['laps']} laps"
        ratio = f"{r['ratio']:.3f}x expert" if r["ratio"] else "no lap"
        ax.set_title(f"{r['track']} ({r['offroad']}): {status}, falls {r['falls']}, {ratio}", fontsize=9)
    axes.flat[0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return str(path)


def generalise(model, tracks: list[str], *, laps: int = 3, envs: int = 51, out: Path | None = None,
               progress: bool = False) -> dict:
    """Drive ``model`` (a path, or "expert") and the expert on ``tracks``; the figures above."""
    t0 = time.perf_counter()
    if progress:
        print(f"expert on {len(tracks)} tracks", file=sys.stderr, flush=True)
    ref = drive(tracks, None, laps=laps, envs=envs, progress=progress)
    if model == "expert":
        runs = ref
    else:
        from train.policy import Policy

        if progress:
            print(f"{model} on {len(tracks)} tracks", file=sys.stderr, flush=True)
        # generous: twice the expert's race on the same track plus a start, so a slow finisher is not cut off
        caps = [2.0 * sum(e["lap_times"]) + 20.0 if e["finished"] else None for e in ref]
        runs = drive(tracks, Policy(model), laps=laps, envs=envs, progress=progress, time_caps=caps)
    for r, e in zip(runs, ref, strict=True):
        r["expert_best_lap_s"] = e["best_lap_s"]
        r["ratio"] = (round(r["best_lap_s"] / e["best_lap_s"], 4)
                      if r["best_lap_s"] is not None and e["best_lap_s"] else None)
    from envs.kartsim import HELD_OUT

    generated = [r for r in runs if r["track"] != HELD_OUT]
    result = {"model": str(model), "laps": laps, **_stats(runs),
              "by_style": {k: _stats([r for r in generated if r["offroad"] == k]) for k in ("grass", "void")},
              "generated": _stats(generated)}
    held = [r for r in runs if r["track"] == HELD_OUT]
    if held:
        h = held[0]
        result["held_out"] = {k: h[k] for k in ("track", "finished", "falls", "best_lap_s", "expert_best_lap_s",
                                                "ratio")}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        result["sheet"] = worst_sheet(runs, out / "worst.png")
        rows = [{k: v for k, v in r.items() if k != "trace"} for r in runs]
        write_text(out / "generalise.json", json.dumps({**result, "rows": rows}, indent=1))
        result["rows_file"] = str(out / "generalise.json")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generalise", description=__doc__.split("\n\n")[0],
                                epilog="Tracks: envs.kartsim.generate's reserved evaluation seeds, plus twisty.")
    p.add_argument("--model", required=True, help="model .keras, or 'expert' for the expert against itself")
    p.add_argument("--tracks", type=int, default=100, help="generated tracks (default: %(default)s)")
    p.add_argument("--style", choices=("mixed", "grass", "void"), default="mixed", help="(default: %(default)s)")
    p.add_argument("--no-held-out", action="store_true", help="leave out the held-out built-in track")
    p.add_argument("--laps", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--envs", type=int, default=51, help="tracks driven at once (default: %(default)s)")
    p.add_argument("--out", default="data/generalise", help="sheet and per-track JSON (default: %(default)s)")
    add_json(p)
    args = p.parse_args(argv)
    if args.tracks < 0 or args.laps < 1 or args.envs < 1:
        p.error("--tracks must be >= 0, --laps and --envs >= 1")
    if args.model != "expert" and not Path(args.model).is_file():
        p.error(f"--model {args.model}: no such file")
    tracks = eval_tracks(args.tracks, args.style, held_out=not args.no_held_out)
    if not tracks:
        p.error("no tracks to drive")
    with reported(p.prog):  # a model file that does not load, a folder that cannot be written
        res = generalise(args.model, tracks, laps=args.laps, envs=args.envs, out=Path(args.out),
                         progress=not args.json)
    if args.json:
        emit_json(res)
    else:
        print(f"{res['model']}: finished {res['finished']}/{res['tracks']} ({res['finish_rate']:.0%}), "
              f"median {res['median_ratio']}x, p90 {res['p90_ratio']}x the expert's best lap")
        for k, s in res["by_style"].items():
            print(f"  {k:5s}: {s['finished']}/{s['tracks']} finished, median {s['median_ratio']}x, p90 {s['p90_ratio']}x")
        if "held_out" in res:
            h = res["held_out"]
            print(f"  {h['track']} (held out): finished {h['finished']}, best {h['best_lap_s']} s "
                  f"vs expert {h['expert_best_lap_s']} s")
        print(f"worst tracks: {res['sheet']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
