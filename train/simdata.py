"""Teacher demonstrations from kartsim, written straight into prepared-array layout.

Three teachers: ``expert`` (the scripted expert, envs/kartsim/expert.py),
``planner`` (envs/kartsim/planner.py: the search that finds the fastest lap;
it labels every state it is shown, replanning each frame, so its demos teach
its line and its drifts) and ``follower`` (envs/kartsim/follow.py: a
closed-loop driver of one planned race's line and timings, planned once with
an edge margin, so its labels are a plain function of the state). DAgger with the planner as oracle is train/dagger.py.

For tests, benchmarks and quick experiments: the real path is
``record --source sim`` -> ``dataset clean`` -> ``dataset prepare``; this
writes the same ``DIR/{train,val}_{frames,actions}.npy`` + ``manifest.json``
without the PNG round trip.

DART-style noise injection (Laskey et al. 2017): with ``noise > 0`` the
*executed* steering is the expert's plus a slowly varying perturbation, while
the *label* stays the expert's action. The kart then visits states a bit off
the expert's line and the data says how to recover from them, which is what
plain cloning lacks (covariate shift: small errors compound into states the
expert never showed).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from common import action as act
from common import frames
from common import state as kstate
from dataset.arrays import write_arrays
from envs.kartsim.dart import DartNoise
from envs.kartsim.expert import MARGIN_FRAC, Expert, teacher_margin
from envs.kartsim.state import batch_features

TEACHERS = ("expert", "planner", "follower")


def make_teacher(teacher: str, env, config=None, seed: int = 0, expert_margin: float = MARGIN_FRAC,
                 expert_void_margin: float | None = None):
    """``label() -> action (5,)`` for the env's current state, by ``teacher``; ``reset()`` after env resets.

    ``expert_margin``: the expert's line distance from each edge, a share of the mean width;
    ``expert_void_margin``: the same on tracks with no run-off (None: ``expert_margin``)."""
    if teacher == "expert":
        sim = env.unwrapped.sim
        track = env.unwrapped.track
        expert = Expert(track, teacher_margin(track, expert_margin, expert_void_margin))

        class _Expert:
            def label(self):
                return expert.actions(sim.fs, sim.ist)[0]

            def reset(self):
                pass

        return _Expert()
    if teacher == "planner":
        from envs.kartsim.planner import Planner

        sim = env.unwrapped.sim
        planner = Planner(env.unwrapped.track.source, sim.laps, config, seed=seed)

        class _Planner:
            def label(self):
                return planner.label(sim.fs[0], sim.ist[0], sim.lapt[0])

            def reset(self):
                planner.reset()

        return _Planner()
    if teacher == "follower":
        from envs.kartsim.follow import PlannedLine

        sim = env.unwrapped.sim
        line = PlannedLine.plan(env.unwrapped.track.source, config, seed=seed)

        class _Follower:
            planned_lap_s = line.lap_s

            def label(self):
                return line.actions(sim.fs, sim.ist)[0]

            def reset(self):
                pass

        return _Follower()
    raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")


def drive_expert(track: str, n_frames: int, *, size=(66, 200), seed: int = 0, noise: float = 0.0,
                 progress: bool = True, teacher: str = "expert", planner_config=None,
                 expert_margin: float = MARGIN_FRAC, expert_void_margin: float | None = None,
                 state: bool = False, planner_seed: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Let ``teacher`` drive kartsim for ``n_frames`` steps; return model-input frames, its labels, each
    frame's kart state features (``common.state``; None without ``state``) and stats.

    ``noise``: std of the DART steering perturbation (see DartNoise); labels stay the teacher's.
    ``teacher="planner"`` labels each frame by a replan from the state reached (``planner_config``:
    a ``PlannerConfig``), so it also labels the states the noise pushed the kart into.
    """
    from envs import kartsim
    from envs.kartsim import physics

    env = kartsim.make(track=track, size=size, seed=seed, laps=10_000)
    obs, info = env.reset(seed=seed)
    teach = make_teacher(teacher, env, planner_config, seed if planner_seed is None else planner_seed, expert_margin,
                         expert_void_margin)
    dart = DartNoise(noise, seed)
    xs = np.empty((n_frames, *frames.MODEL_SHAPE), np.uint8)
    ys = np.empty((n_frames, act.SIZE), np.float32)
    ss = np.empty((n_frames, kstate.SIZE), np.float32) if state else None
    falls = 0
    bar = tqdm(total=n_frames, desc=f"{teacher} {track}", unit="frame", disable=not progress)
    for i in range(n_frames):
        label = act.as_action(teach.label())
        xs[i], ys[i] = frames.to_model_input(obs), label
        if ss is not None:
            ss[i] = batch_features(env.unwrapped.sim)[0]
        obs, _, terminated, truncated, info = env.step(dart.perturb(label))
        if terminated or truncated:
            falls += int(info.get("falls", 0))
            obs, info = env.reset()
            teach.reset()
        bar.update(1)
    bar.close()
    stats = {"track": track, "teacher": teacher, "frames": n_frames, "noise": noise,
             **({"expert_margin": teacher_margin(env.unwrapped.track, expert_margin, expert_void_margin)}
                if teacher == "expert" else {}),
             **({"planned_lap_s": round(float(teach.planned_lap_s), 3)} if teacher == "follower" else {}), "laps": int(info.get("lap", 0)),
             "lap_times": [round(float(t), 3) for t in info.get("lap_times", [])],
             "falls": falls + int(info.get("falls", 0)),
             "distance": round(float(env.unwrapped.sim.fs[0, physics.PROG]), 1)}  # race progress (units)
    env.close()
    return xs, ys, ss, stats


