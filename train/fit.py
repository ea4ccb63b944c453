"""Behavioral cloning: fit PilotNet on prepared arrays, with the callbacks a long run needs.

Files of one run, next to ``--out MODEL.keras`` (the best-validation model):

    MODEL.run/last.keras      every epoch's end state, with optimizer (what --resume loads)
    MODEL.run/log.csv         per-epoch loss / val_loss / val_mae (CSVLogger's layout)

Every model file is replaced atomically (``common.atomic``): a crash or a full
disk leaves the previous complete file, never a torn one; ``EpochCheckpoint``
orders an epoch's writes so ``--resume`` never runs an epoch twice, and
``--resume`` restores EarlyStopping's count from the log.
    MODEL.run/tb/             TensorBoard logs
    MODEL.run/result.json     the figures ``python -m train --json`` prints
    MODEL.run/*.png           learning curves, predicted vs recorded steering
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

import keras
import numpy as np
from tqdm.auto import tqdm

from common import action as act
from common import atomic
from common import state as kstate
from train import data as tdata
from train.model import build_pilotnet, euclidean_loss, load_model, save_model, state_fields


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


class EpochCheckpoint(keras.callbacks.Callback):
    """Each epoch's end, in an order a crash at any point leaves consistent:

    1. the best-validation model, when this epoch improved on it (atomic replace);
    2. ``last.keras`` (model + optimizer) written complete to a temp file beside it;
    3. the epoch's row appended to ``log.csv`` and fsynced;
    4. the temp file renamed over ``last.keras``.

    ``--resume`` counts the epochs done from the CSV rows and loads ``last.keras``:
    a crash before 3 repeats nothing and loses nothing (the old ``last.keras``
    and the old rows agree); a crash between 3 and 4 loses that epoch's weight
    update but never runs an epoch twice. Every model file is always either the
    previous complete one or the new complete one (``common.atomic``).
    """

    def __init__(self, last: str, best: str, csv_path: str, best_val: float | None = None,
                 fresh: bool = False):
        super().__init__()
        self.last, self.best, self.csv_path = last, best, csv_path
        self.best_val = float("inf") if best_val is None else best_val
        self.fresh = fresh  # a fresh run: its first row replaces an earlier run's log (kept until then)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        val = logs.get("val_loss")
        if val is not None and val < self.best_val:
            self.best_val = float(val)
            save_model(self.model, self.best)
        with atomic.replacing(self.last) as tmp:
            self.model.save(tmp)
            append_log_row(self.csv_path, epoch, logs, replace=self.fresh)
            self.fresh = False


def append_log_row(csv_path: str, epoch: int, logs: dict, replace: bool = False) -> None:
    """One epoch's row in CSVLogger's layout (``epoch`` + sorted metric names), flushed and fsynced.
    ``replace``: the row starts a new log, atomically replacing whatever log was there."""
    fields = ["epoch", *sorted(logs)]
    if replace:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fields, extrasaction="ignore")
        w.writeheader()
        w.writerow({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        atomic.write_text(csv_path, buf.getvalue())
        return
    new = not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0
    if not new:
        with open(csv_path, newline="") as f:
            fields = next(csv.reader(f), fields)
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        f.flush()
        os.fsync(f.fileno())


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on ``val_loss`` that, on ``--resume``, starts from the logged epochs' state
    (best value, its epoch, epochs waited since) instead of from scratch."""

    def __init__(self, patience: int, val_losses: list[float] = ()):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=False)
        self.val_losses = [float(v) for v in val_losses]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.val_losses:
            self.best_epoch = int(np.argmin(self.val_losses))
            self.best = self.val_losses[self.best_epoch]
            self.wait = len(self.val_losses) - 1 - self.best_epoch

    @property
    def exhausted(self) -> bool:
        """The logged epochs already ran out of patience (the run before stopped early)."""
        return bool(self.val_losses) and len(self.val_losses) - 1 - int(np.argmin(self.val_losses)) >= self.patience


def compile_model(model: keras.Model, lr: float) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=euclidean_loss, metrics=["mae"],
                  jit_compile=False)  # XLA makes PilotNet 2-4x slower on CPU (measured)
    return model


