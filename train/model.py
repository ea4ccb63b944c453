"""PilotNet (NVIDIA, as TensorKart trained it) in Keras 3, and its save/load.

The model takes the model input as prepared (``(N, 66, 200, 3)`` uint8 from
``common.frames``) and returns action vectors ``[x, y, a, b, rb]``:

* ``FrameInput`` (first layer) casts uint8 to float and normalises to [-1, 1].
  Its config also *carries* ``common.frames.TRANSFORM`` and the action layout,
  so both live inside the ``.keras`` file and are checked on load.
* Five softsign outputs (TensorKart) land in (-1, 1). ``ActionRange`` maps each
  into its action field's range: ``low + (s + 1) / 2 * (high - low)``. For the
  stick (x, y in -1..1) that is the identity; for buttons (0..1) it is
  ``(s + 1) / 2``. So the model's output *is* an action vector, training labels
  are plain recorded actions, and a button's 0.5 threshold sits at softsign 0.

The loss is the euclidean distance between predicted and recorded vectors,
``sqrt(sum((p - y)^2) + eps) - sqrt(eps)``: eps keeps the gradient finite (it is
exactly 0) when the prediction equals the label; the offset makes the loss 0 there.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ banner out of CLI output

import json
import zipfile

import keras
import numpy as np
from keras import layers, ops

from common import action as act
from common import atomic, frames
from common import state as kstate

PACKAGE = "kartpilot"
EPS = 1e-6
ACTION_LAYOUT = {
    "fields": list(act.FIELDS),
    "low": [float(v) for v in act.LOW],
    "high": [float(v) for v in act.HIGH],
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameInput(layers.Layer):
    """uint8 frames -> float32 in [-1, 1]; carries the transform + action layout."""

    def __init__(self, transform=None, action_layout=None, state_fields=None, **kwargs):
        super().__init__(**kwargs)
        self.transform = dict(transform if transform is not None else frames.TRANSFORM)
        self.action_layout = dict(action_layout if action_layout is not None else ACTION_LAYOUT)
        self.state_fields = list(state_fields) if state_fields else None  # None: frames only

    def call(self, x):
        return ops.cast(x, "float32") / 127.5 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "transform": self.transform, "action_layout": self.action_layout,
                "state_fields": self.state_fields}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActionRange(layers.Layer):
    """softsign outputs in (-1, 1) -> each action field's [low, high]."""

    def __init__(self, low=None, high=None, **kwargs):
        super().__init__(**kwargs)
        self.low = [float(v) for v in (low if low is not None else act.LOW)]
        self.high = [float(v) for v in (high if high is not None else act.HIGH)]

    def call(self, s):
        low = ops.convert_to_tensor(np.array(self.low, np.float32))
        span = ops.convert_to_tensor(np.array(self.high, np.float32)) - low
        return low + (s + 1.0) * 0.5 * span

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package=PACKAGE)
def euclidean_loss(y_true, y_pred):
    """Per-sample euclidean distance, finite gradient at zero distance."""
    diff = ops.cast(y_pred, "float32") - ops.cast(y_true, "float32")
    return ops.sqrt(ops.sum(ops.square(diff), axis=-1) + EPS) - float(np.sqrt(EPS))


