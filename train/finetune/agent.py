"""The actor-critic built on the cloned PilotNet, and its action distribution.

The cloned model is split at its ``flatten`` layer:

* the **trunk** (frame input + convolutions) is frozen: a PilotNet training step
  costs ~1.3 ms/sample on 2 cores, so PPO trains only what lies above it and
  the features computed while acting are reused for every epoch (no second
  forward pass through the convolutions);
* the **actor head** is a trainable copy of the cloned dense stack. Its last
  layer's pre-softsign output ``z`` parameterises the distribution:
  steering ``x ~ N(softsign(z0), exp(log_std))`` with a learned ``log_std`` that
  starts small; buttons ``a, b, rb ~ Bernoulli(p)`` with ``p = (softsign(z)+1)/2``
  -- exactly the cloned output -- whose logit is ``sign(z) * log(1 + 2|z|)``
  (smooth, never saturating to a zero gradient); ``y`` is not sampled (it does
  not steer) and follows its mean. With ``frame_stack k > 1`` the head sees the
  features of the last ``k`` frames; the older frames' weights start at zero so
  the start policy is still exactly the cloned one.
* a frozen copy of the start head is the **reference** for the KL term;
* the **critic** is a small MLP on the same (stacked) features.

Acting (``sample_frames``) is one graph call: trunk, actor head and the sampling
(stateless samplers seeded from the caller's numpy RNG, so the RNG state decides
the actions); ``act`` is the same distribution in numpy, kept as the reference
and for the deterministic policy. The critic and the reference head do not
decide actions: the collector runs them once per rollout (``ref_and_value``).

The deterministic policy (steering mean, buttons ``p > 0.5``) equals the cloned
``train.policy.Policy`` at the start, and ``export_pilotnet`` writes the tuned
actor back as a plain PilotNet ``.keras`` that drive and evaluate load.
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

from common import action as act
from common import state as kstate
from common.frames import MODEL_SHAPE
from train.model import state_fields

FEATURE_LAYER = "flatten"
STATE_FEATURE_LAYER = "features"  # a state model's flattened frame features joined with its state input
BUTTONS = (2, 3, 4)  # a, b, rb indices in the action vector
R_BUTTON = BUTTONS.index(act.FIELDS.index("rb"))  # R (hop / drift) among the button logits
LOG_2PI = math.log(2.0 * math.pi)


def split_cloned(cloned: keras.Model) -> tuple[keras.Model, list[keras.layers.Dense]]:
    """(trunk model frames -> features, the cloned Dense layers above it in order). A state model's
    trunk takes ``{"frames", "state"}`` and returns the conv features with the state rows joined on."""
    names = [layer.name for layer in cloned.layers]
    split = STATE_FEATURE_LAYER if STATE_FEATURE_LAYER in names else FEATURE_LAYER
    try:
        feat = cloned.get_layer(split).output
    except ValueError as exc:
        raise ValueError(
            f"model {cloned.name!r} has no {FEATURE_LAYER!r} layer: finetune needs a PilotNet "
            "built by train.model.build_pilotnet"
        ) from exc
    dense = [
        layer
        for layer in cloned.layers[names.index(split) + 1 :]
        if isinstance(layer, keras.layers.Dense)
    ]
    if not dense or dense[-1].units != act.SIZE or dense[-1].activation is not keras.activations.softsign:
        raise ValueError(f"model {cloned.name!r} must end in Dense({act.SIZE}, softsign) + ActionRange")
    return keras.Model(cloned.input, feat, name="trunk"), dense


def build_head(dense: list, frame_stack: int, name: str, widen: int = 0, seed: int = 0) -> keras.Model:
    """Copy of the cloned dense stack (last layer linear: it returns z).

    ``widen``: add this many units to each hidden layer after the first, function-preserving: a new
    unit takes random input weights from the whole layer below and sends zero weights to the layer
    above's old units (and to z), so the head starts as the clone exactly and the gradient of those
    zero weights lets the new units in (the 10-unit last hidden layer is PilotNet's narrowest)."""
    in_dim = dense[0].kernel.shape[0]
    inp = keras.Input((in_dim * frame_stack,), name="features")
    x = inp
    rng = np.random.default_rng(seed + 7)
    prev_old = prev_new = 0  # the layer below's cloned and added units
    for i, src in enumerate(dense):
        last = i == len(dense) - 1
        add = widen if i > 0 and not last else 0
        layer = keras.layers.Dense(src.units + add, activation=None if last else src.activation, name=src.name)
        x = layer(x)
        kernel, bias = (np.asarray(w) for w in src.get_weights())
        if i == 0 and frame_stack > 1:  # newest frame first; older frames start with zero weight
            kernel = np.concatenate([kernel] + [np.zeros_like(kernel)] * (frame_stack - 1))
        if prev_new or add:
            rows = prev_old + prev_new
            scale = math.sqrt(2.0 / rows)  # He: the new units' activations on the old ones' scale
            grown = np.zeros((rows, src.units + add), np.float32)
            grown[:prev_old, : src.units] = kernel  # old -> old as cloned; new -> old stays 0
            grown[:, src.units:] = rng.normal(0.0, scale, (rows, add))  # anything -> new: random
            kernel, bias = grown, np.concatenate([bias, np.zeros(add, np.float32)])
        layer.set_weights([kernel, bias])
        prev_old, prev_new = src.units, add
    return keras.Model(inp, x, name=name)


def build_critic(in_dim: int, hidden: tuple[int, ...], seed: int) -> keras.Model:
    inp = keras.Input((in_dim,), name="features")
    x = inp
    for i, units in enumerate(hidden):
        init = keras.initializers.Orthogonal(gain=math.sqrt(2), seed=seed + i)
        x = keras.layers.Dense(units, activation="tanh", kernel_initializer=init, name=f"v{i}")(x)
    init = keras.initializers.Orthogonal(gain=1.0, seed=seed + 99)
    out = keras.layers.Dense(1, kernel_initializer=init, name="value")(x)
    return keras.Model(inp, out, name="critic")


# ---- distribution math (TensorFlow; numpy twins below for acting) ----------

def dist_params(z):
    """z (N, 5) -> steering mean (N,), button logits (N, 3), y stick (N,)."""
    s = z / (1.0 + tf.abs(z))
    zb = tf.gather(z, BUTTONS, axis=1)
    logits = tf.sign(zb) * tf.math.log1p(2.0 * tf.abs(zb))
    return s[:, 0], logits, s[:, 1]


def log_prob(mean, log_std, logits, x, buttons):
    """Joint log-probability of steering ``x`` (N,) and buttons (N, 3) in {0, 1}."""
    gauss = -0.5 * tf.square((x - mean) / tf.exp(log_std)) - log_std - 0.5 * LOG_2PI
    bern = buttons * tf.math.log_sigmoid(logits) + (1.0 - buttons) * tf.math.log_sigmoid(-logits)
    return gauss + tf.reduce_sum(bern, axis=1)


def button_entropy(logits):
    """Each button's Bernoulli entropy (N, 3), in nats."""
    p = tf.sigmoid(logits)
    return -(p * tf.math.log_sigmoid(logits) + (1.0 - p) * tf.math.log_sigmoid(-logits))


def entropy(log_std, logits):
    return 0.5 + 0.5 * LOG_2PI + log_std + tf.reduce_sum(button_entropy(logits), axis=1)


def kl_divergence(mean, log_std, logits, ref_mean, ref_log_std, ref_logits):
    """KL(pi || ref) per sample: Gaussian steering + the three Bernoulli buttons."""
    var, ref_var = tf.exp(2.0 * log_std), tf.exp(2.0 * ref_log_std)
    gauss = ref_log_std - log_std + (var + tf.square(mean - ref_mean)) / (2.0 * ref_var) - 0.5
    p = tf.sigmoid(logits)
    bern = p * (tf.math.log_sigmoid(logits) - tf.math.log_sigmoid(ref_logits)) + (1.0 - p) * (
        tf.math.log_sigmoid(-logits) - tf.math.log_sigmoid(-ref_logits)
    )
    return gauss + tf.reduce_sum(bern, axis=1)


def np_params(z: np.ndarray):
    s = z / (1.0 + np.abs(z))
    zb = z[:, BUTTONS]
    return s[:, 0], np.sign(zb) * np.log1p(2.0 * np.abs(zb)), s[:, 1]


def np_log_prob(mean, log_std, logits, x, buttons):
    gauss = -0.5 * ((x - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * LOG_2PI
    log_sig = -np.logaddexp(0.0, -logits)  # log sigmoid(l)
    log_sig_neg = -np.logaddexp(0.0, logits)
    return gauss + np.sum(buttons * log_sig + (1.0 - buttons) * log_sig_neg, axis=1)


def to_env_actions(x, y, buttons) -> np.ndarray:
    """Sampled steering/buttons -> (N, 5) action vectors in range."""
    out = np.zeros((len(x), act.SIZE), np.float32)
    out[:, 0], out[:, 1] = x, y
    out[:, list(BUTTONS)] = buttons
    return act.clip_batch(out)


class ActorCritic:
    """Trainable head + critic on top of the frozen cloned trunk (see module doc)."""

    def __init__(self, cloned: keras.Model, *, frame_stack: int = 1, init_log_std: float = -1.6,
                 critic_hidden: tuple[int, ...] = (256, 64), seed: int = 0, learn_std: bool = True,
                 widen: int = 0):
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        if widen < 0:
            raise ValueError(f"widen must be >= 0, got {widen}")
        self.cloned = cloned
        self.frame_stack = frame_stack
        self.init_log_std = float(init_log_std)
        self.learn_std = learn_std  # False: the trainer sets log_std on a schedule and no gradient moves it
        self.trunk, dense = split_cloned(cloned)
        self.needs_state = state_fields(cloned) is not None  # the trunk also takes state rows (common.state)
        self.feature_dim = int(dense[0].kernel.shape[0])
        self.head = build_head(dense, frame_stack, "actor_head", widen, seed)
        self.ref_head = build_head(dense, frame_stack, "reference_head")
        self.ref_head.trainable = False
        self.critic = build_critic(self.feature_dim * frame_stack, critic_hidden, seed)
        self.log_std = keras.Variable(np.array([init_log_std], np.float32), name="log_std")
        spec = tf.TensorSpec((None, *MODEL_SHAPE), tf.uint8)
        sspec = tf.TensorSpec((None, kstate.SIZE if self.needs_state else 0), tf.float32)
        self._features = tf.function(lambda f, s: self._trunk(f, s), input_signature=[spec, sspec])
        fspec = tf.TensorSpec((None, self.feature_dim * frame_stack), tf.float32)
        self._heads = tf.function(self._heads_impl, input_signature=[fspec])
        self._act_graph = tf.function(lambda f, s: self._act_impl(f, s), input_signature=[spec, sspec])
        # Acting (see sample_frames): trunk, actor head and the sampling in one graph call. The
        # critic and the reference head do not decide the action: they run once per rollout over
        # all its features (ref_and_value), not once per step.
        # (called through their concrete functions: half the Python dispatch cost per step)
        seeds = tf.TensorSpec((2, 2), tf.int64)
        self._sample_frames_fn = tf.function(self._sample_frames_impl, input_signature=[spec, sspec, seeds])
        self._sample_feats_fn = tf.function(lambda f, s: self._sample_impl(self.head(f, training=False), s),
                                            input_signature=[fspec, seeds])
        self._concrete: dict = {}
        self._ref_value = tf.function(lambda f: (self.ref_head(f, training=False),
                                                 self.critic(f, training=False)[:, 0]),
                                      input_signature=[fspec])

    @property
    def actor_weights(self):
        return [*self.head.trainable_weights, *([self.log_std] if self.learn_std else [])]

    def head_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.head.get_weights()]

    @contextlib.contextmanager
    def using_head(self, weights: list[np.ndarray] | None):
        """Act with other head weights (an averaged actor) inside the block, then put the trained ones
        back; None: the trained head as is."""
        if weights is None:
            yield self
            return
        own = self.head_weights()
        self.head.set_weights(weights)
        try:
            yield self
        finally:
            self.head.set_weights(own)

    @property
    def critic_weights(self):
        return self.critic.trainable_weights

    def _trunk(self, frames, state):
        if self.needs_state:
            return self.trunk({"frames": frames, "state": state}, training=False)
        return self.trunk(frames, training=False)

    def _inputs(self, frames: np.ndarray, state) -> tuple[tf.Tensor, tf.Tensor]:
        """Frames and state rows as the graphs' tensors (an empty (N, 0) state for a frames-only model)."""
        n = len(frames)
        if not self.needs_state:
            return tf.convert_to_tensor(frames), tf.zeros((n, 0), tf.float32)
        rows = kstate.as_rows(state, n, source=f"model {self.cloned.name!r}")
        return tf.convert_to_tensor(frames), tf.convert_to_tensor(rows)

    def features(self, frames: np.ndarray, state=None) -> np.ndarray:
        return self._features(*self._inputs(frames, state)).numpy()

    def _heads_impl(self, feats):
        return self.head(feats), self.ref_head(feats), self.critic(feats)[:, 0]

    def _act_impl(self, frames, state):
        feats = self._trunk(frames, state)
        return (feats, *self._heads_impl(feats))

    def _sample_impl(self, z, seeds):
        """The stochastic policy inside the graph: the same distribution as ``act`` (see module doc)."""
        mean, logits, y = dist_params(z)
        log_std = self.log_std[0]
        x = mean + tf.exp(log_std) * tf.random.stateless_normal(tf.shape(mean), seeds[0])
        u = tf.random.stateless_uniform(tf.shape(logits), seeds[1])
        buttons = tf.cast(u < tf.sigmoid(logits), tf.float32)
        return x, y, buttons, log_prob(mean, log_std, logits, x, buttons)

    def _graph(self, name: str):
        """The concrete function of a fixed-signature graph, traced on first use."""
        if name not in self._concrete:
            self._concrete[name] = getattr(self, name + "_fn").get_concrete_function()
        return self._concrete[name]

    def _sample_frames_impl(self, frames, state, seeds):
        feats = self._trunk(frames, state)
        return (feats, *self._sample_impl(self.head(feats, training=False), seeds))

    @staticmethod
    def _seeds(rng: np.random.Generator) -> tf.Tensor:
        """Per-call seeds of the stateless samplers, drawn from ``rng`` (checkpointed by the caller)."""
        return tf.constant(rng.integers(0, np.iinfo(np.int64).max, size=(2, 2), dtype=np.int64))

    def sample_frames(self, frames: np.ndarray, rng: np.random.Generator, state=None):
        """frame_stack 1: frames (and state rows) -> (features, env actions, steering x, buttons,
        log-prob), one graph call.

        Sampling runs in the graph from seeds drawn from ``rng``: the same ``rng``
        state gives the same actions, so a resumed run takes the same steps.
        """
        if self.frame_stack != 1:
            raise ValueError("sample_frames is for frame_stack=1; stacked actors call features, then sample_features")
        feats, x, y, buttons, logp = self._graph("_sample_frames")(*self._inputs(frames, state), self._seeds(rng))
        x, buttons = x.numpy(), buttons.numpy()
        return feats.numpy(), to_env_actions(x, y.numpy(), buttons), x, buttons, logp.numpy()

    def acting_graph(self, frames: np.ndarray, rng: np.random.Generator, state=None):
        """(graph, args): ``sample_frames``' graph call with its inputs as tensors, so that
        ``graph(*args)`` is the acting forward pass alone (bench.finetune's forward limit)."""
        return self._graph("_sample_frames"), (*self._inputs(frames, state), self._seeds(rng))

    def sample_features(self, feats: np.ndarray, rng: np.random.Generator):
        """(stacked) features -> (env actions, steering x, buttons, log-prob), sampled in the graph."""
        x, y, buttons, logp = self._graph("_sample_feats")(tf.convert_to_tensor(feats, tf.float32), self._seeds(rng))
        x, buttons = x.numpy(), buttons.numpy()
        return to_env_actions(x, y.numpy(), buttons), x, buttons, logp.numpy()

    def ref_and_value(self, feats: np.ndarray):
        """(stacked) features -> reference z (N, 5), value (N,): for a whole rollout in one call."""
        ref_z, value = self._ref_value(tf.convert_to_tensor(feats, tf.float32))
        return ref_z.numpy(), value.numpy()

    def features_and_heads(self, frames: np.ndarray, state=None):
        """frames -> features, z, reference z, value (frame_stack 1: the heads see this frame only)."""
        if self.frame_stack != 1:
            raise ValueError("features_and_heads is for frame_stack=1; stacked actors call features, then heads")
        return tuple(t.numpy() for t in self._act_graph(*self._inputs(frames, state)))

    def heads(self, feats: np.ndarray):
        """(stacked features) -> z, reference z, value as numpy."""
        z, zr, v = self._heads(tf.convert_to_tensor(feats, tf.float32))
        return z.numpy(), zr.numpy(), v.numpy()

    def value(self, feats: np.ndarray) -> np.ndarray:
        return self.critic(tf.convert_to_tensor(feats, tf.float32), training=False).numpy()[:, 0]

    def std(self) -> float:
        return float(np.exp(self.log_std.numpy()[0]))

    def act(self, z: np.ndarray, rng: np.random.Generator | None):
        """Sample (rng given) or take the deterministic action.

        Returns env actions (N, 5), steering sample (N,), buttons (N, 3), log-prob (N,).
        """
        mean, logits, y = np_params(z)
        log_std = float(self.log_std.numpy()[0])
        if rng is None:
            x, buttons = mean, (logits > 0).astype(np.float32)
        else:
            x = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
            buttons = (rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        logp = np_log_prob(mean, log_std, logits, x, buttons)
        return to_env_actions(x, y, buttons), x.astype(np.float32), buttons, logp.astype(np.float32)

    # ---- state for checkpoints (weights only; the optimizer lives in ppo) ----
    def get_weights(self) -> dict:
        return {
            "head": [np.asarray(w) for w in self.head.get_weights()],
            "critic": [np.asarray(w) for w in self.critic.get_weights()],
            "log_std": self.log_std.numpy().copy(),
        }

    def set_weights(self, state: dict) -> None:
        self.head.set_weights(state["head"])
        self.critic.set_weights(state["critic"])
        self.log_std.assign(state["log_std"])

    def export_pilotnet(self, path: str) -> str:
        """Write the deterministic actor as a plain PilotNet ``.keras`` (frame_stack 1 only)."""
        from train.model import save_model

        if self.frame_stack != 1:
            raise ValueError("only a frame_stack=1 actor exports as a PilotNet (drive takes single frames)")
        units = {layer.name: layer.units for layer in self.head.layers[1:]}

        def sized(layer):  # the cloned layer, as wide as the (widened) head's
            config = layer.get_config()
            if layer.name in units and config["units"] != units[layer.name]:
                return layer.__class__.from_config({**config, "units": units[layer.name]})
            return layer.__class__.from_config(config)

        model = keras.models.clone_model(self.cloned, clone_function=sized)
        for layer in model.layers:
            if layer.name not in units and layer.weights:
                layer.set_weights(self.cloned.get_layer(layer.name).get_weights())
        for layer in self.head.layers[1:]:
            model.get_layer(layer.name).set_weights(layer.get_weights())
        return save_model(model, path)
