"""Unit tests of train.finetune's math: GAE, the PPO loss, the policy distribution,
the KL term, the actor built from the cloned model, and learner checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from common import frames as fr
from testing.models import tiny_pilotnet
from train.finetune import agent as ag
from train.finetune import ppo
from train.model import build_pilotnet


def frames_batch(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *fr.MODEL_SHAPE), dtype=np.uint8)


def test_gae_hand_computed():
    # 3 steps, 1 env, episode ends at t=1 (no bootstrap across it).
    r = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.5], [1.0], [1.5]])
    d = np.array([[0], [1], [0]], bool)
    g, lam, last = 0.9, 0.8, np.array([2.0])
    adv, ret = ppo.gae(r, v, d, last, g, lam)
    d2 = 3.0 + 0.9 * 2.0 - 1.5  # 3.3
    d1 = 2.0 - 1.0  # terminal: 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    expect = [d0 + g * lam * d1, d1, d2]
    np.testing.assert_allclose(adv[:, 0], expect, rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], np.array(expect) + v[:, 0], rtol=1e-6)


def test_gae_masked_reset_step_contributes_nothing():
    r = np.array([[1.0], [5.0], [1.0]])
    v = np.array([[0.0], [9.0], [0.0]])
    d = np.array([[1], [0], [0]], bool)
    valid = np.array([[1], [0], [1]], float)  # step 1 only reset the env
    adv, _ = ppo.gae(r, v, d, np.array([0.0]), 1.0, 1.0, valid=valid)
    np.testing.assert_allclose(adv[:, 0], [1.0, 0.0, 1.0])


def test_clipped_surrogate_hand_computed():
    old = tf.zeros(4)
    logp = tf.constant([math.log(1.5), math.log(0.5), math.log(1.1), math.log(0.7)])
    adv = tf.constant([1.0, -1.0, 2.0, -2.0])
    loss, clipfrac = ppo.clipped_surrogate(logp, old, adv, clip=0.2)
    # min(r A, clip(r) A): 1.5*1 -> clip 1.2; 0.5*-1=-0.5 vs 0.8*-1=-0.8 -> -0.8;
    # 1.1*2=2.2 (inside); 0.7*-2=-1.4 vs 0.8*-2=-1.6 -> -1.6
    expect = -np.mean([1.2, -0.8, 2.2, -1.6])
    assert float(loss) == pytest.approx(expect, rel=1e-5)
    assert float(clipfrac) == pytest.approx(0.75)


def test_log_prob_matches_closed_form():
    mean, log_std = np.array([0.3, -0.2]), -1.0
    logits = np.array([[2.0, -1.0, 0.0], [-3.0, 0.5, 1.0]])
    x, buttons = np.array([0.1, -0.5]), np.array([[1, 0, 1], [0, 1, 0]], float)
    std = math.exp(log_std)
    expect = []
    for i in range(2):
        lp = -0.5 * ((x[i] - mean[i]) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
        for j in range(3):
            p = 1 / (1 + math.exp(-logits[i, j]))
            lp += math.log(p if buttons[i, j] else 1 - p)
        expect.append(lp)
    got_tf = ag.log_prob(tf.constant(mean, tf.float32), tf.constant(log_std), tf.constant(logits, tf.float32),
                         tf.constant(x, tf.float32), tf.constant(buttons, tf.float32))
    np.testing.assert_allclose(got_tf.numpy(), expect, rtol=1e-5)
    np.testing.assert_allclose(ag.np_log_prob(mean, log_std, logits, x, buttons), expect, rtol=1e-9)


def test_button_probability_is_the_cloned_output():
    z = np.array([[0.0, 0.0, 3.0, -0.4, 0.0]], np.float32)
    _, logits, _ = ag.np_params(z)
    s = z / (1 + np.abs(z))
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[0])), (s[0, 2:] + 1) / 2, rtol=1e-6)


def test_kl_matches_closed_form_and_is_zero_for_equal_policies():
    kl = ag.kl_divergence(tf.constant([0.5]), tf.constant(-1.0), tf.constant([[0.3, -2.0, 1.0]]),
                          tf.constant([0.2]), tf.constant(-1.5), tf.constant([[0.3, -2.0, 0.0]]))
    s1, s2 = math.exp(-1.0), math.exp(-1.5)
    gauss = math.log(s2 / s1) + (s1**2 + 0.3**2) / (2 * s2**2) - 0.5
    p, q = 1 / (1 + math.exp(-1.0)), 0.5
    bern = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert float(kl[0]) == pytest.approx(gauss + bern, rel=1e-5)


def test_actor_starts_as_the_cloned_policy_with_zero_kl():
    cloned = tiny_pilotnet()
    net = ag.ActorCritic(cloned, init_log_std=-1.6)
    obs = frames_batch()
    z, ref_z, value = net.heads(net.features(obs))
    np.testing.assert_allclose(z, ref_z, atol=1e-6)
    assert value.shape == (len(obs),)
    # deterministic action == the cloned model's output with buttons thresholded at 0.5
    want = np.clip(cloned.predict(obs, verbose=0), -1, 1)
    got = net.act(z, None)[0]
    np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-5)
    np.testing.assert_array_equal(got[:, 2:], (want[:, 2:] > 0.5).astype(np.float32))
    # the loss's KL term is exactly zero before any update
    learner = ppo.Learner(net, ppo.PPOConfig(minibatch=8))
    batch = fake_batch(net, obs)
    out = learner.losses({k: tf.constant(v) for k, v in batch.items()}, tf.constant(1.0))
    assert float(out["kl_ref"]) == pytest.approx(0.0, abs=1e-6)


def test_fused_acting_call_equals_features_then_heads():
    net = ag.ActorCritic(tiny_pilotnet())
    obs = frames_batch()
    feats, z, ref_z, value = net.features_and_heads(obs)
    np.testing.assert_allclose(feats, net.features(obs), atol=1e-6)
    for got, want in zip((z, ref_z, value), net.heads(net.features(obs)), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="frame_stack"):
        ag.ActorCritic(tiny_pilotnet(), frame_stack=2).features_and_heads(obs)


def test_frame_stack_starts_as_the_cloned_policy():
    cloned = tiny_pilotnet()
    net1, net3 = ag.ActorCritic(cloned), ag.ActorCritic(cloned, frame_stack=3)
    obs = frames_batch(4)
    f = net1.features(obs)
    other = np.random.default_rng(1).random(f.shape).astype(np.float32)
    z1 = net1.heads(f)[0]
    z3 = net3.heads(np.concatenate([f, other, other], axis=1))[0]
    np.testing.assert_allclose(z1, z3, atol=1e-5)


def test_pilotnet_splits_and_exports(tmp_path):
    net = ag.ActorCritic(build_pilotnet())
    assert net.feature_dim == 1152
    net.head.get_layer("fc10").kernel.assign(net.head.get_layer("fc10").kernel * 1.5)
    from train.model import load_model

    path = net.export_pilotnet(str(tmp_path / "actor.keras"))
    exported = load_model(path)
    obs = frames_batch(3)
    z = net.heads(net.features(obs))[0]
    want = net.act(z, None)[0]
    out = np.clip(exported.predict(obs, verbose=0), -1, 1)
    np.testing.assert_allclose(out[:, :2], want[:, :2], atol=1e-5)


def fake_batch(net, obs, seed=0):
    rng = np.random.default_rng(seed)
    feats = net.features(obs)
    z, ref_z, _ = net.heads(feats)
    _, x, buttons, logp = net.act(z, rng)
    n = len(obs)
    return {"feats": feats, "x": x, "buttons": buttons, "logp": logp, "ref_z": ref_z,
            "adv": rng.standard_normal(n).astype(np.float32), "ret": rng.standard_normal(n).astype(np.float32),
            "mask": np.ones(n, np.float32)}


def test_learner_checkpoint_gives_the_same_next_update():
    obs = frames_batch(16)
    cfg = ppo.PPOConfig(minibatch=8, epochs=2, lr=1e-3)
    a = ppo.Learner(ag.ActorCritic(tiny_pilotnet()), cfg, seed=3)
    batch1, batch2 = fake_batch(a.net, obs, 1), fake_batch(a.net, obs, 2)
    a.update(batch1, kl_coef=0.3)
    state = a.get_state()
    a.update(batch2, kl_coef=0.3)
    b = ppo.Learner(ag.ActorCritic(tiny_pilotnet(seed=9)), cfg, seed=99)  # other init + other RNG
    b.set_state(state)
    b.update(batch2, kl_coef=0.3)
    for wa, wb in zip(a.get_state()["net"]["head"], b.get_state()["net"]["head"], strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.get_state()["actor_opt"][-1], b.get_state()["actor_opt"][-1], rtol=1e-5)


def test_update_moves_policy_toward_positive_advantage():
    obs = frames_batch(32)
    net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.0)
    learner = ppo.Learner(net, ppo.PPOConfig(minibatch=32, epochs=10, lr=3e-3, clip=10.0))
    batch = fake_batch(net, obs)
    mean0 = ag.np_params(net.heads(batch["feats"])[0])[0]
    batch["adv"] = np.sign(batch["x"] - mean0).astype(np.float32)  # steering above the mean was good
    learner.update(batch, kl_coef=0.0)
    mean1, logits1, _ = ag.np_params(net.heads(batch["feats"])[0])
    lp = ag.np_log_prob(mean1, float(net.log_std.numpy()[0]), logits1, batch["x"], batch["buttons"])
    # the log-prob of positive-advantage actions rose on average relative to negative ones
    pos = batch["adv"] > 0
    gain = lp - batch["logp"]
    assert gain[pos].mean() > gain[~pos].mean()


def r_entropy(net, feats) -> float:
    p = 1.0 / (1.0 + np.exp(-ag.np_params(net.heads(feats)[0])[1][:, ag.R_BUTTON]))
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def test_drift_entropy_bonus_raises_r_entropy_alone_and_leaves_the_steering_noise():
    assert ag.BUTTONS[ag.R_BUTTON] == 4  # rb in the action vector
    obs = frames_batch(32)
    for coefs in ({"drift_ent_coef": 0.5}, {"ent_coef": 0.5}):
        net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.0)
        learner = ppo.Learner(net, ppo.PPOConfig(minibatch=32, epochs=10, lr=3e-3, **coefs))
        batch = fake_batch(net, obs)
        batch["adv"][:] = 0.0  # no policy gradient: only the bonus moves the actor
        feats = batch["feats"]
        h0 = r_entropy(net, feats)
        out = learner.losses({k: tf.constant(v) for k, v in batch.items()}, tf.constant(0.0))
        assert float(out["entropy_r"]) == pytest.approx(h0, rel=1e-4)
        learner.update(batch, kl_coef=0.0)
        assert r_entropy(net, feats) > h0 + 1e-3
        log_std = float(net.log_std.numpy()[0])
        if "drift_ent_coef" in coefs:
            assert log_std == -1.0  # the R bonus has no gradient on the steering noise
        else:
            assert log_std > -1.0 + 1e-3  # the full bonus widens the steering too


def test_drift_entropy_bonus_given_per_update_overrides_the_config():
    """--drift-ent-final: the trainer hands each update the bonus of its frame count; at 0 the R bonus
    configured is off (no advantage, no KL: nothing moves), at 0.5 it raises R's entropy."""
    obs = frames_batch(32)
    net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.0)
    learner = ppo.Learner(net, ppo.PPOConfig(minibatch=32, epochs=10, lr=3e-3, drift_ent_coef=0.5))
    batch = fake_batch(net, obs)
    batch["adv"][:] = 0.0
    h0 = r_entropy(net, batch["feats"])
    learner.update(batch, kl_coef=0.0, drift_ent_coef=0.0)
    assert r_entropy(net, batch["feats"]) == pytest.approx(h0, abs=1e-7)
    learner.update(batch, kl_coef=0.0, drift_ent_coef=0.5)
    assert r_entropy(net, batch["feats"]) > h0 + 1e-3


