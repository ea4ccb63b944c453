"""python -m train.finetune.compare: fine-tuning runs side by side, from their ``eval.csv``.

    python -m train.finetune.compare RUN_A RUN_B [--track rainbow] [--to FRAMES] [--reference S|MOVIE]
        [--png OUT.png] [--json]

For each run (a ``--out`` folder, or its ``eval.csv``), over its evaluations on one track up to
``--to`` game frames (default: as far as the shortest run got, so the runs are compared over the
same stretch; ``--to all`` for each run's whole log):

- the clone's lap (the first evaluation: at the end of warm-up the actor is still the clone),
- the best evaluation lap and where it came, and its gap to the reference,
- the mean of the last 5 evaluations and their mini-turbos,
- the closest their best laps came to the road edge (``closest_to_edge_u``, where the log has it),
- the evaluations that fell (and at which frames),
- the evaluations after warm-up slower than the clone, and the worst of them.

The reference is the lap to get close to: a number of seconds, a kartsim movie (``plan --out``,
its ``best_lap_s``), or by default the planned lap cached for the track (``tracks --json``'s
``planned_best_lap_s``) where there is one. ``--png`` draws best lap and mini-turbos per
evaluation for every run, falls as red crosses, the reference and ``--target-pct`` above it.
Nothing here imports TensorFlow: it reads CSV files.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

from common.cli import add_json, emit, fail, reported

PROG = "python -m train.finetune.compare"
LAST = 5


def eval_path(run: str) -> str:
    """A run folder's ``eval.csv``, or the CSV path itself."""
    path = run if run.endswith(".csv") else os.path.join(run, "eval.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (is {run} a train.finetune --out folder?)")
    return path


# --lap: which lap of an evaluation (and which falls column goes with it)
LAP_COLUMNS = {"best": "best_lap_s", "median": "median_best_lap_s", "first": "first_start_lap_s"}
FALL_COLUMNS = {"first": "first_start_falls"}  # the others: falls on any start


def read_evals(run: str, track: str | None, lap: str = "best") -> tuple[str, list[dict]]:
    """``(track, rows)``: the run's evaluations on ``track`` (default: the first track its log names),
    with numbers parsed; each row's ``best_lap_s`` is the column ``--lap`` names (``median``: the
    median of the evaluation's starts' best laps; ``first``: the first start's, with that start's falls:
    the run read as an --eval-envs 1 run). Raises ValueError naming the file and the row or field at
    fault."""
    path = eval_path(run)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    column = LAP_COLUMNS[lap]
    fall_column = FALL_COLUMNS.get(lap, "falls")
    need = ("frames", "track", column, fall_column, "mini_turbos")
    if not rows:
        raise ValueError(f"{path}: no evaluations yet")
    missing = [k for k in need if k not in rows[0]]
    if missing:
        if missing == [LAP_COLUMNS["median"]]:
            raise ValueError(f"{path}: no column {missing[0]} (written by train.finetune since --eval-envs "
                             "scores by the median; use --lap best for this run)")
        if lap == "first" and set(missing) <= {column, fall_column}:
            raise ValueError(f"{path}: no column {', '.join(missing)} (written by train.finetune since "
                             "eval.csv keeps the first start apart; use --lap best for this run)")
        raise ValueError(f"{path}: no column {', '.join(missing)} (not a train.finetune eval.csv?)")
    track = track or rows[0]["track"]
    out = []
    for i, r in enumerate(rows, start=2):  # line numbers as an editor shows them (the header is line 1)
        if r["track"] != track:
            continue
        try:
            lap = float(r[column]) if r[column] not in ("", "None", "nan") else math.nan
            edge = r.get("closest_to_edge_u")  # a column since eval.csv keeps it (kartsim); None before
            out.append({"frames": int(r["frames"]), "best_lap_s": lap, "falls": int(r[fall_column]),
                        "mini_turbos": int(r["mini_turbos"]),
                        "closest_to_edge_u": float(edge) if edge not in (None, "", "None", "nan") else math.nan})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}, line {i}: {exc}") from None
    if not out:
        tracks = sorted({r["track"] for r in rows})
        raise ValueError(f"{path}: no evaluation on track {track!r} (it has {', '.join(tracks)})")
    return track, out


