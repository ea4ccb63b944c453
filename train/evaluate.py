"""Closed-loop evaluation: drive a model (or the expert) in kartsim and measure it.

Figures: ``laps`` completed, ``lap_times``, ``best_lap_s``, ``falls``, ``mini_turbos``, and
``autonomy``, PilotNet's measure read as "share of time with no intervention".
An intervention is a fall, or leaving the road for more than a second. As a
safety driver would, the scripted expert then takes the wheel until the kart
is back on the road (``takeover=True``, the default); time spent falling or
under takeover is intervention time, and autonomy = 1 - that / race time.
``autonomy_pilotnet`` is NVIDIA's formula too: 1 - interventions x 6 s / time.

Style: ``style`` describes the best lap (``envs.kartsim.splits.LapStyle``): the driven line's
length, the mean speed, the shares of its frames boosting and drifting, its drifts and
mini-turbos, how long it drifted on a full charge and what charge its drifts ended with, and
how close it came to the road edge; with ``against`` the reference's best lap gets the same
(``against.style``). ``starts=N`` races from N starts and adds the spread of their best laps.

Robustness: ``perturb=REL, draws=K`` also races K copies of the model whose every weight is
multiplied by (1 + REL x N(0, 1)) (draw k seeded k), from the same starts. At REL = 1e-6, a
change of the size of float round-off, it shows whether the laps and falls are the policy's or
a draw of round-off (README, fine-tuning).

Split times: ``sectors`` gives the best lap's time over each of N equal
stretches of the lap (``envs.kartsim.splits``). ``against=MOVIE`` (a kartsim
movie, such as the planner's race) replays it and lines its best lap up with
this one sector by sector: where the driver loses time to that reference.

Media: a GIF of the run (what the model saw), a strip PNG of a few frames, a
top-down trace PNG of the driven line over the track, coloured by speed, with
interventions marked, and with ``against`` a splits PNG (the sectors on the
map, coloured by time lost, beside the bar of each sector's difference).
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

from common import frames
from common.defaults import SECTORS

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

    def __init__(self, dt: float, model_driving: bool, takeover: bool, media: bool, sectors: int = SECTORS):
        self.dt, self.model_driving, self.takeover, self.media = dt, model_driving, takeover, media
        from envs.kartsim.splits import LapStyle, SplitTimer

        self.splits = SplitTimer(sectors)
        self.style = LapStyle()
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

    def record(self, info: dict, pos: tuple[float, float], edge: float | None = None) -> None:
        """Account one step: position, speed, a new fall, off-road time and takeovers (``edge``: how
        far inside the road edge the kart is, for the lap's style)."""
        self.steps += 1
        self.splits.see(info)
        self.style.see(info, pos, edge)
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
    sectors: int = SECTORS,
    against: str | os.PathLike | None = None,
    starts: int = 1,
    perturb: float = 0.0,
    draws: int = 0,
) -> dict:
    """Drive ``model`` (path, keras model, or None for the expert) for ``laps`` laps; return figures.
    ``against``: a kartsim movie whose best lap the split times are compared with (it must be of ``track``).
    ``starts`` > 1: race again from the starts of seeds ``seed+1 ..``; the result is the first start's,
    with ``starts`` (each start's laps and falls) and ``over_starts`` (their spread) added.
    ``draws`` > 0: add ``perturbed``, the same starts raced by ``draws`` copies of the model with
    relative weight noise ``perturb`` (see ``perturbed_weights``)."""
    if render not in ("model", "full"):
        raise ValueError(f"render must be 'model' or 'full', got {render!r}")
    if laps < 1:
        raise ValueError(f"laps must be >= 1, got {laps}")
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts}")
    if perturb < 0 or draws < 0:
        raise ValueError(f"perturb and draws must be >= 0, got perturb={perturb}, draws={draws}")
    if draws and model is None:
        raise ValueError("perturb needs a model (the expert has no weights)")
    if policy is None and model is not None:
        from train.policy import Policy

        policy = Policy(model)
    kw = dict(track=track, laps=laps, render=render, max_seconds=max_seconds, takeover=takeover,
              progress=progress, policy=policy, sectors=sectors)
    result = _evaluate_one(model, seed=seed, out_dir=out_dir, media=media, against=against, **kw)
    if starts > 1:
        runs = [result] + [_evaluate_one(model, seed=seed + k, media=False, **kw) for k in range(1, starts)]
        result["starts"] = [{"seed": seed + k, **{f: r[f] for f in START_FIELDS}} for k, r in enumerate(runs)]
        result["over_starts"] = over_starts(result["starts"])
    if draws:
        result["perturbed"] = _perturbed(model, perturb, draws, seed, starts,
                                         {k: v for k, v in kw.items() if k != "policy"})
    return result


