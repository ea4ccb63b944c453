"""Run the embedded-default pipeline end to end on kartsim and print the table.

expert laps -> record expert demos -> clean -> prepare -> train (clone) ->
evaluate -> drive through the real server -> short PPO fine-tune.

Every stage is the project's own CLI, run as a subprocess with ``--json``;
this script only chains them and reads each one's last output line. The
screen gets one line per stage (its elapsed time and what it produced) and
the final lap-time table; everything the stages print (progress bars, raw
JSON) goes to OUT/demo.log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.cli import add_json, emit_json, fail
from common.defaults import HELD_OUT

PY = sys.executable
PROG = "python -m demo"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _lap(v) -> str:
    return "no lap" if v is None else f"{v:.2f} s"


# What each stage's JSON says, in one short phrase for its progress line.
def _sum_tracks(r):
    return f"{len(r['tracks'])} tracks: " + ", ".join(t["name"] for t in r["tracks"])


def _sum_lap(r):
    text = f"best lap {_lap(r.get('best_lap_s'))}, falls {r.get('falls', 0)}"
    return text + (f", autonomy {r['autonomy']:.0%}" if r.get("autonomy") is not None else "")


def _sum_record(r):
    return f"{r['frames']:,} frames, dropped {r.get('dropped', 0)}"


def _sum_clean(r):
    return f"kept {r['kept']:,} of {r['frames']:,} frames"


def _sum_prepare(r):
    return f"train {r['train']:,} frames, val {r['val']:,}"


def _sum_train(r):
    return f"{r['epochs']} epochs, val loss {r['initial_val_loss']:.3f} -> {r['val_loss']:.3f}"


def _sum_drive(r):
    return (f"{r['laps_completed']}/{r['laps']} laps, falls {r['falls']}, "
            f"{r['steps']:,} frames served, poll p99 {r['client_p99_ms']:.1f} ms")


def _sum_generalise(r):
    held = r.get("held_out")
    text = (f"finished {r['finished']}/{r['tracks']} unseen tracks ({r['finish_rate']:.0%}), median lap "
            f"{fmt(r.get('median_ratio'))}x the expert's")
    return text + (f"; {held['track']} {_lap(held.get('best_lap_s'))}" if held else "")


def _sum_finetune(r):
    return f"{r['frames']:,} game frames at {r['frames_per_s']:,.0f}/s, best lap {_lap(r.get('rl_best_lap_s'))}"


class Stages:
    """Runs the stage CLIs: one line per stage on screen, all their output in ``log``."""

    def __init__(self, log: Path, total: int):
        self.log_path = log
        self.log = open(log, "w", buffering=1)  # line-buffered: the children's stderr goes to the same file
        self.total, self.done = total, 0
        self.start = time.monotonic()

    def run(self, args: list[str], label: str, summary=None) -> dict:
        """Run ``python -m ARGS``, print its progress line, return its last-line JSON."""
        self.done += 1
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total}] {label:<42}", end=" ", flush=True)
        self.log.write(f"\n=== [{self.done}/{self.total}] {label}: python -m {' '.join(args)}\n")
        t0 = time.monotonic()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}  # quiet TF start-up
        proc = subprocess.Popen([PY, "-m", *args], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        last = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log.write(line)
            if line.strip():
                last = line.strip()
        code = proc.wait()
        took = time.monotonic() - t0
        self.log.write(f"=== {label}: exit {code}, {took:.1f} s\n")
        if code != 0:
            self._fail(label, f"failed (exit {code})")
        try:
            result = json.loads(last)
        except json.JSONDecodeError:
            self._fail(label, f"printed no JSON last line: {last[:200]!r}")
        try:
            said = summary(result) if summary else ""
        except (KeyError, TypeError, ValueError):
            said = ""
        print(f"{took:6.0f} s   {said}".rstrip(), flush=True)
        return result

    def _fail(self, label: str, what: str):
        self.log.flush()
        print("FAILED", flush=True)
        tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
        print("\n".join("    " + line for line in tail), file=sys.stderr)
        fail(PROG, f"stage '{label}' {what}; its whole output is in {self.log_path}")

    def elapsed(self) -> str:
        return _clock(time.monotonic() - self.start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/demo", metavar="DIR",
                   help="the folder for sessions, arrays, models and demo.log (default: %(default)s)")
    p.add_argument("--track", default="luigi", help="training track (default: %(default)s)")
    p.add_argument("--heldout", default=HELD_OUT, help="held-out track for generalisation (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=600, help="seconds of expert demos to record (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.3, help="DART steering noise while recording (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: %(default)s)")
    p.add_argument("--laps", type=int, default=3, help="evaluation laps (default: %(default)s)")
    p.add_argument("--rl-frames", type=int, default=200_000, help="game frames of the short fine-tune (default: %(default)s)")
    p.add_argument("--gen-tracks", type=int, default=20,
                   help="generated tracks the clone has never seen, one lap each (bench.generalise), "
                   "0 = skip (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the clone's training and of the fine-tune (the two recordings use 0 and 1), so "
                   "two runs start from the same weights (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every stage (used by the tests)")
    add_json(p, "also print the results as one JSON object, the last line of stdout")
    a = p.parse_args(argv)
    # --quick's game-time caps: its 2-epoch clone rarely finishes a lap, so the drive and the fine-tune's
    # evaluations would otherwise run to their full caps (180 s a lap; 10 + 2.5 x bound x laps)
    quick_drive, quick_eval = [], []
    if a.quick:
        a.seconds, a.epochs, a.laps, a.rl_frames, a.gen_tracks = 40, 2, 1, 2_000, min(a.gen_tracks, 2)
        quick_drive, quick_eval = ["--max-seconds", "30"], ["--eval-laps", "1", "--eval-max-s", "30"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"tracks": {}}
    eval_tracks = [a.track] if a.quick else list(dict.fromkeys([a.track, a.heldout]))

    # stages: tracks, expert per track, 2 recordings, clean, prepare, train, evaluations, generalise, drive,
    # fine-tune
    # (the expert runs on every built-in track, 3 of them, unless --quick)
    n_expert = 1 if a.quick else 3
    st = Stages(out / "demo.log", total=1 + n_expert + 4 + 1 + len(eval_tracks) + (a.gen_tracks > 0) + 2)
    print(f"KartPilot demo on kartsim: clone the scripted expert on {a.track}, drive it, fine-tune it.")
    print(f"Each stage's own output (progress, raw JSON) goes to {st.log_path}\n")

    tracks = st.run(["envs.kartsim", "tracks", "--json"], "built-in tracks", _sum_tracks)["tracks"]
    names = [t["name"] for t in tracks] if not a.quick else [a.track]
    st.total += len(names) - n_expert  # a --track file of your own, or a future built-in track
    for name in names:
        r = st.run(["envs.kartsim", "expert", "--track", name, "--laps", str(a.laps), "--json"],
                   f"scripted expert on {name}", _sum_lap)
        results["tracks"][name] = {"expert_best_lap_s": r["best_lap_s"], "lower_bound_s": r["lower_bound_s"],
                                   "expert_falls": r["falls"]}

    # Two sessions, so prepare can keep one whole session for validation. DART noise: the
    # expert's kart is perturbed while the clean label is recorded (plain demos clone poorly).
    stamp = int(time.time())
    sessions = {}
    for role, seconds, seed in (("train", a.seconds, 0), ("val", max(a.seconds / 6, 20), 1)):
        sessions[role] = out / "sessions" / f"expert-{a.track}-{role}-{stamp}"
        st.run(["record", "--source", "sim", "--track", a.track, "--seconds", str(seconds), "--fast",
                "--noise", str(a.noise), "--seed", str(seed), "--laps", "1000", "--quiet",
                "--out", str(sessions[role]), "--json"], f"record {seconds:.0f} s of expert demos ({role})",
               _sum_record)
    st.run(["dataset", "clean", *map(str, sessions.values()), "--json"], "clean", _sum_clean)
    prepared = out / "prepared"
    st.run(["dataset", "prepare", *map(str, sessions.values()), "--val", str(sessions["val"]),
            "--out", str(prepared), "--force", "--json"], "prepare (crop, resize, split)", _sum_prepare)
    model = out / "models" / "pilotnet.keras"
    results["train"] = st.run(["train", "--data", str(prepared), "--out", str(model), "--epochs", str(a.epochs),
                               "--seed", str(a.seed), "--json"], "train PilotNet (behavioral cloning)", _sum_train)
    for name in eval_tracks:
        r = st.run(["train", "evaluate", "--model", str(model), "--track", name, "--laps", str(a.laps),
                    "--out", str(out / "eval" / name), "--json"], f"evaluate the clone on {name}", _sum_lap)
        results["tracks"].setdefault(name, {}).update(cloned_best_lap_s=r["best_lap_s"], cloned_falls=r["falls"],
                                                      cloned_autonomy=r["autonomy"])
    if a.gen_tracks > 0:
        results["generalise"] = st.run(
            ["bench.generalise", "--model", str(model), "--tracks", str(a.gen_tracks), "--laps", "1",
             "--out", str(out / "generalise"), "--json"],
            f"generalise: {a.gen_tracks} generated tracks never trained on, and {HELD_OUT}", _sum_generalise)
    results["drive"] = st.run(["drive", "--model", str(model), "--sim", "--track", a.track, "--laps", "1",
                               "--port", "0", *quick_drive, "--json"], "drive kartsim through the server", _sum_drive)
    # The fine-tune starts from this clone, so it trains on the clone's own track (and keeps the held-out one).
    evals = ",".join(eval_tracks)
    ft = st.run(["train.finetune", "--model", str(model), "--track", a.track, "--eval-tracks", evals,
                 "--frames", str(a.rl_frames), "--seed", str(a.seed), "--out", str(out / "finetune"), *quick_eval,
                 "--json"],
                f"PPO fine-tune on {a.track} ({a.rl_frames:,} frames)", _sum_finetune)
    results["finetune"] = ft

    print(f"\nall {st.done} stages done in {st.elapsed()} (min:s)\n")
    print(f"{'track':10} {'lower bound':>12} {'expert':>10} {'cloned':>10} {'fine-tuned':>11}")
    for name, r in results["tracks"].items():
        tuned = ft.get("rl_best_lap_s") if name == a.track else ft.get("held_out", {}).get(name)
        print(f"{name:10} {fmt(r.get('lower_bound_s')):>12} {fmt(r.get('expert_best_lap_s')):>10} "
              f"{fmt(r.get('cloned_best_lap_s')):>10} {fmt(tuned):>11}")
    print(f"{a.track} fine-tune: cloned {fmt(ft.get('bc_best_lap_s'))} s -> RL {fmt(ft.get('rl_best_lap_s'))} s, "
          f"expert {fmt(ft.get('expert_best_lap_s'))} s, bound {fmt(ft.get('lower_bound_s'))} s")
    print("lap times in game seconds; '-' = not run or no lap completed")
    g = results.get("generalise")
    if g:
        print(f"unseen tracks: finished {g['finished']}/{g['tracks']} ({g['finish_rate']:.0%}), median lap "
              f"{fmt(g.get('median_ratio'))}x the expert's, p90 {fmt(g.get('p90_ratio'))}x "
              f"(worst tracks: {g.get('sheet')})")
    print(f"\nmodel: {model}; evaluation runs (GIF, trace): {out / 'eval'}; fine-tune: {out / 'finetune'}; "
          f"log: {st.log_path}")
    if a.json:
        emit_json(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
