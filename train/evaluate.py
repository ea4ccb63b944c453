"""Closed-loop evaluation: drive a model (or the expert) in kartsim and measure it.

Figures: ``laps`` completed, ``lap_times``, ``best_lap_s``, ``falls``, ``mini_turbos``, and
``autonomy``, PilotNet's measure read as "share of time with no intervention".
An intervention is a fall, or leaving the road for more than a second. As a
safety driver would, the scripted expert then takes the wheel until the kart
is back on the road (``takeover=True``, the default); time spent falling or
under takeover is intervention time, and autonomy = 1 - that / race time.
``autonomy_pilotnet`` is NVIDIA's formula too: 1 - interventions x 6 s / time.

Media: a GIF of the run (what the model saw), a strip PNG of a few frames, and
a top-down trace PNG of the driven line over the track, coloured by speed,
with interventions marked.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

from common import frames

OFFROAD_GRACE_S = 1.0
PILOTNET_INTERVENTION_S = 6.0
GIF_EVERY = 3  # 30 Hz -> 10 fps GIF
GIF_MAX_FRAMES = 400


def evaluate(
    model=None,
    *,
    track: str = "luigi",
    laps: int = 3,
    render: str = "full",
    max_seconds: float | None = None,
    seed: int = 0,
    out_dir: str | None = None,
    media: bool = True,
    takeover: bool = True,
    progress: bool = False,
    policy=None,
) -> dict:
    """Drive ``model`` (path, keras model, or None for the expert) for ``laps`` laps; return figures."""
    from envs import kartsim
    from envs.kartsim import physics

    if render not in ("model", "full"):
        raise ValueError(f"render must be 'model' or 'full', got {render!r}")
    if laps < 1:
        raise ValueError(f"laps must be >= 1, got {laps}")
    if policy is None and model is not None:
        from train.policy import Policy

        policy = Policy(model)
    driver = "expert" if policy is None else "model"
    size = frames.MODEL_SHAPE[:2] if render == "model" else (240, 320)
    env = kartsim.make(track=track, size=size, seed=seed, laps=laps, max_time_s=max_seconds)
    sim = env.unwrapped
    obs, info = env.reset(seed=seed)
    dt = 1.0 / kartsim.FPS

    path_xy, speeds, marks, gif = [], [], [], []
    offroad_s = intervention_s = 0.0
    interventions, taking_over, falls_seen, steps = 0, False, 0, 0
    infer_s = 0.0
    bar = tqdm(total=laps, desc=f"{driver} on {track}", unit="lap", disable=not progress)
    while True:
        x = frames.to_model_input(obs)
        if media and steps % GIF_EVERY == 0 and len(gif) < GIF_MAX_FRAMES:
            gif.append(x)
        if policy is None or taking_over:
            action = sim.expert_action()
        else:
            t0 = time.perf_counter()
            action = policy(x[None])[0]
            infer_s += time.perf_counter() - t0
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        fs = sim.sim.fs[0]
        path_xy.append((fs[physics.X], fs[physics.Y]))
        speeds.append(info["speed"])
        surface = info["surface"]
        if info["falls"] > falls_seen:  # a new fall: one intervention
            falls_seen = info["falls"]
            interventions += 1
            marks.append((fs[physics.X], fs[physics.Y], "fall"))
        offroad_s = offroad_s + dt if surface == "offroad" else 0.0
        if surface != "offroad":
            taking_over = False
        elif offroad_s > OFFROAD_GRACE_S and not taking_over and policy is not None:
            interventions += 1
            marks.append((fs[physics.X], fs[physics.Y], "offroad"))
            taking_over = takeover
        if surface == "falling" or taking_over:
            intervention_s += dt
        if info["lap"] > bar.n:
            bar.update(info["lap"] - bar.n)
        if terminated or truncated:
            break
    bar.close()
    race_s = float(info["t"])
    lap_times = [round(t, 3) for t in info["lap_times"]]
    result = {
        "driver": driver,
        "model": None if model is None else (model if isinstance(model, str) else getattr(policy, "path", None)),
        "track": track,
        "render": render,
        "laps": int(info["lap"]),
        "laps_target": laps,
        "finished": bool(terminated),
        "lap_times": lap_times,
        "best_lap_s": min(lap_times) if lap_times else None,
        "race_time_s": round(race_s, 3),
        "falls": int(info["falls"]),
        "mini_turbos": int(info["mini_turbos"]),
        "interventions": interventions,
        "intervention_s": round(intervention_s, 3),
        "autonomy": round(max(0.0, 1.0 - intervention_s / race_s), 4) if race_s else 0.0,
        "autonomy_pilotnet": round(max(0.0, 1.0 - interventions * PILOTNET_INTERVENTION_S / race_s), 4)
        if race_s else 0.0,
        "lower_bound_s": round(float(kartsim.lower_bound_s(track)), 3),
        "steps": steps,
        "inference_ms": round(1000 * infer_s / steps, 3) if policy is not None and steps else None,
    }
    if media:
        if out_dir is None:
            base = os.path.splitext(model)[0] if isinstance(model, str) else os.path.join("data", "eval", driver)
            out_dir = f"{base}.eval-{os.path.splitext(os.path.basename(str(track)))[0]}"
        os.makedirs(out_dir, exist_ok=True)
        result["media"] = {
            "gif": _write_gif(gif, os.path.join(out_dir, "run.gif")),
            "strip": _write_strip(gif, os.path.join(out_dir, "strip.png")),
            "trace": _write_trace(sim.track, np.array(path_xy), np.array(speeds), marks,
                                  os.path.join(out_dir, "trace.png"), result),
        }
    env.close()
    return result


def _write_gif(imgs: list[np.ndarray], path: str) -> str | None:
    if not imgs:
        return None
    from PIL import Image

    pics = [Image.fromarray(i).resize((i.shape[1] * 2, i.shape[0] * 2), Image.Resampling.NEAREST) for i in imgs]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=int(1000 * GIF_EVERY / 30), loop=0)
    return path


def _write_strip(imgs: list[np.ndarray], path: str, n: int = 8) -> str | None:
    if not imgs:
        return None
    from PIL import Image

    pick = [imgs[i] for i in np.linspace(0, len(imgs) - 1, min(n, len(imgs))).astype(int)]
    Image.fromarray(np.concatenate(pick, axis=0)).save(path)
    return path


def _write_trace(track, xy: np.ndarray, speed: np.ndarray, marks, path: str, result: dict) -> str | None:
    if len(xy) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig, ax = plt.subplots(figsize=(7, 7))
    centre = np.vstack([track.xy, track.xy[:1]])
    half = np.concatenate([track.width, track.width[:1]])[:, None] / 2
    nrm = np.vstack([track.nrm, track.nrm[:1]])
    for side in (-1, 1):
        edge = centre + side * half * nrm
        ax.plot(edge[:, 0], edge[:, 1], color="0.35", lw=1)
    ax.plot(centre[:, 0], centre[:, 1], color="0.75", lw=0.6, ls="--")
    segs = np.stack([xy[:-1], xy[1:]], axis=1)
    jumps = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=1) > 5.0  # respawns: no line across
    lc = LineCollection(segs[~jumps], cmap="viridis", linewidths=1.6)
    lc.set_array(speed[1:][~jumps])
    ax.add_collection(lc)
    fig.colorbar(lc, ax=ax, shrink=0.7, label="speed")
    for kind, colour in (("fall", "red"), ("offroad", "orange")):
        pts = np.array([(mx, my) for mx, my, k in marks if k == kind])
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], c=colour, s=40, marker="x", label=f"{kind} intervention", zorder=3)
    if marks:
        ax.legend(loc="upper right")
    ax.set_aspect("equal")
    best = result["best_lap_s"]
    ax.set_title(f"{result['driver']} on {result['track']}: {result['laps']} laps, best "
                 f"{best if best is not None else '-'} s, falls {result['falls']}, autonomy {result['autonomy']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