def test_widened_head_starts_as_the_clone_learns_through_its_new_units_and_exports_wider(tmp_path):
    from common import state as kstate
    from train.model import load_model

    cloned = build_pilotnet(state=True)
    net = ag.ActorCritic(cloned, widen=16)
    assert [layer.units for layer in net.head.layers[1:]] == [1164, 116, 66, 26, 5]
    obs = frames_batch(8)
    rows = np.random.default_rng(2).normal(0.0, 1.0, (8, kstate.SIZE)).astype(np.float32)
    feats = net.features(obs, rows)
    z, ref_z, _ = net.heads(feats)
    np.testing.assert_allclose(z, ref_z, atol=1e-5)  # the wider head is the clone at the start
    out = net.head.get_layer("softsign")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(net.head(tf.constant(feats))))
    grad = tape.gradient(loss, out.kernel).numpy()
    assert np.abs(grad[10:]).sum() > 0  # the new units' zero outgoing weights get a gradient: they can learn
    kernel = out.kernel.numpy()
    kernel[10:] = np.random.default_rng(3).normal(0.0, 0.3, kernel[10:].shape)
    out.kernel.assign(kernel)
    z = net.heads(feats)[0]
    assert np.abs(z - ref_z).max() > 1e-3  # now they steer
    exported = load_model(net.export_pilotnet(str(tmp_path / "wide.keras")))
    assert exported.get_layer("fc10").units == 26 and exported.get_layer("fc1164").units == 1164
    got = np.clip(exported.predict({"frames": obs, "state": rows}, verbose=0), -1, 1)
    want = net.act(z, None)[0]
    np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-5)
    with pytest.raises(ValueError, match="widen"):
        ag.ActorCritic(cloned, widen=-1)
