"""Run the embedded-default pipeline end to end on kartsim and print the table.

expert laps -> record expert demos -> clean -> prepare -> train (clone) ->
evaluate -> drive through the real server -> short PPO fine-tune.

Every stage is the project's own CLI, run as a subprocess with ``--json``;
this script only chains them and reads each one's last output line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable


def run_json(args: list[str], label: str) -> dict:
    """Run ``python -m ...`` with the output streaming, return its last-line JSON."""
    print(f"\n=== {label}: {' '.join(args)}", flush=True)
    start = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}  # quiet TF start-up
    proc = subprocess.Popen([PY, "-m", *args], stdout=subprocess.PIPE, text=True, env=env)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if line.strip():
            last = line.strip()
    if proc.wait() != 0:
        raise SystemExit(f"demo: stage '{label}' failed (exit {proc.returncode}): {' '.join(args)}")
    print(f"=== {label}: {time.monotonic() - start:.0f} s", flush=True)
    try:
        return json.loads(last)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"demo: stage '{label}' printed no JSON last line: {last[:200]!r}") from exc


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/demo", help="where sessions, arrays and models go (default: %(default)s)")
    p.add_argument("--track", default="luigi", help="training track (default: %(default)s)")
    p.add_argument("--heldout", default="twisty", help="held-out track for generalisation (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=600, help="seconds of expert demos to record (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.3, help="DART steering noise while recording (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: %(default)s)")
    p.add_argument("--laps", type=int, default=3, help="evaluation laps (default: %(default)s)")
    p.add_argument("--rl-frames", type=int, default=200_000, help="game frames of the short fine-tune (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every stage (used by the tests)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    a = p.parse_args(argv)
    if a.quick:
        a.seconds, a.epochs, a.laps, a.rl_frames = 40, 2, 1, 2_000
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"tracks": {}}

    tracks = run_json(["envs.kartsim", "tracks", "--json"], "built-in tracks")["tracks"]
    names = [t["name"] for t in tracks] if not a.quick else [a.track]
    for name in names:
        r = run_json(["envs.kartsim", "expert", "--track", name, "--laps", str(a.laps), "--json"], f"expert on {name}")
        results["tracks"][name] = {"expert_best_lap_s": r["best_lap_s"], "lower_bound_s": r["lower_bound_s"],
                                   "expert_falls": r["falls"]}

    # Two sessions, so prepare can keep one whole session for validation. DART noise: the
    # expert's kart is perturbed while the clean label is recorded (plain demos clone poorly).
    stamp = int(time.time())
    sessions = {}
    for role, seconds, seed in (("train", a.seconds, 0), ("val", max(a.seconds / 6, 20), 1)):
        sessions[role] = out / "sessions" / f"expert-{a.track}-{role}-{stamp}"
        run_json(["record", "--source", "sim", "--track", a.track, "--seconds", str(seconds), "--fast",
                  "--noise", str(a.noise), "--seed", str(seed), "--laps", "1000", "--quiet",
                  "--out", str(sessions[role]), "--json"], f"record expert demos ({role})")
    run_json(["dataset", "clean", *map(str, sessions.values()), "--json"], "clean")
    prepared = out / "prepared"
    run_json(["dataset", "prepare", *map(str, sessions.values()), "--val", str(sessions["val"]),
              "--out", str(prepared), "--force", "--json"], "prepare")
    model = out / "models" / "pilotnet.keras"
    results["train"] = run_json(["train", "--data", str(prepared), "--out", str(model), "--epochs", str(a.epochs),
                                 "--json"], "train (behavioral cloning)")
    for name in {a.track, a.heldout} if not a.quick else {a.track}:
        r = run_json(["train", "evaluate", "--model", str(model), "--track", name, "--laps", str(a.laps),
                      "--out", str(out / "eval" / name), "--json"], f"evaluate cloned model on {name}")
        results["tracks"].setdefault(name, {}).update(cloned_best_lap_s=r["best_lap_s"], cloned_falls=r["falls"],
                                                      cloned_autonomy=r["autonomy"])
    results["drive"] = run_json(["drive", "--model", str(model), "--sim", "--track", a.track, "--laps", "1",
                                 "--port", "0", "--json"], "drive the simulator through the server")
    # The fine-tune starts from this clone, so it trains on the clone's own track (and keeps the held-out one).
    evals = a.track if a.quick else f"{a.track},{a.heldout}"
    ft = run_json(["train.finetune", "--model", str(model), "--track", a.track, "--eval-tracks", evals,
                   "--frames", str(a.rl_frames), "--out", str(out / "finetune"), "--json"],
                  f"RL fine-tune on {a.track}")
    results["finetune"] = ft

    print("\n" + "=" * 72)
    print(f"{'track':10} {'lower bound':>12} {'expert':>10} {'cloned':>10} {'fine-tuned':>11}")
    for name, r in results["tracks"].items():
        tuned = ft.get("rl_best_lap_s") if name == a.track else ft.get("held_out", {}).get(name)
        print(f"{name:10} {fmt(r.get('lower_bound_s')):>12} {fmt(r.get('expert_best_lap_s')):>10} "
              f"{fmt(r.get('cloned_best_lap_s')):>10} {fmt(tuned):>11}")
    print(f"{a.track} fine-tune: cloned {fmt(ft.get('bc_best_lap_s'))} s -> RL {fmt(ft.get('rl_best_lap_s'))} s, "
          f"expert {fmt(ft.get('expert_best_lap_s'))} s, bound {fmt(ft.get('lower_bound_s'))} s")
    print("lap times in game seconds; '-' = not run or no lap completed")
    if a.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
