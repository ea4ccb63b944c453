"""The table `make bench` ends with: every ratio (and absolute figure with a goal) against its goal.

    python -m bench.table data/bench/*.log      # outputs of the benchmarks run with --json
    python -m bench.table --json FILE...        # the rows as one JSON object

Each file is one benchmark's output; its last line that parses as a JSON object
is the result (each benchmark prints one with ``--json``, with a ``bench`` key
naming it). Ratios are measured against a limit in the same process, so they
carry from machine to machine; the absolute figures are this machine's (the
machine line heads the table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (bench, figure, how to get it from the result, goal text, check): one row each
GOALS: list[tuple[str, str, object, str, object]] = [
    ("kartsim", "steps/s, 24 envs at 66x200", lambda r: r["steps_per_s"], ">= 10,000 (absolute)",
     lambda v: v >= 10_000),
    ("record", "achieved / target rate", lambda r: r["rate_hz"] / r["target_rate_hz"], ">= 0.99",
     lambda v: v >= 0.99),
    ("record", "jitter p99 ms", lambda r: r["jitter_p99_ms"], "<= 2 (absolute)", lambda v: v <= 2.0),
    ("record", "dropped frames", lambda r: r["dropped"], "0", lambda v: v == 0),
    ("train", "input pipeline / in-memory samples/s", lambda r: r["ratio"], ">= 0.9", lambda v: v >= 0.9),
    ("drive", "POST p99 / model p99 (one frame)", lambda r: r["post_of_model"], "<= 1.5", lambda v: v <= 1.5),
    ("drive", "TensorKart's p99 / POST p99", lambda r: r["speedup"], ">= 15", lambda v: v >= 15),
    ("drive", "load test errors", lambda r: r.get("load_errors"), "0", lambda v: v == 0),
    ("plugin", "fps with plugin / --input dummy", lambda r: r["fps_plugin"] / r["fps_dummy"], ">= 0.95",
     lambda v: v >= 0.95),
    ("envs", "emulator env / mupen64plus alone", lambda r: r["emu_of_alone"], ">= 0.8", lambda v: v >= 0.8),
]


def last_json(path: Path) -> dict | None:
    """The last line of ``path`` that is a JSON object, or None."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def guess_bench(result: dict) -> str | None:
    """Older outputs without a ``bench`` key: tell them by their keys."""
    if "bench" in result:
        return result["bench"]
    for name, key in (("kartsim", "steps_per_s"), ("record", "jitter_p99_ms"), ("train", "pipeline_samples_per_s"),
                      ("drive", "post_p99_ms"), ("plugin", "fps_dummy"), ("envs", "sim_steps_per_s"),
                      ("finetune", "repeats")):
        if key in result:
            return name
    return None


def finetune_rows(result: dict) -> list[dict]:
    rows = []
    for r in result.get("repeats", []):
        if "of_limit" not in r:
            continue
        goal = ">= 0.7" if r["repeat"] == 1 else "(target at repeat 1)"
        met = (r["of_limit"] >= 0.7) if r["repeat"] == 1 else None
        rows.append({"bench": "finetune", "figure": f"end-to-end / limit, repeat {r['repeat']} "
                     f"({r['frames_per_s']:.0f} of {r['limit_frames_per_s']:.0f} frames/s)",
                     "value": r["of_limit"], "goal": goal, "met": met})
    return rows


def rows_for(result: dict) -> list[dict]:
    bench = guess_bench(result)
    if bench == "finetune":
        return finetune_rows(result)
    rows = []
    for name, figure, get, goal, check in GOALS:
        if name != bench:
            continue
        try:
            value = get(result)
        except (KeyError, TypeError, ZeroDivisionError):
            value = None
        if value is None:
            why = result.get("emu_skipped") or result.get("emu_alone_skipped") or "not measured"
            rows.append({"bench": bench, "figure": figure, "value": None, "goal": goal, "met": None, "note": why})
            continue
        rows.append({"bench": bench, "figure": figure, "value": round(float(value), 3), "goal": goal,
                     "met": bool(check(value))})
    return rows


def render(rows: list[dict], machine: str | None) -> str:
    lines = [machine] if machine else []
    head = ("bench", "figure", "value", "goal", "")
    table = [head] + [(r["bench"], r["figure"], "n/a" if r["value"] is None else f"{r['value']:g}", r["goal"],
                       {True: "ok", False: "MISSED", None: ""}[r["met"]] + (f" ({r['note']})" if r.get("note") else ""))
                      for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head) - 1)]
    for row in table:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="benchmark outputs (each ending in its --json line)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    args = p.parse_args(argv)
    rows: list[dict] = []
    machine = None
    for path in args.files:
        if not path.is_file():
            p.error(f"{path}: no such file")
        result = last_json(path)
        if result is None:
            rows.append({"bench": path.stem, "figure": f"{path}: no JSON result line", "value": None, "goal": "",
                         "met": False})
            continue
        if machine is None and isinstance(result.get("machine"), dict):
            from common.machine import machine_line

            machine = machine_line(result["machine"])
        rows.extend(rows_for(result))
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}))
    else:
        print(render(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