def reference_lap(ref: str | None, track: str) -> tuple[float | None, str | None]:
    """``(seconds, where from)``: ``ref`` as seconds or a movie file, else the cached planned lap."""
    from envs.kartsim import movie

    if ref is not None:
        try:
            return float(ref), "given"
        except ValueError:
            m = movie.load_movie(ref)
            if m.get("best_lap_s") is None:
                raise ValueError(f"{ref}: the movie has no lap time") from None
            return float(m["best_lap_s"]), ref
    lap = movie.planned_lap(track)
    return (None, None) if lap is None else (lap, "the planned-lap cache")


# Lap times are whole game frames summed in floating point: two laps of the same frame count can differ
# by ~1e-12 s. A lap counts as slower than the clone's only when it is longer by more than this.
TIE_S = 1e-6


def summarise(rows: list[dict], reference: float | None) -> dict:
    """The figures of one run's evaluations (see the module doc)."""
    clone = rows[0]
    after = rows[1:]
    laps = [r["best_lap_s"] for r in rows]
    finite = [(lap, r) for lap, r in zip(laps, rows, strict=True) if not math.isnan(lap)]
    best_lap, best_row = min(finite, key=lambda t: t[0]) if finite else (None, None)
    clone_lap = None if math.isnan(clone["best_lap_s"]) else clone["best_lap_s"]
    slower = [r for r in after if clone_lap is not None and (math.isnan(r["best_lap_s"])
                                                             or r["best_lap_s"] > clone_lap + TIE_S)]
    last = rows[-LAST:]
    last_laps = [r["best_lap_s"] for r in last if not math.isnan(r["best_lap_s"])]
    last_edges = [r["closest_to_edge_u"] for r in last if not math.isnan(r.get("closest_to_edge_u", math.nan))]
    out = {
        "evaluations": len(rows),
        "to_frames": rows[-1]["frames"],
        "clone_lap_s": clone_lap,
        "best_lap_s": best_lap,
        "best_at_frames": None if best_row is None else best_row["frames"],
        f"mean_last{LAST}_s": round(sum(last_laps) / len(last_laps), 3) if last_laps else None,
        f"mini_turbos_last{LAST}": [r["mini_turbos"] for r in last],
        # how close the best lap came to the road edge, the closest of the last evaluations (eval.csv's
        # closest_to_edge_u): a policy's margin from the void; None where the log lacks the column
        f"closest_to_edge_last{LAST}_u": min(last_edges) if last_edges else None,
        "fell": len([r for r in rows if r["falls"]]),
        "fell_at_frames": [r["frames"] for r in rows if r["falls"]],
        "slower_than_clone": len(slower),
        "worst_after_warmup_s": max((r["best_lap_s"] for r in after if not math.isnan(r["best_lap_s"])),
                                    default=None),
    }
    if reference and best_lap is not None:
        out["best_vs_reference_pct"] = round((best_lap / reference - 1) * 100, 2)
    return out