def build_pilotnet(dropout: float = 0.0, state: bool = False) -> keras.Model:
    """PilotNet: (66, 200, 3) uint8 -> (5,) action vector. ``dropout`` after each hidden dense.

    ``state``: a second input, the kart state features (``common.state``, float32
    ``(SIZE,)``), joined to the flattened convolution features (layer ``features``)
    before the dense stack; the model's inputs are then ``{"frames", "state"}``."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    inp = keras.Input(shape=frames.MODEL_SHAPE, dtype="uint8", name="frames")
    x = FrameInput(state_fields=kstate.FIELDS if state else None, name="frame_input")(inp)
    for i, (filters, k, s) in enumerate(((24, 5, 2), (36, 5, 2), (48, 5, 2), (64, 3, 1), (64, 3, 1))):
        x = layers.Conv2D(filters, k, strides=s, activation="relu", name=f"conv{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    inputs = inp
    if state:
        sinp = keras.Input(shape=(kstate.SIZE,), dtype="float32", name="state")
        x = layers.Concatenate(name="features")([x, sinp])
        inputs = {"frames": inp, "state": sinp}
    for units in (1164, 100, 50, 10):
        x = layers.Dense(units, activation="relu", name=f"fc{units}")(x)
        if dropout and units != 10:
            x = layers.Dropout(dropout, name=f"drop{units}")(x)
    x = layers.Dense(act.SIZE, activation="softsign", name="softsign")(x)
    out = ActionRange(name="action")(x)
    return keras.Model(inputs, out, name="pilotnet")


def state_fields(model: keras.Model) -> list[str] | None:
    """The state layout a model takes beside its frames (None: frames only)."""
    return _frame_layer(model, model.name).state_fields


def save_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Save as ``.keras`` (the FrameInput layer inside records transform + action layout).

    Atomic (``common.atomic.replacing``): a crash or a full disk mid-save leaves
    the previous file at ``path`` intact, never a torn one."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"model path must end with .keras: {path}")
    _frame_layer(model, path)  # refuse to save a model that would not load
    with atomic.replacing(path) as tmp:
        model.save(tmp)
    return path


def read_model_config(path: str | os.PathLike) -> dict:
    """The FrameInput config stored in a ``.keras`` file, read without building the model."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a Keras .keras model file ({exc})") from exc
    found = _find_layer_config(config)
    if found is None:
        raise frames.TransformMismatch(
            f"model {path} records no frame transform (no {PACKAGE}>FrameInput layer); "
            "it was not saved by train.model.save_model"
        )
    return found


def load_model(path: str | os.PathLike, *, compile: bool = False) -> keras.Model:
    """Load a saved PilotNet in Keras safe mode after checking its transform and action layout.
    Damaged weights (h5py cannot read them) raise ValueError naming the file."""
    path = os.fspath(path)
    cfg = read_model_config(path)
    frames.check_transform(cfg.get("transform"), source=f"model {path}")
    _check_action_layout(cfg.get("action_layout"), path)
    if cfg.get("state_fields"):
        kstate.check_fields(cfg["state_fields"], source=f"model {path}")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, KeyError) as exc:  # h5py on damaged weights: OSError, RuntimeError
        raise ValueError(f"model {path} is damaged: its weights cannot be read "
                         f"({type(exc).__name__}: {exc}); restore or retrain it") from exc


def _check_action_layout(layout: dict | None, path: str) -> None:
    if layout is None or list(layout.get("fields", [])) != ACTION_LAYOUT["fields"]:
        raise frames.TransformMismatch(
            f"model {path} has action layout {layout and layout.get('fields')!r}, "
            f"this code uses {ACTION_LAYOUT['fields']!r}"
        )
    for key in ("low", "high"):
        if not np.allclose(layout.get(key, []), ACTION_LAYOUT[key]):
            raise frames.TransformMismatch(
                f"model {path} has action {key}={layout.get(key)!r}, this code uses {ACTION_LAYOUT[key]!r}"
            )


def _find_layer_config(node) -> dict | None:
    """Depth-first search of a Keras config tree for the FrameInput layer's config."""
    if isinstance(node, dict):
        if node.get("class_name") == "FrameInput" or node.get("registered_name") == f"{PACKAGE}>FrameInput":
            return node.get("config", {})
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_layer_config(child)
        if found is not None:
            return found
    return None


def _frame_layer(model: keras.Model, path: str) -> FrameInput:
    for layer in model.layers:
        if isinstance(layer, FrameInput):
            return layer
    raise ValueError(f"cannot save {path}: model has no FrameInput layer (build it with build_pilotnet)")
