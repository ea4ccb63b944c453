"""The acting path of train.finetune: the in-graph sampler draws from the same distribution
as the numpy reference (``ActorCritic.act``), its log-probs are the distribution's, it is
reproducible from the RNG state, and the rollout's once-per-rollout value and reference
outputs are the per-step ones."""

from __future__ import annotations

import numpy as np

from tests.test_finetune import frames_batch, tiny_pilotnet
from train.finetune import agent as ag
from train.finetune.envs import make_backend
from train.finetune.rollout import Collector


def test_in_graph_sampler_matches_the_numpy_distribution():
    net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.0)
    feats = net.features(frames_batch(6))
    z = net.heads(feats)[0]
    z[:, 2:] = [[-1.5, 0.0, 2.0]] * len(z)  # button probabilities well inside (0, 1)
    net.head.layers[-1].bias.assign(net.head.layers[-1].bias + (z - net.heads(feats)[0]).mean(0))
    z = net.heads(feats)[0]
    mean, logits, y = ag.np_params(z)
    reps = 4000
    tiled = np.tile(feats, (reps, 1))  # row r is state r % 6
    actions, x, buttons, logp = net.sample_features(tiled, np.random.default_rng(0))
    x, buttons = x.reshape(reps, 6), buttons.reshape(reps, 6, 3)
    std = float(np.exp(net.log_std.numpy()[0]))
    # steering: Gaussian around the cloned mean with the learned std (5-sigma bounds on the estimates)
    np.testing.assert_allclose(x.mean(0), mean, atol=5 * std / np.sqrt(reps))
    np.testing.assert_allclose(x.std(0), std, rtol=5 / np.sqrt(2 * reps))
    # buttons: Bernoulli with the cloned probability
    p = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(buttons.mean(0), p, atol=5 * np.sqrt(p * (1 - p) / reps).max() + 1e-3)
    assert set(np.unique(buttons)) <= {0.0, 1.0}
    # the log-prob is the distribution's, as the numpy reference computes it for the same samples
    want = ag.np_log_prob(np.tile(mean, reps), float(net.log_std.numpy()[0]), np.tile(logits, (reps, 1)),
                          x.reshape(-1), buttons.reshape(-1, 3))
    np.testing.assert_allclose(logp, want, rtol=1e-5, atol=1e-5)
    # env actions: the sampled steering and buttons, y at its mean, all in range
    np.testing.assert_array_equal(actions, ag.to_env_actions(x.reshape(-1), np.tile(y, reps), buttons.reshape(-1, 3)))
    # and the numpy reference sampler agrees in distribution
    _, x_np, b_np, _ = net.act(np.tile(z, (reps, 1)), np.random.default_rng(1))
    np.testing.assert_allclose(x_np.reshape(reps, 6).mean(0), x.mean(0), atol=7 * std / np.sqrt(reps))
    np.testing.assert_allclose(b_np.reshape(reps, 6, 3).mean(0), buttons.mean(0), atol=0.05)


def test_sample_frames_is_trunk_then_sample_features_and_reproducible():
    net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.2)
    obs = frames_batch(8)
    feats, actions, x, buttons, logp = net.sample_frames(obs, np.random.default_rng(5))
    np.testing.assert_allclose(feats, net.features(obs), atol=1e-6)
    a2, x2, b2, lp2 = net.sample_features(feats, np.random.default_rng(5))
    np.testing.assert_allclose(x, x2, atol=1e-5)
    np.testing.assert_array_equal(buttons, b2)
    np.testing.assert_allclose(logp, lp2, atol=1e-4)
    np.testing.assert_allclose(actions, a2, atol=1e-5)
    # same RNG state -> same draw; the next state -> another draw
    rng = np.random.default_rng(5)
    again = net.sample_frames(obs, rng)
    np.testing.assert_array_equal(again[2], x)
    assert not np.allclose(net.sample_frames(obs, rng)[2], x)


def test_ref_and_value_equal_the_heads():
    net = ag.ActorCritic(tiny_pilotnet())
    feats = net.features(frames_batch(10))
    _, ref_z, value = net.heads(feats)
    got_ref, got_value = net.ref_and_value(feats)
    np.testing.assert_allclose(got_ref, ref_z, atol=1e-5)
    np.testing.assert_allclose(got_value, value, atol=1e-5)


def test_rollout_values_and_reference_are_the_per_step_ones():
    net = ag.ActorCritic(tiny_pilotnet(), init_log_std=-1.0)
    env = make_backend("kartsim", track="luigi", num_envs=3, action_repeat=2, seed=0)
    try:
        col = Collector(net, env, gamma=0.99, seed=0)
        buf = col.collect(5)
        assert buf["feats"].shape[:2] == buf["value"].shape == (5, 3) and buf["ref_z"].shape == (5, 3, 5)
        for t in range(5):  # step t's value and reference z are those of step t's features
            _, ref_z, value = net.heads(buf["feats"][t])
            np.testing.assert_allclose(buf["ref_z"][t], ref_z, atol=1e-5)
            np.testing.assert_allclose(buf["value"][t], value, atol=1e-5)
        np.testing.assert_allclose(buf["last_value"], net.value(net.features(col.obs)), atol=1e-5)
        # the logged log-probs are those of the logged samples under the acting policy
        mean, logits, _ = ag.np_params(net.heads(buf["feats"].reshape(15, -1))[0])
        want = ag.np_log_prob(mean, float(net.log_std.numpy()[0]), logits, buf["x"].reshape(-1),
                              buf["buttons"].reshape(-1, 3))
        np.testing.assert_allclose(buf["logp"].reshape(-1), want, rtol=1e-5, atol=1e-5)
    finally:
        env.close()
