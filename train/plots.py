"""PNG plots of a training run: learning curves; predicted vs recorded steering."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers / CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train import data as tdata  # noqa: E402


def learning_curves(rows: list[dict], path: str) -> str:
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("euclidean loss")
    ax.set_title("PilotNet learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def val_session_rows(manifest: dict, n_val: int, limit: int = 900) -> tuple[str, int, int]:
    """(name, start, end) of the first validation session in the manifest (or the first rows)."""
    for s in manifest.get("sessions", []) or []:
        if s.get("split") == "val" and s.get("rows"):
            start, end = (int(v) for v in s["rows"])
            if end > start:
                return os.path.basename(str(s.get("path", "val"))), start, min(end, start + limit)
    return "validation split", 0, min(n_val, limit)


def steering_trace(model, data_dir: str, manifest: dict, path: str) -> str:
    val = tdata.load_split(data_dir, "val", manifest.get("state_fields") is not None)
    name, start, end = val_session_rows(manifest, len(val))
    x = np.asarray(val.frames[start:end])
    st = None if val.state is None else np.asarray(val.state[start:end])

    def inputs(i):
        return x[i : i + 256] if st is None else {"frames": x[i : i + 256], "state": st[i : i + 256]}

    pred = np.concatenate([np.asarray(model(inputs(i), training=False)) for i in range(0, len(x), 256)])
    rec = val.actions[start:end]
    t = np.arange(len(x)) / float(manifest.get("rate_hz", 30) or 30)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, rec[:, 0], label="recorded", lw=1.5)
    ax.plot(t, pred[:, 0], label="predicted", lw=1.0)
    ax.set_xlabel("time in session (s)")
    ax.set_ylabel("steering x")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title(f"steering over {name} (validation)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_training_plots(rows, model, data_dir: str, manifest: dict, out_dir: str) -> dict[str, str]:
    return {
        "learning_curves": learning_curves(rows, os.path.join(out_dir, "learning_curves.png")),
        "steering": steering_trace(model, data_dir, manifest, os.path.join(out_dir, "steering_val.png")),
    }
