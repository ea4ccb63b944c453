"""Real Keras models for tests: the tiny PilotNet and a PilotNet with one fixed answer.

``tiny_pilotnet(seed)``: PilotNet's layer layout with few weights, for fast fine-tuning tests.
``constant_pilotnet(action)``: a full PilotNet whose output layer is set so it answers
``action`` for every frame, so a test can tell the model's answer from the human's.
"""

from __future__ import annotations

import keras
import numpy as np

from common import action as act
from common import frames as fr
from common import state as kstate
from train.model import ActionRange, FrameInput, build_pilotnet


def tiny_pilotnet(seed: int = 0, state: bool = False) -> keras.Model:
    """PilotNet's layout (FrameInput, convs, flatten, dense, softsign, ActionRange), few weights.
    ``state``: with the kart state input joined after ``flatten``, as ``build_pilotnet(state=True)``."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(fr.MODEL_SHAPE, dtype="uint8", name="frames")
    x = FrameInput(state_fields=kstate.FIELDS if state else None, name="frame_input")(inp)
    x = keras.layers.Conv2D(4, 5, strides=4, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, strides=3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    inputs = inp
    if state:
        sinp = keras.Input((kstate.SIZE,), dtype="float32", name="state")
        x = keras.layers.Concatenate(name="features")([x, sinp])
        inputs = {"frames": inp, "state": sinp}
    x = keras.layers.Dense(16, activation="relu", name="fc16")(x)
    x = keras.layers.Dense(5, activation="softsign", name="softsign")(x)
    return keras.Model(inputs, ActionRange(name="action")(x), name="tiny_pilotnet")


def constant_pilotnet(action):
    """PilotNet (train.model.build_pilotnet) that outputs ``action`` for any frame."""
    target = act.as_action(action)
    model = build_pilotnet()
    layer = model.get_layer("softsign")
    kernel, _bias = layer.get_weights()
    # ActionRange maps softsign s in (-1, 1) to low + (s + 1)/2 * (high - low); invert it,
    # then invert softsign (s = z / (1 + |z|)  =>  z = s / (1 - |s|)).
    s = np.clip(2 * (target - act.LOW) / (act.HIGH - act.LOW) - 1, -0.98, 0.98)
    layer.set_weights([np.zeros_like(kernel), (s / (1 - np.abs(s))).astype(np.float32)])
    return model