def perturbed_weights(weights: list[np.ndarray], rel: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Each weight times (1 + rel x N(0, 1)), in its own dtype: relative noise, so a weight of 0 stays 0
    and each layer is changed in proportion to its own scale."""
    return [(w * (1.0 + rel * rng.standard_normal(np.shape(w)))).astype(np.asarray(w).dtype) for w in weights]


def _perturbed(model, rel: float, draws: int, seed: int, starts: int, kw: dict) -> dict:
    """Race ``starts`` starts (seeds ``seed..``) with each of ``draws`` perturbed copies of ``model``."""
    import keras

    from train.model import load_model
    from train.policy import Policy

    if isinstance(model, (str, os.PathLike)):
        copy = load_model(model)
        base = copy.get_weights()
    else:  # a keras model: drive a clone of it, so the caller's weights are never touched
        copy = keras.models.clone_model(model)
        base = model.get_weights()
    policy = Policy(copy)  # its traced function reads the copy's variables: set_weights changes what it drives
    rows = []
    for k in range(draws):
        copy.set_weights(perturbed_weights(base, rel, np.random.default_rng(k)))
        races = [_evaluate_one(model, seed=seed + j, media=False, policy=policy, **kw) for j in range(starts)]
        per_start = [{"seed": seed + j, **{f: r[f] for f in START_FIELDS}} for j, r in enumerate(races)]
        rows.append({"draw": k, **over_starts(per_start), "per_start": per_start})
    return {"relative_noise": rel, "draws": rows,
            "races": draws * starts, "races_with_a_fall": sum(r["starts_with_a_fall"] for r in rows),
            "draws_with_a_fall": sum(1 for r in rows if r["starts_with_a_fall"])}


START_FIELDS = ("lap_times", "best_lap_s", "laps", "falls", "mini_turbos", "autonomy")


def over_starts(rows: list[dict]) -> dict:
    """The spread of the best lap over several starts: a closed-loop lap is sensitive to the start
    (and to float rounding in the policy), so one start's best lap is one draw of it."""
    best = np.array([r["best_lap_s"] for r in rows if r["best_lap_s"] is not None], float)
    out = {"starts": len(rows), "starts_with_a_lap": int(len(best)),
           "falls": int(sum(r["falls"] for r in rows)),
           "starts_with_a_fall": int(sum(1 for r in rows if r["falls"]))}
    if len(best):
        out.update(best_lap_s=round(float(best.min()), 3), median_best_lap_s=round(float(np.median(best)), 3),
                   worst_best_lap_s=round(float(best.max()), 3))
    return out


def _evaluate_one(model, *, track, laps, render, max_seconds, seed, media, takeover, progress, policy, sectors,
                  out_dir=None, against=None) -> dict:
    from envs import kartsim

    reference = None
    if against is not None:  # before driving: a movie of another track (or version) is refused here
        from envs.kartsim.movie import load_movie, replay

        reference = replay(load_movie(against), track=track, src=str(against), sectors=sectors)
        reference["movie"] = str(against)
    driver = "expert" if policy is None else "model"
    size = frames.MODEL_SHAPE[:2] if render == "model" else (240, 320)
    env = kartsim.make(track=track, size=size, seed=seed, laps=laps, max_time_s=max_seconds)
    try:
        drive = Drive(1.0 / kartsim.FPS, policy is not None, takeover, media, sectors)
        info, terminated = run_laps(env, policy, drive, seed, laps,
                                    tqdm(total=laps, desc=f"{driver} on {track}", unit="lap", disable=not progress))
        result = figures(drive, info, terminated, driver=driver, model=model, policy=policy, track=track,
                         render=render, laps=laps, lower_bound_s=float(kartsim.lower_bound_s(track)))
        if reference is not None:
            result["against"] = against_reference(result["sectors"], reference)
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
            drive.record(info, sim.position(), sim.inside_edge())
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
        "sectors": drive.splits.best(lap_times),
        "style": drive.style.best(lap_times),
        "steps": steps,
        "inference_ms": round(1000 * drive.infer_s / steps, 3) if policy is not None and steps else None,
    }


