"""The tf.data input pipeline over ``dataset prepare``'s memory-mapped arrays.

Why this shape: frames stay on disk (``np.load(mmap_mode="r")``), so a dataset
larger than RAM trains too; the pipeline shuffles *indices* (cheap, every
epoch), gathers one sorted batch at a time from the memory maps (one
``numpy_function`` per batch, mostly sequential page reads), augments the whole
batch with vectorised TF ops, and prefetches so the next batch is ready while
the model trains on this one. Per-sample Python work would starve the model
on 2 cores; the per-batch gather and the XLA-fused augmentation cost ~2% of a
training step's CPU (``python -m bench.train``).

Augmentation (training only):
* horizontal flip of a random half of the batch, with steering ``x`` negated
  (a mirrored track is a valid track; it also balances left/right turns);
* brightness: each frame scaled by a random factor in ``1 +- brightness``.

Corrections (frames a human took over at drive time) come from another
prepared dir and are oversampled ``corrections_weight`` times per epoch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from common import action as act
from common import frames
from common import state as kstate

SPLITS = ("train", "val")


@dataclass
class Arrays:
    """One prepared dir's split: memory-mapped frames and actions."""

    path: str
    split: str
    frames: np.ndarray  # (N, 66, 200, 3) uint8, memory-mapped
    actions: np.ndarray  # (N, 5) float32
    state: np.ndarray | None = None  # (N, common.state.SIZE) float32 where the arrays keep state features

    def __len__(self) -> int:
        return len(self.frames)


def load_manifest(data_dir: str) -> dict:
    """Read and check ``manifest.json`` (transform and action fields must match this code)."""
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"prepared data dir not found: {data_dir} (run `python -m dataset prepare`)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} missing: {data_dir} is not a prepared data dir")
    with open(path) as f:
        manifest = json.load(f)
    frames.check_transform(manifest.get("transform"), source=f"prepared data {data_dir}")
    fields = manifest.get("action_fields")
    if fields is not None and list(fields) != list(act.FIELDS):
        raise ValueError(f"{path}: action_fields {fields!r} differ from this code's {list(act.FIELDS)!r}")
    if manifest.get("state_fields") is not None:
        kstate.check_fields(manifest["state_fields"], source=f"prepared data {data_dir}")
    return manifest


