"""PPO: GAE, the clipped loss with a KL term toward the cloned policy, the update.

One ``Learner.update(batch)`` = ``epochs`` passes over the rollout in shuffled
minibatches; each step minimises

    L = -min(r A, clip(r, 1-eps, 1+eps) A) + vf_coef (V - R)^2 / 2
        - ent_coef H(pi) - drift_ent_coef H(R) + kl_coef KL(pi || pi_cloned)

with global gradient-norm clipping. The learning rate and ``kl_coef`` are set
by the trainer before each update (annealed over the frame budget), and so is
``drift_ent_coef`` when it follows a schedule (``--drift-ent-final``). During the
critic warm-up (``actor=False``) only the value term is minimised.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from train.finetune import agent as ag
from train.finetune.settings import PPOConfig

__all__ = ["Learner", "PPOConfig", "clipped_surrogate", "gae"]


def gae(rewards, values, dones, last_value, gamma: float, lam: float, valid=None):
    """Generalised advantage estimates over a (T, N) rollout.

    ``dones[t]`` means the episode ended at step t (no bootstrap from t+1).
    ``valid[t] == 0`` marks a step whose action the env ignored (the reset step
    of next-step autoreset): it contributes nothing and cuts the trace.
    Returns (advantages, returns), both (T, N) float32.
    """
    rewards = np.asarray(rewards, np.float64)
    T = rewards.shape[0]
    values = np.asarray(values, np.float64)
    nonterminal = 1.0 - np.asarray(dones, np.float64)
    valid = np.ones_like(rewards) if valid is None else np.asarray(valid, np.float64)
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1:])
    for t in reversed(range(T)):
        next_value = np.asarray(last_value, np.float64) if t == T - 1 else values[t + 1]
        next_valid = 1.0 if t == T - 1 else valid[t + 1]
        carry = nonterminal[t] * next_valid
        delta = rewards[t] + gamma * next_value * carry - values[t]
        last = (delta + gamma * lam * carry * last) * valid[t]
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


def clipped_surrogate(logp, old_logp, adv, clip: float, mask=None):
    """PPO's policy loss (mean over unmasked samples) and the fraction of clipped samples."""
    mask = tf.ones_like(adv) if mask is None else mask
    n = tf.maximum(tf.reduce_sum(mask), 1.0)
    ratio = tf.exp(logp - old_logp)
    surr = tf.minimum(ratio * adv, tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip) * adv)
    clipfrac = tf.reduce_sum(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32) * mask) / n
    return -tf.reduce_sum(surr * mask) / n, clipfrac