def against_reference(mine: dict | None, reference: dict) -> dict:
    """The reference movie's best lap and, when this run completed a lap, the sector-by-sector difference."""
    from envs.kartsim.splits import compare

    ref = reference["sectors"]
    out = {"movie": reference["movie"], "lap_times": [round(t, 3) for t in reference["lap_times"]],
           "best_lap_s": None if ref is None else round(ref["lap_s"], 3),
           "sectors_s": None if ref is None else ref["sectors_s"], "style": reference.get("style")}
    if mine is not None and ref is not None:
        out.update(compare(mine, ref))
    return out


def media_dir(out_dir: str | None, model, driver: str, track: str) -> str:
    if out_dir is not None:
        return out_dir
    base = os.path.splitext(model)[0] if isinstance(model, str) else os.path.join("data", "eval", driver)
    return f"{base}.eval-{os.path.splitext(os.path.basename(str(track)))[0]}"


def write_media(drive: Drive, track, result: dict, out_dir: str) -> dict:
    """The GIF, the frame strip and the top-down trace PNG; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    media = {
        "gif": _write_gif(drive.gif, os.path.join(out_dir, "run.gif")),
        "strip": _write_strip(drive.gif, os.path.join(out_dir, "strip.png")),
        "trace": _write_trace(track, np.array(drive.path_xy), np.array(drive.speeds), drive.marks,
                              os.path.join(out_dir, "trace.png"), result),
    }
    if "delta_s" in result.get("against", {}):
        media["splits"] = _write_splits(track, result, os.path.join(out_dir, "splits.png"))
    return media


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


def _write_splits(track, result: dict, path: str) -> str:
    """The sectors on the map, coloured by the time this lap lost (red) or gained (blue) on the reference's
    best lap, numbered; beside it one bar per sector. Written to a temporary file, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = result["against"]
    delta = np.array(ref["delta_s"])
    n = len(delta)
    scale = max(0.05, float(np.abs(delta).max()))
    cmap = plt.get_cmap("coolwarm")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1.1, 1]})
    for edge in track.edges():
        ax.plot(edge[:, 0], edge[:, 1], color="0.35", lw=1)
    m = len(track.xy)
    bounds = np.round(np.arange(n + 1) * m / n).astype(int)
    for k in range(n):
        idx = np.arange(bounds[k], bounds[k + 1] + 1) % m
        pts = track.xy[idx]
        ax.plot(pts[:, 0], pts[:, 1], color=cmap(0.5 + 0.5 * delta[k] / scale), lw=5, solid_capstyle="butt")
        mid = track.xy[(bounds[k] + bounds[k + 1]) // 2 % m]
        ax.annotate(str(k + 1), mid, fontsize=9, ha="center", va="center",
                    bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "0.4"})
    start = track.xy[0]
    ax.scatter([start[0]], [start[1]], marker="s", c="black", s=30, zorder=3, label="start / finish")
    ax.legend(loc="upper right")
    ax.set_aspect("equal")
    ax.set_title(f"{result['driver']} on {result['track']}: best lap {result['best_lap_s']} s, "
                 f"reference {ref['best_lap_s']} s")
    bx.bar(np.arange(1, n + 1), delta, color=[cmap(0.5 + 0.5 * d / scale) for d in delta], edgecolor="0.3")
    bx.axhline(0.0, color="0.3", lw=0.8)
    bx.set_xticks(np.arange(1, n + 1))
    bx.set_xlabel("sector (equal stretches of the lap from the start line)")
    bx.set_ylabel("time lost on the reference's best lap (s)")
    bx.set_title(f"{ref['lap_delta_s']:+.2f} s over the lap; reference: {os.path.basename(ref['movie'])}")
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path