def split_sessions(n: int, cut: int, name: str, driver: str = "expert") -> list[dict]:
    """Manifest entries of one drive whose first ``cut`` rows are train and the rest val."""
    return [
        {"path": f"{name}-train", "split": "train", "rows": [0, cut], "frames": cut, "source": "sim",
         "drivers": {driver: cut}, "excluded": {}},
        {"path": f"{name}-val", "split": "val", "rows": [0, n - cut], "frames": n - cut,
         "source": "sim", "drivers": {driver: n - cut}, "excluded": {}},
    ]


def expert_dataset(out_dir: str, track: str = "luigi", n_frames: int = 600, *, val_fraction: float = 0.2,
                   size=(66, 200), seed: int = 0, noise: float = 0.0, progress: bool = True,
                   teacher: str = "expert", planner_config=None, tracks: list[str] | None = None,
                   expert_margin: float = MARGIN_FRAC, expert_void_margin: float | None = None,
                   state: bool = False, planner_seed: int | None = None) -> dict:
    """Teacher demos -> prepared arrays. The last ``val_fraction`` of the drive is the val split
    (a contiguous stretch, like a held-out session, so val is not a shuffled copy of train).
    ``state``: keep each frame's kart state features too (``{split}_state.npy``), for a model
    that sees them beside the frame.

    ``tracks``: drive each of these instead of ``track`` (multi-track cloning), ``n_frames``
    shared out evenly, track ``k`` started with seed ``seed + k``; each track's tail is its val.
    ``planner_seed``: the planner's (and the follower's planned race's) seed, ``+ k`` on track ``k``
    (None: the drive's seed)."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    names = list(tracks) if tracks else [track]
    splits: dict = {"train": ([], [], []), "val": ([], [], [])}
    sessions, per_track, at = [], [], {"train": 0, "val": 0}
    for k, name in enumerate(names):
        n_k = n_frames // len(names) + (1 if k < n_frames % len(names) else 0)
        xs, ys, ss, stats = drive_expert(name, n_k, size=size, seed=seed + k, noise=noise, progress=progress,
                                          teacher=teacher, planner_config=planner_config,
                                          expert_margin=expert_margin, expert_void_margin=expert_void_margin,
                                          state=state,
                                          planner_seed=None if planner_seed is None else planner_seed + k)
        per_track.append(stats)
        cut = int(round(len(xs) * (1 - val_fraction)))
        for entry in split_sessions(len(xs), cut, f"sim-{name}", "expert"):
            part = xs[:cut] if entry["split"] == "train" else xs[cut:]
            labels = ys[:cut] if entry["split"] == "train" else ys[cut:]
            splits[entry["split"]][0].append(part)
            splits[entry["split"]][1].append(labels)
            if state:
                splits[entry["split"]][2].append(ss[:cut] if entry["split"] == "train" else ss[cut:])
            start = at[entry["split"]]
            entry["rows"] = [start, start + len(part)]
            at[entry["split"]] += len(part)
            sessions.append(entry)
    arrays = {k: tuple(np.concatenate(a) for a in (v if state else v[:2])) for k, v in splits.items()}
    if tracks is None:
        stats = per_track[0]
    else:
        stats = {"tracks": names, "frames": n_frames, "noise": noise, "teacher": teacher,
                 **({"expert_margin": expert_margin, "expert_void_margin": expert_void_margin}
                    if teacher == "expert" else {}),
                 "laps": sum(s["laps"] for s in per_track), "falls": sum(s["falls"] for s in per_track)}
    write_arrays(out_dir, arrays, sessions, rate_hz=30, expert=stats)
    return stats