def read_log(csv_path: str) -> list[dict]:
    """The logged epochs (``log.csv`` rows); [] when there is none yet."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


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
    run = open_run(out, resume, lr, dropout, state=train_src.has_state)
    thr = Throughput(len(train_src.epoch_index()))
    early = ResumableEarlyStopping(patience, [float(r["val_loss"]) for r in run.rows if r.get("val_loss")])
    callbacks = run_callbacks(run, early, thr, steps if progress else None, epochs)
    initial_val_loss = None
    if run.initial_epoch == 0:  # the untrained model's val loss: the baseline training must beat
        initial_val_loss = round(float(run.model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]), 5)
    t0 = time.perf_counter()
    if run.initial_epoch < epochs and not early.exhausted:
        run.model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=run.initial_epoch,
                      steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False)
    wall = time.perf_counter() - t0
    return report(run, data, val_src, manifest, initial_val_loss=initial_val_loss, wall=wall, thr=thr,
                  train_samples=len(train_src), batch_size=batch_size, corrections=corrections, plots=plots)


class Run:
    """One fit's files and starting point (see the module doc)."""

    def __init__(self, out: str, model: keras.Model, rows: list[dict]):
        self.out, self.model, self.rows = os.fspath(out), model, rows
        self.dir = run_dir(out)
        self.last = os.path.join(self.dir, "last.keras")
        self.csv_path = os.path.join(self.dir, "log.csv")
        self.initial_epoch = len(rows)
        self.fresh = False  # True: a new run, whose first row replaces any earlier log


def open_run(out: str, resume: bool, lr: float, dropout: float, state: bool = False) -> Run:
    """Resume from ``last.keras`` and ``log.csv`` (the epochs done = the rows logged), or start fresh.
    ``state``: the data keeps state features, so the model takes them (``build_pilotnet(state=True)``)."""
    rdir = run_dir(out)
    os.makedirs(rdir, exist_ok=True)
    last, csv_path = os.path.join(rdir, "last.keras"), os.path.join(rdir, "log.csv")
    if resume and os.path.exists(last):
        model = load_model(last, compile=True)
        if (state_fields(model) is not None) != state:
            raise kstate.StateMismatch(f"--resume: {last} {'takes' if state_fields(model) else 'does not take'} "
                                       f"state features and the data {'does not keep' if not state else 'keeps'} "
                                       "them; train into a new --out")
        if model.optimizer is None:
            compile_model(model, lr)
        return Run(out, model, read_log(csv_path))
    if resume:
        print(f"--resume: no {last} yet, starting fresh", file=sys.stderr)
    # a fresh run keeps an earlier run's log.csv until its own first epoch replaces it (atomically),
    # so a crash or a full disk before then loses nothing
    run = Run(out, compile_model(build_pilotnet(dropout, state=state), lr), [])
    run.fresh = True
    return run


def run_callbacks(run: Run, early: ResumableEarlyStopping, thr: Throughput, steps: int | None,
                  epochs: int) -> list:
    """Checkpoints (best + last + CSV row, in crash-safe order), early stopping, TensorBoard, progress."""
    # keep the best-so-far threshold on resume, so a worse resumed epoch does not replace the best model
    best_val = min(early.val_losses) if early.val_losses and os.path.exists(run.out) else None
    callbacks = [
        EpochCheckpoint(run.last, run.out, run.csv_path, best_val, fresh=run.fresh),
        early,
        keras.callbacks.TensorBoard(os.path.join(run.dir, "tb"), update_freq="epoch", profile_batch=0),
        thr,
    ]
    if steps is not None:
        callbacks.append(TqdmProgress(steps, epochs))
    return callbacks


def report(run: Run, data: str, val_src, manifest, *, initial_val_loss, wall: float, thr: Throughput,
           train_samples: int, batch_size: int, corrections, plots: bool) -> dict:
    """The figures of the finished fit (best epoch by val_loss), plots, and ``result.json``."""
    out = run.out
    if not os.path.exists(out):  # no epoch ran (e.g. resume of a finished run): keep a model anyway
        save_model(run.model, out)
    rows = read_log(run.csv_path)
    if not rows:
        raise RuntimeError(f"training produced no epochs (see {run.csv_path})")
    best_row = min(rows, key=lambda r: float(r["val_loss"]))
    best_model = load_model(out)
    result = {
        "model": out,
        "data": os.fspath(data),
        "train_loss": round(float(best_row["loss"]), 5),
        "val_loss": round(float(best_row["val_loss"]), 5),
        "val_mae": per_field_mae(best_model, val_src),
        "initial_val_loss": initial_val_loss,
        "epochs": len(rows),
        "best_epoch": int(best_row["epoch"]) + 1,
        "samples_per_s": round(thr.rate(), 1),
        "train_samples": train_samples,
        "val_samples": len(val_src),
        "batch_size": batch_size,
        "wall_s": round(wall, 1),
        "history": {k: [round(float(r[k]), 5) for r in rows] for k in ("loss", "val_loss")},
        "run_dir": run.dir,
        "corrections": corrections,
    }
    if plots:
        from train import plots as tplots

        result["plots"] = tplots.write_training_plots(rows, best_model, data, manifest, run.dir)
    atomic.write_text(os.path.join(run.dir, "result.json"), json.dumps(result, indent=2))
    return result
