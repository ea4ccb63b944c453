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
GIF_EVERY = 3  # every 3rd game frame: kartsim's 30 fps -> a 10 fps GIF
GIF_MAX_FRAMES = 400


class Drive:
    """One evaluation run's record, step by step: the driven line, speeds, interventions, GIF frames.

    An intervention is a fall, or more than ``OFFROAD_GRACE_S`` off the road while
    the model drives; with ``takeover`` the expert then drives until the kart is
    back on the road. Time falling or under takeover is intervention time.
    """

    def __init__(self, dt: float, model_driving: bool, takeover: bool, media: bool):
        self.dt, self.model_driving, self.takeover, self.media = dt, model_driving, takeover, media
        self.path_xy: list[tuple[float, float]] = []
        self.speeds: list[float] = []
        self.marks: list[tuple[float, float, str]] = []
        self.gif: list[np.ndarray] = []
        self.offroad_s = self.intervention_s = self.infer_s = 0.0
        self.interventions, self.falls_seen, self.steps = 0, 0, 0
        self.taking_over = False

    def see(self, x: np.ndarray) -> None:
        """Keep every GIF_EVERY-th model input for the GIF and the strip."""
        if self.media and self.steps % GIF_EVERY == 0 and len(self.gif) < GIF_MAX_FRAMES:
            self.gif.append(x)

    def expert_drives(self) -> bool:
        return not self.model_driving or self.taking_over

    def record(self, info: dict, pos: tuple[float, float]) -> None:
        """Account one step: position, speed, a new fall, off-road time and takeovers."""
        self.steps += 1
        self.path_xy.append(pos)
        self.speeds.append(info["speed"])
        surface = info["surface"]
        if info["falls"] > self.falls_seen:  # a new fall: one intervention
            self.falls_seen = info["falls"]
            self.interventions += 1
            self.marks.append((*pos, "fall"))
        self.offroad_s = self.offroad_s + self.dt if surface == "offroad" else 0.0
        if surface != "offroad":
            self.taking_over = False
        elif self.offroad_s > OFFROAD_GRACE_S and not self.taking_over and self.model_driving:
            self.interventions += 1
            self.marks.append((*pos, "offroad"))
            self.taking_over = self.takeover
        if surface == "falling" or self.taking_over:
            self.intervention_s += self.dt


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
    try:
        drive = Drive(1.0 / kartsim.FPS, policy is not None, takeover, media)
        info, terminated = run_laps(env, policy, drive, seed, laps,
                                    tqdm(total=laps, desc=f"{driver} on {track}", unit="lap", disable=not progress))
        result = figures(drive, info, terminated, driver=driver, model=model, policy=policy, track=track,
                         render=render, laps=laps, lower_bound_s=float(kartsim.lower_bound_s(track)))
        if media:
            result["media"] = write_media(drive, env.unwrapped.track, result, media_dir(out_dir, model, driver, track))
    finally:
        env.close()
    return result


def run_laps(env, policy, drive: Drive, seed: int, laps: int, bar) -> tuple[dict, bool]:
    """Step until the race ends (or is cut off); returns the last info and whether it finished.
    A state model (``policy.needs_state``) sees the kart's state features beside each frame."""
    from envs.kartsim.state import batch_features

    sim = env.unwrapped
    obs, info = env.reset(seed=seed)
    with bar:
        while True:
            x = frames.to_model_input(obs)
            drive.see(x)
            if drive.expert_drives():
                action = sim.expert_action()
            else:
                t0 = time.perf_counter()
                if getattr(policy, "needs_state", False):
                    action = policy(x[None], batch_features(sim.sim))[0]
                else:
                    action = policy(x[None])[0]
                drive.infer_s += time.perf_counter() - t0
            obs, _, terminated, truncated, info = env.step(action)
            drive.record(info, sim.position())
            if info["lap"] > bar.n:
                bar.update(info["lap"] - bar.n)
            if terminated or truncated:
                return info, bool(terminated)


def figures(drive: Drive, info: dict, terminated: bool, *, driver, model, policy, track, render, laps,
            lower_bound_s: float) -> dict:
    """The result dict: laps, lap times, falls, mini-turbos, interventions and autonomy, inference time."""
    race_s = float(info["t"])
    lap_times = [round(t, 3) for t in info["lap_times"]]
    steps = drive.steps
    return {
        "driver": driver,
        "model": None if model is None else (model if isinstance(model, str) else getattr(policy, "path", None)),
        "track": track,
        "render": render,
        "laps": int(info["lap"]),
        "laps_target": laps,
        "finished": terminated,
        "lap_times": lap_times,
        "best_lap_s": min(lap_times) if lap_times else None,
        "race_time_s": round(race_s, 3),
        "falls": int(info["falls"]),
        "mini_turbos": int(info["mini_turbos"]),
        "interventions": drive.interventions,
        "intervention_s": round(drive.intervention_s, 3),
        "autonomy": round(max(0.0, 1.0 - drive.intervention_s / race_s), 4) if race_s else 0.0,
        "autonomy_pilotnet": round(max(0.0, 1.0 - drive.interventions * PILOTNET_INTERVENTION_S / race_s), 4)
        if race_s else 0.0,
        "lower_bound_s": round(lower_bound_s, 3),
        "steps": steps,
        "inference_ms": round(1000 * drive.infer_s / steps, 3) if policy is not None and steps else None,
    }


def media_dir(out_dir: str | None, model, driver: str, track: str) -> str:
    if out_dir is not None:
        return out_dir
    base = os.path.splitext(model)[0] if isinstance(model, str) else os.path.join("data", "eval", driver)
    return f"{base}.eval-{os.path.splitext(os.path.basename(str(track)))[0]}"


def write_media(drive: Drive, track, result: dict, out_dir: str) -> dict:
    """The GIF, the frame strip and the top-down trace PNG; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    return {
        "gif": _write_gif(drive.gif, os.path.join(out_dir, "run.gif")),
        "strip": _write_strip(drive.gif, os.path.join(out_dir, "strip.png")),
        "trace": _write_trace(track, np.array(drive.path_xy), np.array(drive.speeds), drive.marks,
                              os.path.join(out_dir, "trace.png"), result),
    }


def _write_gif(imgs: list[np.ndarray], path: str) -> str | None:
    if not imgs:
        return None
    from PIL import Image

    from envs.kartsim.kart import FPS

    pics = [Image.fromarray(i).resize((i.shape[1] * 2, i.shape[0] * 2), Image.Resampling.NEAREST) for i in imgs]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=int(1000 * GIF_EVERY / FPS), loop=0)
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
    for edge in track.edges():
        ax.plot(edge[:, 0], edge[:, 1], color="0.35", lw=1)
    centre = np.vstack([track.xy, track.xy[:1]])
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
