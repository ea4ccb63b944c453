"""DAgger with the planner as the oracle (Ross et al. 2011; NeuralKart did this with its search AI).

The oracle is the planner (``teacher="planner"``) or the follower of one planned
race (``teacher="follower"``: its labels are a plain function of the state, so a
round costs little more than the clone's own driving). Round 0: the oracle
drives (with DART steering noise) and labels every frame; a clone is trained on
those labels. Round r >= 1:

1. the latest clone drives (``frames_per_round`` frames, from its own pixels,
   and with ``state`` from the kart state features beside them);
2. the oracle labels the states the clone actually visits (``Planner.label``:
   the action it would take from there; the follower's action there; frames
   spent falling or held by Lakitu carry no decision and are left out);
3. the labels are aggregated with every earlier round's;
4. a clone is trained afresh on the aggregate;
5. it is evaluated closed-loop (``train.evaluate``: lap times, falls, ...).

Everything lands in ``OUT/``: ``data-rNN/`` (prepared arrays of the aggregate
after round NN), ``clone-rNN.keras``, ``dagger.json`` (the per-round report,
rewritten atomically after every round) and ``best.keras``, a copy of the best
round's clone so far (``best_round``: the rounds do not improve steadily, a
later clone can fall where an earlier one lapped).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common import action as act
from common import atomic, frames
from common import state as kstate
from common.atomic import write_text
from dataset.arrays import write_arrays
from train.simdata import drive_expert, split_sessions


def _write_report(path: Path, report: dict) -> None:
    write_text(path, json.dumps(report, indent=1))


RESUME_KEYS = ("track", "teacher", "state", "noise", "seed", "planner_seed", "epochs", "demo_frames",
               "frames_per_round", "eval_laps", "planner")


def _resume(report_path: Path, fresh: dict, parts: dict, sessions: list, offsets: dict) -> tuple[dict, int]:
    """Load a stopped run's report and its last round's aggregate into ``parts``/``sessions``/``offsets``;
    return (the report, the next round)."""
    from train.data import load_manifest

    if not report_path.exists():
        raise FileNotFoundError(f"--resume: {report_path} not found: no DAgger run to go on from in "
                                f"{report_path.parent}")
    report = json.loads(report_path.read_text())
    report.setdefault("planner_seed", report.get("seed"))  # a run from before --planner-seed planned with --seed
    for key in RESUME_KEYS:
        if report.get(key) != json.loads(json.dumps(fresh[key])):
            raise ValueError(f"--resume: {report_path} has {key} {report.get(key)!r}, this command "
                             f"{fresh[key]!r}: resume with the run's own settings")
    if not report.get("rounds"):
        raise ValueError(f"--resume: {report_path} records no finished round")
    last = report["rounds"][-1]["round"]
    data = report_path.parent / f"data-r{last:02d}"
    model = report_path.parent / f"clone-r{last:02d}.keras"
    if not model.exists():
        raise FileNotFoundError(f"--resume: {model} (round {last}'s clone) is missing")
    man = load_manifest(str(data))
    for part in ("train", "val"):
        cols = [np.load(data / f"{part}_{name}.npy") for name in ("frames", "actions", *(("state",) if fresh["state"]
                                                                                             else ()))]
        if len(cols[0]) != man[part]:
            raise ValueError(f"--resume: {data}/{part}_frames.npy holds {len(cols[0])} rows, its manifest "
                             f"{man[part]}")
        parts[part].append(tuple(cols))
        offsets[part] = man[part]
    sessions.extend(man["sessions"])
    report.pop("report", None)
    return report, last + 1


def best_round(rounds: list[dict], laps: int) -> dict:
    """The round whose clone to go on from: one that completed its ``laps`` evaluation laps before one that
    did not, then the fewest falls, then the best lap, then the most autonomy (the share it drove)."""
    if not rounds:
        raise ValueError("no DAgger round to choose from")

    def key(r: dict):
        lap = r["best_lap_s"] if r["best_lap_s"] is not None else float("inf")
        return (r["laps"] < laps, r["falls"], lap, -(r["autonomy"] or 0.0), r["round"])

    return min(rounds, key=key)


def clone_visits(model_path: str, track: str, n_frames: int, *, seed: int, planner_config=None,
                 planner_seed: int = 0, progress: bool = False, teacher: str = "planner"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """The clone drives ``n_frames`` frames; the oracle (``teacher``) labels each state it reaches.
    Returns model-input frames, labels, their state rows (a state model; else None) and stats
    (falls, skipped frames, distance)."""
    from envs import kartsim
    from envs.kartsim import physics as P
    from envs.kartsim.state import batch_features
    from train.policy import Policy
    from train.simdata import make_teacher

    policy = Policy(model_path)
    env = kartsim.make(track=track, size=frames.MODEL_SHAPE[:2], seed=seed, laps=10_000)
    obs, _ = env.reset(seed=seed)
    sim = env.unwrapped.sim
    oracle = make_teacher(teacher, env, planner_config, planner_seed)
    xs, ys, ss = [], [], []
    skipped = 0
    bar = tqdm(total=n_frames, desc=f"dagger {track}", unit="frame", disable=not progress)
    for _ in range(n_frames):
        x = frames.to_model_input(obs)
        label = act.as_action(oracle.label())
        row = batch_features(sim) if policy.needs_state else None
        if sim.fs[0, P.FALL] > 0 or sim.fs[0, P.HOLD] > 0:
            skipped += 1  # falling or held by Lakitu: no decision to learn
        else:
            xs.append(x)
            ys.append(label)
            if row is not None:
                ss.append(row[0])
        obs, _, term, trunc, info = env.step((policy(x[None], row) if row is not None else policy(x[None]))[0])
        if term or trunc:
            obs, _ = env.reset()
            oracle.reset()
        bar.update(1)
    bar.close()
    stats = {"frames_driven": n_frames, "labelled": len(xs), "skipped_falling": skipped,
             "falls": int(sim.ist[0, P.FALLS]), "distance": round(float(sim.fs[0, P.PROG]), 1)}
    env.close()
    empty = np.zeros((0, *frames.MODEL_SHAPE), np.uint8)
    state = np.array(ss, np.float32).reshape(-1, kstate.SIZE) if policy.needs_state else None
    return (np.stack(xs) if xs else empty), np.array(ys, np.float32).reshape(-1, act.SIZE), state, stats


def dagger(out_dir: str, track: str = "luigi", *, rounds: int = 3, demo_frames: int = 3000,
           frames_per_round: int = 1500, noise: float = 0.3, epochs: int = 5, batch_size: int = 64,
           val_fraction: float = 0.2, eval_laps: int = 1, eval_max_seconds: float | None = None,
           seed: int = 0, planner_config=None, progress: bool = True, teacher: str = "planner",
           state: bool = False, planner_seed: int | None = None, resume: bool = False) -> dict:
    """Run DAgger for ``rounds`` rounds after round 0; return (and write) the per-round report.
    ``teacher``: the oracle, ``planner`` or ``follower``; ``state``: the clones see the kart state
    features beside the frame (``common.state``); ``planner_seed``: the oracle's seed (the planner
    searches with ``planner_seed + round``, the follower drives the race planned with it), None: ``seed``.
    ``resume``: go on after the last round recorded in ``OUT/dagger.json`` (its aggregate ``data-rNN/``
    and its clone), up to round ``rounds``; the settings must be the recorded run's."""
    if teacher not in ("planner", "follower"):
        raise ValueError(f"the DAgger oracle must be planner or follower, got {teacher!r}")
    from train.evaluate import evaluate
    from train.fit import train

    if rounds < 0 or demo_frames < 2 or frames_per_round < 1 or epochs < 1 or eval_laps < 1:
        raise ValueError("dagger needs rounds >= 0, demo_frames >= 2, frames_per_round >= 1, epochs >= 1, "
                         "eval_laps >= 1")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "dagger.json"
    pseed = seed if planner_seed is None else planner_seed
    report: dict = {"track": track, "teacher": teacher, "state": state, "noise": noise, "seed": seed,
                    "planner_seed": pseed, "epochs": epochs,
                    "demo_frames": demo_frames, "frames_per_round": frames_per_round, "eval_laps": eval_laps,
                    "planner": None if planner_config is None else planner_config.to_dict(), "rounds": []}
    parts: dict[str, list] = {"train": [], "val": []}
    sessions: list[dict] = []
    offsets = {"train": 0, "val": 0}
    first = 0
    if resume:
        report, first = _resume(report_path, report, parts, sessions, offsets)
    for r in range(first, rounds + 1):
        t0 = time.perf_counter()
        if r == 0:
            xs, ys, ss, stats = drive_expert(track, demo_frames, seed=seed, noise=noise, progress=progress,
                                             teacher=teacher, planner_config=planner_config, state=state,
                                             planner_seed=pseed)
            stats = {"driver": f"{teacher} (DART noise)", **stats}
        else:
            xs, ys, ss, stats = clone_visits(str(out / f"clone-r{r - 1:02d}.keras"), track, frames_per_round,
                                             seed=seed + r, planner_config=planner_config,
                                             planner_seed=pseed + r if teacher == "planner" else pseed,
                                             progress=progress, teacher=teacher)
            stats = {"driver": f"clone-r{r - 1:02d}", **stats}
        cut = int(round(len(xs) * (1 - val_fraction)))
        for part, lo, hi in (("train", 0, cut), ("val", cut, len(xs))):
            parts[part].append((xs[lo:hi], ys[lo:hi]) + ((ss[lo:hi],) if state else ()))
        for s in split_sessions(len(xs), cut, f"dagger-r{r:02d}-{track}"):
            n = s["frames"]
            s["rows"] = [offsets[s["split"]], offsets[s["split"]] + n]
            offsets[s["split"]] += n
            sessions.append(s)
        data = out / f"data-r{r:02d}"
        agg = {p: tuple(np.concatenate(cols) for cols in zip(*parts[p], strict=True)) for p in ("train", "val")}
        if len(agg["train"][0]) == 0 or len(agg["val"][0]) == 0:
            raise ValueError(f"dagger round {r}: no labelled frames to train on (every frame was spent falling)")
        write_arrays(data, agg, sessions, rate_hz=30, dagger_round=r)
        model = out / f"clone-r{r:02d}.keras"
        fit = train(str(data), str(model), epochs=epochs, batch_size=batch_size, plots=False, progress=progress,
                    seed=seed + r)
        ev = evaluate(str(model), track=track, laps=eval_laps, render="model", max_seconds=eval_max_seconds,
                      seed=seed, media=False)
        report["rounds"].append({
            "round": r, "collected": stats, "labels_total": int(len(agg["train"][0]) + len(agg["val"][0])),
            "data": str(data), "model": str(model), "val_loss": fit.get("val_loss"),
            "laps": ev["laps"], "lap_times": ev["lap_times"], "best_lap_s": ev["best_lap_s"],
            "falls": ev["falls"], "finished": ev["finished"], "mini_turbos": ev["mini_turbos"],
            "interventions": ev["interventions"], "autonomy": ev["autonomy"],
            "seconds": round(time.perf_counter() - t0, 1)})
        best = best_round(report["rounds"], eval_laps)
        if best["round"] == r:  # a copy, so that a later round never changes what best.keras holds
            with atomic.replacing(out / "best.keras") as tmp:
                shutil.copyfile(model, tmp)
        report["best_round"] = best["round"]
        report["best_model"] = str(out / "best.keras")
        _write_report(report_path, report)
        if progress:
            last = report["rounds"][-1]
            print(f"dagger {track} round {r}: {last['labels_total']} labels, laps {last['lap_times']} "
                  f"best {last['best_lap_s']} s, falls {last['falls']}; best round so far: {best['round']} "
                  "(best.keras)", flush=True)
    report["report"] = str(report_path)
    _write_report(report_path, report)
    return report