def load_split(data_dir: str, split: str, state: bool = False) -> Arrays:
    """Memory-map ``{split}_frames.npy`` / ``{split}_actions.npy`` (and ``{split}_state.npy``
    with ``state``) and check their shapes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    fpath = os.path.join(data_dir, f"{split}_frames.npy")
    apath = os.path.join(data_dir, f"{split}_actions.npy")
    for p in (fpath, apath):
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} missing (run `python -m dataset prepare --out {data_dir}`)")
    fr = np.load(fpath, mmap_mode="r")
    ac = np.load(apath, mmap_mode="r")
    if fr.ndim != 4 or fr.shape[1:] != frames.MODEL_SHAPE or fr.dtype != np.uint8:
        raise ValueError(f"{fpath}: expected (N, 66, 200, 3) uint8, got {fr.shape} {fr.dtype}")
    if ac.shape != (len(fr), act.SIZE):
        raise ValueError(f"{apath}: expected ({len(fr)}, {act.SIZE}) actions, got {ac.shape}")
    st = None
    if state:
        spath = os.path.join(data_dir, f"{split}_state.npy")
        if not os.path.exists(spath):
            raise FileNotFoundError(f"{spath} missing: the manifest names state_fields, the file is gone")
        st = np.load(spath, mmap_mode="r")
        if st.shape != (len(fr), kstate.SIZE):
            raise ValueError(f"{spath}: expected ({len(fr)}, {kstate.SIZE}) state rows, got {st.shape}")
        st = np.asarray(st, np.float32)
    return Arrays(data_dir, split, fr, np.asarray(ac, np.float32), st)


class Source:
    """Several Arrays behind one global index (main data + oversampled corrections)."""

    def __init__(self, parts: list[Arrays], weights: list[float] | None = None):
        self.parts = [p for p in parts if len(p)]
        weights = weights or [1.0] * len(parts)
        self.weights = [w for p, w in zip(parts, weights, strict=True) if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        kinds = {p.state is not None for p in self.parts}
        if len(kinds) > 1:
            raise kstate.StateMismatch("some of these prepared arrays keep state features and some do not: "
                                       + ", ".join(f"{p.path} ({'state' if p.state is not None else 'frames only'})"
                                                   for p in self.parts))
        self.has_state = kinds == {True}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def epoch_index(self) -> np.ndarray:
        """Indices of one epoch before shuffling: part i repeated weights[i] times (fractions sampled)."""
        rng = np.random.default_rng()
        out = []
        for start, part, w in zip(self.offsets[:-1], self.parts, self.weights, strict=True):
            idx = np.arange(start, start + len(part), dtype=np.int64)
            whole, frac = divmod(w, 1.0)
            out.extend([idx] * int(whole))
            if frac > 0:
                out.append(rng.choice(idx, size=int(round(frac * len(idx))), replace=False))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, ...]:
        """Frames and actions (and state rows, where kept) at global indices ``idx``, in sorted
        order (mostly sequential page reads; order inside a batch does not matter to SGD)."""
        idx = np.sort(np.asarray(idx, np.int64))
        bounds = np.searchsorted(idx, self.offsets)
        fr, ac, st = [], [], []
        for p, part in enumerate(self.parts):
            local = idx[bounds[p] : bounds[p + 1]] - self.offsets[p]
            if len(local):
                fr.append(part.frames[local])
                ac.append(part.actions[local])
                if self.has_state:
                    st.append(part.state[local])
        out = [fr, ac] + ([st] if self.has_state else [])
        return tuple(a[0] if len(a) == 1 else np.concatenate(a) for a in out)


def augment(x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, brightness: float = 0.2, flip: bool = True):
    """Batch augmentation: random horizontal flip (steering negated) and brightness.

    ``seed`` (shape ``[2]``, integers) fixes the draws: the ops are TF's stateless ones, so the
    same seed gives the same batch in any process and under XLA. (XLA's stateful random ops
    keep one stream per process that ``keras.utils.set_random_seed`` does not reset, so a
    second seeded ``train`` in the same process augmented differently.)"""
    n = tf.shape(x)[0]
    flip_seed, bright_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    if flip:
        do_flip = tf.random.stateless_uniform((n,), flip_seed) < 0.5
        x = tf.where(do_flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
        sign = tf.where(do_flip, -1.0, 1.0)
        y = tf.concat([y[:, :1] * sign[:, None], y[:, 1:]], axis=1)
    if brightness > 0:
        scale = tf.random.stateless_uniform((n, 1, 1, 1), bright_seed, 1.0 - brightness, 1.0 + brightness)
        x = tf.cast(tf.clip_by_value(tf.cast(x, tf.float32) * scale, 0.0, 255.0), tf.uint8)
    return x, y


def _compiled_augment(brightness: float, flip: bool):
    """``augment`` compiled with XLA: it fuses flip + brightness into one pass over the
    batch (~18x less CPU than op-by-op on 2 cores, which the model would otherwise lose).
    Falls back to plain ops where XLA is unavailable."""

    def fn(x, y, seed):
        return augment(x, y, seed, brightness, flip)

    xla = tf.function(fn, jit_compile=True)
    try:
        xla(tf.zeros((1, *frames.MODEL_SHAPE), tf.uint8), tf.zeros((1, act.SIZE), tf.float32),
            tf.zeros((2,), tf.int64))
    except (tf.errors.OpError, NotImplementedError, ValueError):  # pragma: no cover - no XLA here
        return fn
    return xla


def make_dataset(
    source: Source,
    batch_size: int = 64,
    *,
    training: bool = True,
    brightness: float = 0.2,
    flip: bool = True,
) -> tuple[tf.data.Dataset, int]:
    """tf.data over ``source``: (uint8 frames, float32 actions) batches, and steps per epoch.
    With state features the inputs are ``{"frames", "state"}``, and frames are never flipped
    (the lap-position features of a mirrored frame would describe another track).

    Training: reshuffled every epoch, augmented, endless (use ``steps``).
    Validation: in order, not augmented, one pass.
    """
    if not len(source):
        raise ValueError("no samples to build a dataset from")
    n_epoch = len(source.epoch_index()) if training else len(source)
    steps = max(1, math.ceil(n_epoch / batch_size))
    with_state = source.has_state
    flip = flip and not with_state

    def load(idx):
        types = [tf.uint8, tf.float32] + ([tf.float32] if with_state else [])
        fr, ac, *st = tf.numpy_function(source.gather, [idx], types, stateful=False)
        fr.set_shape((None, *frames.MODEL_SHAPE))
        ac.set_shape((None, act.SIZE))
        if with_state:
            st[0].set_shape((None, kstate.SIZE))
            return {"frames": fr, "state": st[0]}, ac
        return fr, ac

    if training:
        # indices only (8 bytes each) are shuffled, in TF: no Python in the loop but the gather.
        # Shuffle before batch and repeat: every epoch is a fresh permutation, batches never
        # straddle epochs; endless because Keras keeps one iterator when steps_per_epoch is set.
        idx = source.epoch_index()  # fractional oversampling is drawn once per run
        ds = tf.data.Dataset.from_tensor_slices(idx).shuffle(len(idx), reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).repeat()
    else:
        # in order; the known length ends each validation pass cleanly
        ds = tf.data.Dataset.range(len(source)).batch(batch_size)
    # One loader thread and a two-batch buffer: a batch costs ~1-2 ms of CPU against ~150 ms
    # for a training step, so more parallelism buys nothing; on a 2-core machine AUTOTUNE's extra
    # threads preempt the model's compute threads and cost ~20% of the training throughput.
    ds = ds.map(load, num_parallel_calls=1, deterministic=not training)
    if training and (flip or brightness > 0):
        aug = _compiled_augment(brightness, flip)
        # one seed pair per batch, drawn from the global seed (``train --seed``) when one is set
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random().batch(2)))
        if with_state:
            ds = ds.map(lambda xy, s: ({"frames": aug(xy[0]["frames"], xy[1], s)[0], "state": xy[0]["state"]},
                                       xy[1]), num_parallel_calls=1)
        else:
            ds = ds.map(lambda xy, s: aug(xy[0], xy[1], s), num_parallel_calls=1)
    opts = tf.data.Options()
    opts.autotune.enabled = False
    opts.threading.private_threadpool_size = 1
    return ds.prefetch(2).with_options(opts), steps


def load_sources(
    data_dir: str, corrections: str | None = None, corrections_weight: float = 1.0
) -> tuple[Source, Source, dict]:
    """Train and val Sources (+ corrections oversampled into train) and the manifest."""
    manifest = load_manifest(data_dir)
    state = manifest.get("state_fields") is not None
    train_parts, weights = [load_split(data_dir, "train", state)], [1.0]
    val_parts = [load_split(data_dir, "val", state)]
    if corrections:
        if corrections_weight <= 0:
            raise ValueError(f"--corrections-weight must be > 0, got {corrections_weight}")
        cstate = load_manifest(corrections).get("state_fields") is not None
        train_parts.append(load_split(corrections, "train", cstate))
        weights.append(corrections_weight)
        val_parts.append(load_split(corrections, "val", cstate))
    train, val = Source(train_parts, weights), Source(val_parts)
    if not len(train):
        raise ValueError(f"{data_dir}: the train split is empty")
    if not len(val):
        raise ValueError(f"{data_dir}: the val split is empty; prepare with a validation split")
    return train, val, manifest
