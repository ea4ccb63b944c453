"""Expert demonstrations from kartsim, written straight into prepared-array layout.

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
from dataset.arrays import write_arrays
from envs.kartsim.dart import DartNoise


def drive_expert(track: str, n_frames: int, *, size=(66, 200), seed: int = 0, noise: float = 0.0,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run kartsim's expert for ``n_frames`` steps; return model-input frames, expert labels, stats.

    ``noise``: std of the DART steering perturbation (see DartNoise); labels stay the expert's.
    """
    from envs import kartsim

    env = kartsim.make(track=track, size=size, seed=seed, laps=10_000)
    obs, info = env.reset(seed=seed)
    dart = DartNoise(noise, seed)
    xs = np.empty((n_frames, *frames.MODEL_SHAPE), np.uint8)
    ys = np.empty((n_frames, act.SIZE), np.float32)
    falls = 0
    bar = tqdm(total=n_frames, desc=f"expert {track}", unit="frame", disable=not progress)
    for i in range(n_frames):
        label = act.as_action(env.unwrapped.expert_action())
        xs[i], ys[i] = frames.to_model_input(obs), label
        obs, _, terminated, truncated, info = env.step(dart.perturb(label))
        if terminated or truncated:
            falls += int(info.get("falls", 0))
            obs, info = env.reset()
        bar.update(1)
    bar.close()
    stats = {"track": track, "frames": n_frames, "noise": noise, "laps": int(info.get("lap", 0)),
             "lap_times": [round(float(t), 3) for t in info.get("lap_times", [])],
             "falls": falls + int(info.get("falls", 0))}
    env.close()
    return xs, ys, stats


def expert_dataset(out_dir: str, track: str = "luigi", n_frames: int = 600, *, val_fraction: float = 0.2,
                   size=(66, 200), seed: int = 0, noise: float = 0.0, progress: bool = True,
                   tracks: list[str] | None = None) -> dict:
    """Expert demos -> prepared arrays. The last ``val_fraction`` of the drive is the val split
    (a contiguous stretch, like a held-out session, so val is not a shuffled copy of train).

    ``tracks``: drive each of these instead of ``track`` (multi-track cloning), ``n_frames``
    shared out evenly, track ``k`` started with seed ``seed + k``; each track's tail is its val."""
    names = list(tracks) if tracks else [track]
    splits: dict = {"train": ([], []), "val": ([], [])}
    sessions, per_track, at = [], [], {"train": 0, "val": 0}
    for k, name in enumerate(names):
        n_k = n_frames // len(names) + (1 if k < n_frames % len(names) else 0)
        xs, ys, stats = drive_expert(name, n_k, size=size, seed=seed + k, noise=noise, progress=progress)
        per_track.append(stats)
        cut = int(round(len(xs) * (1 - val_fraction)))
        for split, part in (("train", slice(0, cut)), ("val", slice(cut, None))):
            n = len(xs[part])
            splits[split][0].append(xs[part])
            splits[split][1].append(ys[part])
            sessions.append({"path": f"sim-{name}-{split}", "split": split, "rows": [at[split], at[split] + n],
                             "frames": n, "source": "sim", "drivers": {"expert": n}, "excluded": {}})
            at[split] += n
    arrays = {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in splits.items()}
    if tracks is None:
        stats = per_track[0]
    else:
        stats = {"tracks": names, "frames": n_frames, "noise": noise,
                 "laps": sum(s["laps"] for s in per_track), "falls": sum(s["falls"] for s in per_track)}
    write_arrays(out_dir, arrays, sessions, rate_hz=30, expert=stats)
    return stats
