"""The learning-curve PNG: evaluation best lap per track vs frames, with the baselines, and the return."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from train.finetune.settings import track_label, track_set  # noqa: E402


def plot_curves(trainer, path: str) -> str:
    c = trainer.cfg
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, track in enumerate(c.eval_tracks):
        # a set of tracks is drawn by its mean lap (its best lap would be its shortest track's)
        key_lap = "mean_lap_s" if track_set(track) else "best_lap_s"
        rows = [e for e in trainer.evals if e["track"] == track and e[key_lap]]
        color = f"C{i}"
        name = track_label(track) + (", mean lap" if track_set(track) else "")
        label = f"fine-tuned, {name}" + (" (held out)" if track != c.track and not track_set(track) else "")
        ax1.plot([r["frames"] for r in rows], [r[key_lap] for r in rows], "o-", color=color, label=label)
        falls = [r for r in rows if r["falls"]]
        if falls:
            ax1.plot([r["frames"] for r in falls], [r[key_lap] for r in falls], "x", color="red", ms=9)
        base = trainer.baselines.get(track, {})
        if not rows and not (base.get("cloned") or {}).get(key_lap):
            continue  # neither policy laps it: its expert line would only stretch the lap axis
        for key, style in (("cloned", "--"), ("expert", ":")):
            lap = (base.get(key) or {}).get(key_lap)
            if lap:
                ax1.axhline(lap, ls=style, color=color, alpha=0.7, label=f"{key}, {name}")
    # the bound sits ~25% below every policy: drawn as a line it would flatten tenths of a second
    bound = trainer.baselines.get(c.track, {}).get("lower_bound_s")
    if c.warmup_frames:
        ax1.axvline(c.warmup_frames, color="grey", lw=0.8)
    planned = trainer.baselines.get(c.track, {}).get("planned_lap_s")
    title = ("Lap time (x = eval had falls)" + (f"; {c.track} lower bound {bound:.2f} s" if bound else "")
             + (f", planner {planned:.2f} s" if planned else ""))
    ax1.set(xlabel="game frames", ylabel="best evaluation lap (s)", title=title)
    ax1.legend(fontsize=7)
    hist = [h for h in trainer.history if h.get("return_mean") is not None]
    ax2.plot([h["frames"] for h in hist], [h["return_mean"] for h in hist], color="C2")
    ax2.set(xlabel="game frames", ylabel="episode return (last 20)", title="Training return")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