class Learner:
    """Owns the optimizers and applies PPO updates to an ``ActorCritic``."""

    def __init__(self, net: ag.ActorCritic, cfg: PPOConfig, seed: int = 0):
        self.net, self.cfg = net, cfg
        self.rng = np.random.default_rng(seed)
        # Two Adams: the critic starts from scratch and learns faster than the cloned actor may move.
        self.actor_opt = keras.optimizers.Adam(cfg.lr, epsilon=1e-5)
        self.critic_opt = keras.optimizers.Adam(cfg.critic_lr, epsilon=1e-5)
        self.actor_opt.build(net.actor_weights)
        self.critic_opt.build(net.critic_weights)
        dims = net.feature_dim * net.frame_stack
        spec = {
            "feats": tf.TensorSpec((None, dims), tf.float32),
            "x": tf.TensorSpec((None,), tf.float32),
            "buttons": tf.TensorSpec((None, 3), tf.float32),
            "logp": tf.TensorSpec((None,), tf.float32),
            "adv": tf.TensorSpec((None,), tf.float32),
            "ret": tf.TensorSpec((None,), tf.float32),
            "ref_z": tf.TensorSpec((None, 5), tf.float32),
            "mask": tf.TensorSpec((None,), tf.float32),
        }
        scalar = tf.TensorSpec((), tf.float32)
        self._step_both = tf.function(lambda b, k, d: self._train_step(b, k, d, True),
                                      input_signature=[spec, scalar, scalar])
        self._step_critic = tf.function(lambda b, k, d: self._train_step(b, k, d, False),
                                        input_signature=[spec, scalar, scalar])

    def losses(self, b, kl_coef, drift_ent_coef=None):
        """All loss terms on one minibatch (dict of scalars); masked samples count for nothing.
        ``drift_ent_coef``: the R entropy bonus now (default: the config's)."""
        net, cfg = self.net, self.cfg
        mask = b["mask"]
        n = tf.maximum(tf.reduce_sum(mask), 1.0)
        z = net.head(b["feats"], training=True)
        mean, logits, _ = ag.dist_params(z)
        log_std = net.log_std[0]
        logp = ag.log_prob(mean, log_std, logits, b["x"], b["buttons"])
        adv = b["adv"]
        mu = tf.reduce_sum(adv * mask) / n
        sd = tf.sqrt(tf.reduce_sum(tf.square(adv - mu) * mask) / n)
        adv = (adv - mu) / (sd + 1e-8) * mask
        pg, clipfrac = clipped_surrogate(logp, b["logp"], adv, cfg.clip, mask)
        ratio = tf.exp(logp - b["logp"])
        v = net.critic(b["feats"], training=True)[:, 0]
        vloss = 0.5 * tf.reduce_sum(tf.square(v - b["ret"]) * mask) / n
        ent = tf.reduce_sum(ag.entropy(log_std, logits) * mask) / n
        ent_r = tf.reduce_sum(ag.button_entropy(logits)[:, ag.R_BUTTON] * mask) / n
        ref_mean, ref_logits, _ = ag.dist_params(b["ref_z"])
        kl = ag.kl_divergence(mean, log_std, logits, ref_mean, tf.constant(net.init_log_std), ref_logits)
        kl = tf.reduce_sum(kl * mask) / n
        approx_kl = tf.reduce_sum(((ratio - 1.0) - (logp - b["logp"])) * mask) / n
        if drift_ent_coef is None:
            drift_ent_coef = cfg.drift_ent_coef
        actor = pg - cfg.ent_coef * ent - drift_ent_coef * ent_r + kl_coef * kl
        return {"pg": pg, "vloss": vloss, "entropy": ent, "entropy_r": ent_r, "kl_ref": kl,
                "approx_kl": approx_kl, "clipfrac": clipfrac, "actor": actor}

    def _train_step(self, b, kl_coef, drift_ent_coef, actor: bool):
        net, cfg = self.net, self.cfg
        with tf.GradientTape(persistent=True) as tape:
            out = self.losses(b, kl_coef, drift_ent_coef)
            critic_loss = cfg.vf_coef * out["vloss"]
        pairs = [(self.critic_opt, net.critic_weights, critic_loss)]
        if actor:
            pairs.append((self.actor_opt, net.actor_weights, out["actor"]))
        for opt, weights, loss in pairs:
            grads = tape.gradient(loss, weights)
            grads, norm = tf.clip_by_global_norm(grads, cfg.max_grad_norm)
            opt.apply_gradients(zip(grads, weights, strict=True))
            out["grad_norm_" + ("actor" if opt is self.actor_opt else "critic")] = norm
        del tape
        return out

    def update(self, batch: dict, *, lr_frac: float = 1.0, actor_lr_frac: float | None = None, kl_coef: float = 0.0,
               drift_ent_coef: float | None = None, actor: bool = True) -> dict:
        """``epochs`` x shuffled minibatches over a flat batch (dict of arrays). Mean stats back.
        ``lr_frac``: both learning rates' share of their config values; ``actor_lr_frac``: the actor's
        alone (default: ``lr_frac``). ``drift_ent_coef``: the R entropy bonus for this update (default:
        the config's)."""
        cfg = self.cfg
        coefs = (tf.constant(kl_coef, tf.float32),
                 tf.constant(cfg.drift_ent_coef if drift_ent_coef is None else drift_ent_coef, tf.float32))
        self.actor_opt.learning_rate.assign(cfg.lr * (lr_frac if actor_lr_frac is None else actor_lr_frac))
        self.critic_opt.learning_rate.assign(cfg.critic_lr * lr_frac)
        n = len(batch["adv"])
        step = self._step_both if actor else self._step_critic
        stats: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, cfg.minibatch):
                idx = order[start : start + cfg.minibatch]
                mb = {k: tf.convert_to_tensor(v[idx]) for k, v in batch.items()}
                for k, v in step(mb, *coefs).items():
                    stats.setdefault(k, []).append(float(v))
        return {k: float(np.mean(v)) for k, v in stats.items()}

    # ---- checkpoint state: weights, both optimizers' slots, the shuffle RNG ----
    def get_state(self) -> dict:
        return {
            "net": self.net.get_weights(),
            "actor_opt": [v.numpy() for v in self.actor_opt.variables],
            "critic_opt": [v.numpy() for v in self.critic_opt.variables],
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict) -> None:
        self.net.set_weights(state["net"])
        for opt, key in ((self.actor_opt, "actor_opt"), (self.critic_opt, "critic_opt")):
            if len(opt.variables) != len(state[key]):
                raise ValueError(f"checkpoint {key} has {len(state[key])} slots, optimizer has {len(opt.variables)}")
            for var, val in zip(opt.variables, state[key], strict=True):
                var.assign(val)
        self.rng.bit_generator.state = state["rng"]