def plot(runs: dict[str, list[dict]], track: str, reference: float | None, target_pct: float,
         path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common import atomic

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for i, (name, rows) in enumerate(runs.items()):
        x = [r["frames"] / 1e6 for r in rows]
        ax1.plot(x, [r["best_lap_s"] for r in rows], "o-", ms=3, color=f"C{i}", label=name)
        falls = [r for r in rows if r["falls"]]
        if falls:
            ax1.plot([r["frames"] / 1e6 for r in falls], [r["best_lap_s"] for r in falls], "x", color="red",
                     ms=10, mew=2, label="an evaluation that fell" if i == 0 else None)
        ax2.plot(x, [r["mini_turbos"] for r in rows], "o-", ms=3, color=f"C{i}", label=name)
    if reference:
        ax1.axhline(reference, color="k", ls="--", lw=1, label=f"reference {reference:.2f} s")
        ax1.axhline(reference * (1 + target_pct / 100), color="g", ls=":", lw=1.5,
                    label=f"reference +{target_pct:g}% ({reference * (1 + target_pct / 100):.2f} s)")
    ax1.set_ylabel(f"best lap on {track}, s")
    ax1.set_title(f"Fine-tuning runs on {track}: best lap per evaluation")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("mini-turbos per evaluation")
    ax2.set_xlabel("game frames (millions)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic.replacing(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Compare fine-tuning runs by their evaluations (eval.csv): clone lap, best lap, "
        f"mean of the last {LAST}, mini-turbos, evaluations that fell or were slower than the clone, "
        "and the gap to a reference lap; optionally a PNG of the curves.",
        epilog="example:\n  python -m train.finetune.compare runs/F5 runs/B2 --track rainbow "
        "--reference 36.53 --png cmp.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="train.finetune --out folders (or their eval.csv)")
    p.add_argument("--track", help="the evaluation track to compare (default: the first one in the first "
                   "run's eval.csv)")
    p.add_argument("--to", default=None, metavar="FRAMES|all",
                   help="compare evaluations up to this many game frames (default: where the shortest run "
                   "ends, so all runs cover the same stretch; 'all': each run's whole log)")
    p.add_argument("--reference", metavar="SECONDS|MOVIE",
                   help="the lap to measure against: seconds, or a kartsim movie (plan --out) "
                   "(default: the track's cached planned lap, where there is one)")
    p.add_argument("--target-pct", type=float, default=3.0,
                   help="the target line in the PNG, this many percent above the reference (default: 3)")
    p.add_argument("--lap", choices=tuple(LAP_COLUMNS), default="best",
                   help="an evaluation's lap: best (its best lap: one start's with --eval-envs 1), median "
                   "(the median of its starts' best laps, median_best_lap_s: steadier, from runs with "
                   "--eval-envs > 1) or first (the first start's lap and falls alone: a several-start run read as "
                   "an --eval-envs 1 run, whose one start is that first start; batched inference can still move its lap "
                   "by a frame) (default: %(default)s)")
    p.add_argument("--png", metavar="OUT.png", help="also draw the curves into this PNG")
    add_json(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with reported(PROG):
        track = args.track
        runs: dict[str, list[dict]] = {}
        for run in args.runs:
            track, rows = read_evals(run, track, args.lap)
            name = os.path.basename(os.path.dirname(os.path.abspath(eval_path(run))))  # the run folder's name
            while name in runs:
                name += "'"
            runs[name] = rows
        if args.to == "all":
            to = None
        elif args.to is not None:
            try:
                to = int(float(args.to))
            except ValueError:
                fail(PROG, f"--to: expected a number of frames or 'all', got {args.to!r}")
        else:
            to = min(rows[-1]["frames"] for rows in runs.values())
        if to is not None:
            runs = {k: [r for r in v if r["frames"] <= to] for k, v in runs.items()}
            empty = [k for k, v in runs.items() if not v]
            if empty:
                fail(PROG, f"--to {to}: {', '.join(empty)} has no evaluation by then")
        reference, ref_from = reference_lap(args.reference, track)
        result = {"track": track, "lap": args.lap, "to_frames": to, "reference_s": reference,
                  "reference_from": ref_from,
                  "runs": {k: summarise(v, reference) for k, v in runs.items()}}
        if args.png:
            result["png"] = plot(runs, track, reference, args.target_pct, args.png)
    if args.json:
        emit(result, True)
    else:
        print_table(result)
    return 0


def print_table(result: dict) -> None:
    ref, to = result["reference_s"], result["to_frames"]
    stretch = "each run's whole log" if to is None else f"evaluations to {to:,} frames"
    where = "none" if ref is None else f"{ref:.2f} s ({result['reference_from']})"
    print(f"track {result['track']}, {stretch}; reference: {where}")
    cols = ("run", "evals", "clone", "best", "at", "vs ref", f"last {LAST}", f"mini-turbos, last {LAST}",
            f"edge, last {LAST}", "fell", "slower than clone")
    lines = [cols]
    for name, s in result["runs"].items():
        mts = s[f"mini_turbos_last{LAST}"]
        lines.append((name, str(s["evaluations"]), _s(s["clone_lap_s"]), _s(s["best_lap_s"]),
                      "-" if s["best_at_frames"] is None else f"{s['best_at_frames'] / 1e6:.2f}M",
                      "-" if "best_vs_reference_pct" not in s else f"{s['best_vs_reference_pct']:+.2f}%",
                      _s(s[f"mean_last{LAST}_s"]), f"{min(mts)}-{max(mts)}",
                      "-" if s[f"closest_to_edge_last{LAST}_u"] is None else f"{s[f'closest_to_edge_last{LAST}_u']:.2f} u",
                      f"{s['fell']}" + (f" (at {', '.join(f'{f / 1e6:.2f}M' for f in s['fell_at_frames'])})"
                                        if s["fell"] else ""),
                      str(s["slower_than_clone"])))
    widths = [max(len(row[i]) for row in lines) for i in range(len(cols))]
    for row in lines:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if "png" in result:
        print(f"curves: {result['png']}")


def _s(v) -> str:
    return "-" if v is None else f"{v:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
