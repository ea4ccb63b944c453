"""Behavioral cloning: fit PilotNet on prepared arrays, with the callbacks a long run needs.

Files of one run, next to ``--out MODEL.keras`` (the best-validation model):

    MODEL.run/last.keras      every epoch's end state, with optimizer (what --resume loads)
    MODEL.run/log.csv         per-epoch loss / val_loss / val_mae (CSVLogger)
    MODEL.run/tb/             TensorBoard logs
    MODEL.run/result.json     the figures ``python -m train --json`` prints
    MODEL.run/*.png           learning curves, predicted vs recorded steering
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import keras
import numpy as np
from tqdm.auto import tqdm

from common import action as act
from train import data as tdata
from train.model import build_pilotnet, euclidean_loss, load_model, save_model


def run_dir(out: str) -> str:
    return os.path.splitext(os.fspath(out))[0] + ".run"


class TqdmProgress(keras.callbacks.Callback):
    """One tqdm bar per epoch on stderr (stdout stays free for the --json line)."""

    def __init__(self, steps: int, epochs: int):
        super().__init__()
        self.steps, self.epochs, self.bar = steps, epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch",
                        file=sys.stderr, leave=True, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and batch % 10 == 0:
            self.bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            logs = logs or {}
            self.bar.set_postfix(loss=f"{logs.get('loss', np.nan):.4f}", val=f"{logs.get('val_loss', np.nan):.4f}")
            self.bar.close()


class Throughput(keras.callbacks.Callback):
    """Training samples/s, timed from epoch start to validation start (validation excluded).
    The first epoch (tracing, pipeline warm-up) is left out when there are later ones."""

    def __init__(self, samples_per_epoch: int):
        super().__init__()
        self.samples, self.epoch_s, self._t0 = samples_per_epoch, [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._t0 is not None:
            self.epoch_s.append(time.perf_counter() - self._t0)
            self._t0 = None

    def rate(self) -> float:
        timed = self.epoch_s[1:] if len(self.epoch_s) > 1 else self.epoch_s
        return self.samples * len(timed) / sum(timed) if timed else 0.0


class SaveLast(keras.callbacks.Callback):
    """Save the end-of-epoch model (with optimizer state) for --resume."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        self.model.save(self.path)


def compile_model(model: keras.Model, lr: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=euclidean_loss, metrics=["mae"],
                  jit_compile=False)  # XLA makes PilotNet 2-4x slower on CPU (measured)
    return model


def _done_epochs(csv_path: str) -> int:
    if not os.path.exists(csv_path):
        return 0
    with open(csv_path) as f:
        return sum(1 for _ in csv.DictReader(f))


def per_field_mae(model: keras.Model, source: tdata.Source, batch_size: int = 256) -> dict[str, float]:
    """Mean absolute error per action field on ``source`` (no augmentation)."""
    ds, _ = tdata.make_dataset(source, batch_size, training=False)
    total = np.zeros(act.SIZE)
    n = 0
    for x, y in ds:
        total += np.abs(np.asarray(model(x, training=False)) - y.numpy()).sum(axis=0)
        n += len(y)
    return {f: round(float(v), 5) for f, v in zip(act.FIELDS, total / max(n, 1), strict=True)}


def train(
    data: str,
    out: str,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    dropout: float = 0.2,
    patience: int = 3,
    brightness: float = 0.2,
    flip: bool = True,
    resume: bool = False,
    corrections: str | None = None,
    corrections_weight: float = 4.0,
    plots: bool = True,
    progress: bool = True,
    seed: int | None = None,
) -> dict:
    """Train and return the figures: train_loss/val_loss (of the best epoch), val_mae per field, ..."""
    if not os.fspath(out).endswith(".keras"):
        raise ValueError(f"--out must end with .keras: {out}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
        np.random.seed(seed)
    train_src, val_src, manifest = tdata.load_sources(data, corrections, corrections_weight)
    train_ds, steps = tdata.make_dataset(train_src, batch_size, brightness=brightness, flip=flip)
    val_ds, _ = tdata.make_dataset(val_src, batch_size, training=False)

    rdir = run_dir(out)
    os.makedirs(rdir, exist_ok=True)
    last, csv_path = os.path.join(rdir, "last.keras"), os.path.join(rdir, "log.csv")
    initial_epoch = 0
    if resume and os.path.exists(last):
        model = load_model(last, compile=True)
        if model.optimizer is None:
            compile_model(model, lr)
        initial_epoch = _done_epochs(csv_path)
    else:
        if resume:
            print(f"--resume: no {last} yet, starting fresh", file=sys.stderr)
        elif os.path.exists(csv_path):
            os.remove(csv_path)  # a fresh run starts a fresh log
        model = compile_model(build_pilotnet(dropout), lr)

    samples_per_epoch = len(train_src.epoch_index())
    thr = Throughput(samples_per_epoch)
    best = keras.callbacks.ModelCheckpoint(os.fspath(out), monitor="val_loss", save_best_only=True)
    if resume and os.path.exists(out) and os.path.exists(csv_path):
        # keep the best-so-far threshold, so a worse resumed epoch does not overwrite it
        with open(csv_path) as f:
            vals = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
        if vals:
            best.best = min(vals)
    callbacks = [
        best,
        SaveLast(last),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=False),
        keras.callbacks.CSVLogger(csv_path, append=resume),
        keras.callbacks.TensorBoard(os.path.join(rdir, "tb"), update_freq="epoch", profile_batch=0),
        thr,
    ]
    if progress:
        callbacks.append(TqdmProgress(steps, epochs))
    initial_val_loss = None
    if initial_epoch == 0:  # the untrained model's val loss: the baseline training must beat
        initial_val_loss = round(float(model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]), 5)
    t0 = time.perf_counter()
    if initial_epoch < epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False)
    wall = time.perf_counter() - t0

    if not os.path.exists(out):  # no epoch ran (e.g. resume of a finished run): keep a model anyway
        save_model(model, out)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RuntimeError(f"training produced no epochs (see {csv_path})")
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    best_model = load_model(out)
    result = {
        "model": os.fspath(out),
        "data": os.fspath(data),
        "train_loss": round(float(best_row["loss"]), 5),
        "val_loss": round(float(best_row["val_loss"]), 5),
        "val_mae": per_field_mae(best_model, val_src),
        "initial_val_loss": initial_val_loss,
        "epochs": len(rows),
        "best_epoch": int(best_row["epoch"]) + 1,
        "samples_per_s": round(thr.rate(), 1),
        "train_samples": len(train_src),
        "val_samples": len(val_src),
        "batch_size": batch_size,
        "wall_s": round(wall, 1),
        "history": {k: [round(float(r[k]), 5) for r in rows] for k in ("loss", "val_loss")},
        "run_dir": rdir,
        "corrections": corrections,
    }
    if plots:
        from train import plots as tplots

        result["plots"] = tplots.write_training_plots(rows, best_model, data, manifest, rdir)
    with open(os.path.join(rdir, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
