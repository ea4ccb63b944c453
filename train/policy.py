"""Batched, thread-safe inference for drive, evaluate and finetune.

``Policy(model)`` traces one ``tf.function`` with a fixed input signature
(``(None, 66, 200, 3)`` uint8), warms it once, and keeps the concrete function:
calls never retrace, so the drive server's threads can share one Policy
without re-entering TensorFlow's tracing machinery (the one non-thread-safe
part). Outputs go through ``common.action.clip_batch``: always in range.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of CLI output

import numpy as np
import tensorflow as tf

from common import action as act
from common import frames
from common import state as kstate


class Policy:
    """``policy(frames)``: ``(N, 66, 200, 3)`` uint8 -> ``(N, 5)`` float32 action vectors.

    ``model`` is a keras model from ``train.model`` or a path to a ``.keras`` file
    (loaded with the transform check). A single frame ``(66, 200, 3)`` gives ``(5,)``.
    A model built with state features (``needs_state``) is called as
    ``policy(frames, state)`` with ``(N, common.state.SIZE)`` float32 state rows.
    """

    def __init__(self, model, *, warm: bool = True):
        if isinstance(model, (str, os.PathLike)):
            from train.model import load_model

            self.path = os.fspath(model)
            model = load_model(model)
        else:
            self.path = None
        self.model = model
        from train.model import state_fields

        self.needs_state = state_fields(model) is not None
        spec = tf.TensorSpec(shape=(None, *frames.MODEL_SHAPE), dtype=tf.uint8, name="frames")
        sspec = tf.TensorSpec(shape=(None, kstate.SIZE), dtype=tf.float32, name="state")

        if self.needs_state:
            @tf.function(input_signature=[spec, sspec], reduce_retracing=True)
            def infer(x, s):
                return tf.cast(model({"frames": x, "state": s}, training=False), tf.float32)
        else:
            @tf.function(input_signature=[spec], reduce_retracing=True)
            def infer(x):
                return tf.cast(model(x, training=False), tf.float32)

        self._infer = infer.get_concrete_function()
        if warm:
            self(np.zeros((1, *frames.MODEL_SHAPE), np.uint8), np.zeros((1, kstate.SIZE), np.float32))

    def __call__(self, batch, state=None) -> np.ndarray:
        """Actions for frames (and, for a state model, their state rows; ignored otherwise)."""
        arr = np.asarray(batch)
        single = arr.ndim == 3
        if single:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != frames.MODEL_SHAPE:
            raise ValueError(
                f"policy input must be (N, {', '.join(map(str, frames.MODEL_SHAPE))}) frames "
                f"from common.frames.to_model_input, got shape {np.shape(batch)}"
            )
        if arr.dtype != np.uint8:
            raise ValueError(f"policy input must be uint8 frames, got dtype {arr.dtype}")
        if arr.shape[0] == 0:
            return np.zeros((0, act.SIZE), np.float32)
        args = [tf.convert_to_tensor(arr)]
        if self.needs_state:
            rows = kstate.as_rows(state, len(arr), source=f"model {self.path or self.model.name}")
            args.append(tf.convert_to_tensor(rows))
        out = act.clip_batch(self._infer(*args).numpy())
        # NaN can only come from a broken model; neutral input is the safe answer.
        if not np.isfinite(out).all():
            out = np.where(np.isfinite(out), out, act.NEUTRAL)
        return out[0] if single else out

    def act(self, frame, state=None) -> np.ndarray:
        """One frame as recorded (any size) (and its state row, for a state model) -> one action vector."""
        return self(frames.to_model_input(np.asarray(frame)), state)
