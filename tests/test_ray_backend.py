"""The Ray backend on a local Ray started by the test (2 actors, the simulator), on loopback only.

Ray is the optional extra (``make setup EXTRAS=ray``; CI installs it): without
it these tests skip with that reason, or fail when the extra was asked for
(``make test EXTRAS=ray`` under CI: tests/conftest.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="optional extra ray: make setup EXTRAS=ray (or make test EXTRAS=ray)")

from testing.tracks import write_oval  # noqa: E402
from train.finetune import ray_backend as rb  # noqa: E402
from train.finetune.envs import RewardShaping, make_backend  # noqa: E402

pytestmark = pytest.mark.slow
RAY_MONITOR = "RAY_memory_monitor_refresh_ms"  # noqa: SIM112 (Ray spells it in lower case)


@pytest.fixture(scope="module")
def local_ray():
    # small on purpose: 2 CPUs (one per env actor), a 100 MB object store, no dashboard
    # The machine is shared: keep Ray's own memory monitor from killing our small actors
    # because of other programs' memory (the kernel's OOM killer still guards the box).
    old = os.environ.get(RAY_MONITOR)
    os.environ[RAY_MONITOR] = "0"
    # 2 "mupen" slots: this machine can run emulator actors (resource tag)
    rb.init_ray("local", num_cpus=2, object_store_mb=100, resources={"mupen": 2})
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop(RAY_MONITOR, None)
    else:
        os.environ[RAY_MONITOR] = old


def test_local_ray_stays_on_loopback(local_ray):
    """``--ray local`` starts one node nobody joins: it advertises 127.0.0.1, and every TCP socket of
    the driver and of the Ray processes under it listens on, or talks to, loopback only."""
    from testing.netcheck import off_loopback, process_tree, tcp_sockets

    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert ray.get(ray.remote(num_cpus=1)(lambda: ray.util.get_node_ip_address()).remote()) == "127.0.0.1"
    sockets = tcp_sockets(process_tree(os.getpid()))
    assert any(s["state"] == "LISTEN" for s in sockets), "found none of Ray's sockets to check"
    assert off_loopback(sockets) == [], off_loopback(sockets)


def test_split_slices():
    assert rb.split(24, 2) == [(0, 12), (12, 24)]
    assert rb.split(5, 3) == [(0, 2), (2, 3), (3, 5)]
    with pytest.raises(ValueError, match="actors"):
        rb.split(2, 3)


def test_ray_steps_exactly_like_one_process_and_replaces_a_dead_actor(local_ray):
    kw = dict(track="luigi", num_envs=4, action_repeat=4, seed=3, shaping=RewardShaping())
    single = make_backend("kartsim", **kw)
    remote = rb.RayBackend(inner="kartsim", actors=2, address="local", **kw)
    try:
        st = remote.stats()
        assert st["ray_actors"] == 2 and st["slice_per_actor"] == [2, 2] and st["policy_lag"] == 0
        assert np.array_equal(single.reset(), remote.reset())
        assert remote.has_state and np.array_equal(single.state(), remote.state())
        rng = np.random.default_rng(0)
        for _ in range(40):
            act = np.clip(single.expert_actions() + rng.normal(0, 0.2, (4, 5)), [-1, -1, 0, 0, 0], 1)
            a, b = single.step(act.astype(np.float32)), remote.step(act.astype(np.float32))
            # env i of the slices is seeded as env i of one process: the very same race
            assert np.array_equal(a.obs, b.obs) and np.array_equal(a.reward, b.reward)
            assert np.array_equal(a.terminated, b.terminated) and np.array_equal(a.info["lap"], b.info["lap"])
            # and the same kart state rows, for a model that takes them (common.state)
            assert np.array_equal(single.state(), remote.state())
        assert np.array_equal(remote.expert_actions(), single.expert_actions())
        # a model that takes the state rows fine-tunes on Ray: the collector gets them from the actors
        from common import state as kstate
        from testing.models import tiny_pilotnet
        from train.finetune.agent import ActorCritic
        from train.finetune.rollout import Collector

        col = Collector(ActorCritic(tiny_pilotnet(1, state=True)), remote, 0.99, seed=3)
        buf = col.collect(3)
        assert col.state.shape == (4, kstate.SIZE) and buf["feats"].shape[:2] == (3, 4)
        np.testing.assert_array_equal(col.state, remote.state())

        remote.kill_actor(1)
        res = remote.step(np.zeros((4, 5), np.float32))
        assert list(res.truncated) == [False, False, True, True], "the dead slice's episodes are cut"
        assert (res.reward[2:] == 0).all() and res.obs.shape == (4, 66, 200, 3)
        st = remote.stats()
        assert st["actor_replacements"] == 1 and st["ray_actors"] == 2
        res = remote.step(np.zeros((4, 5), np.float32))
        assert not res.truncated.any()
    finally:
        remote.close()
        single.close()


def test_emulator_actors_use_the_resource_tag(local_ray):
    import shutil

    from common.mupen import PLUGIN_SO as DEFAULT_PLUGIN
    from common.mupen import find_mupen
    from testing.emulator import find_test_rom

    rom = find_test_rom()
    if rom is None or shutil.which("Xvfb") is None or find_mupen() is None or not DEFAULT_PLUGIN.is_file():
        pytest.skip("needs the GPL test ROM, Xvfb, mupen64plus and the built plugin (make plugin)")
    remote = rb.RayBackend(track="test", num_envs=2, action_repeat=2, seed=0, inner="mupen-test", actors=2,
                           address="local", rom=str(rom))
    try:
        st = remote.stats()
        assert st["resource"] == "mupen" and st["slice_per_actor"] == [1, 1]
        assert ray.available_resources().get("mupen", 0) == 0, "both emulator actors hold a mupen slot"
        obs = remote.reset()
        assert obs.shape == (2, 66, 200, 3)  # the boot frame (black)
        for _ in range(20):
            res = remote.step(np.zeros((2, 5), np.float32))
        assert res.obs.shape == (2, 66, 200, 3) and not res.truncated.any()
        assert res.obs[0].std() > 5 and res.obs[1].std() > 5, "the logo, through the model crop"
        assert len({p["pid"] for p in remote.placement}) == 2
    finally:
        remote.close()




def _config(files, out, **kw):
    from train.finetune.ppo import PPOConfig
    from train.finetune.trainer import Config

    base = dict(model=files["model"], track=files["track"], eval_tracks=(files["track"],), envs=4,
                action_repeat=4, rollout=16, warmup_frames=0, kl_coef=0.0, kl_final=0.0, eval_laps=1,
                eval_max_s=20.0, out=str(out), tensorboard=False, seed=0, frames=10**9,
                ppo=PPOConfig(lr=1e-3, critic_lr=1e-3, epochs=4, minibatch=64))
    base.update(kw)
    return Config(**base)


def test_learning_curve_matches_single_machine_and_survives_a_killed_actor(local_ray, tmp_path):

    from testing.models import tiny_pilotnet
    from train.finetune.trainer import Trainer
    from train.model import save_model

    track = tmp_path / "oval.json"
    write_oval(track)
    files = {"track": str(track), "model": save_model(tiny_pilotnet(seed=1), str(tmp_path / "tiny.keras"))}
    updates = 14

    def run(out, kill_at=None, **kw):
        trainer = Trainer(_config(files, tmp_path / out, **kw))
        try:
            for u in range(updates):
                if kill_at is not None and u == kill_at:
                    trainer.env.kill_actor(0)
                trainer.train_update()
            stats = trainer.env.stats() if isinstance(trainer.env, rb.RayBackend) else {}
            return [h["reward_per_s"] for h in trainer.history], stats
        finally:
            trainer.close()

    local, _ = run("single")
    remote, stats = run("ray", kill_at=updates // 2, ray="local", ray_actors=2)
    print("single", np.round(local, 3), "\nray   ", np.round(remote, 3), stats)
    assert stats["ray_actors"] == 2 and stats["actor_replacements"] == 1 and stats["policy_lag"] == 0
    k = updates // 2
    # before the kill the two runs see the same races and the same actions: the same curve
    np.testing.assert_allclose(remote[:k], local[:k], rtol=0.05, atol=0.05)
    # after it, one slice restarted its episodes, so the races differ: learning goes on, and the
    # Ray run's rewards after the kill stay within the single run's own spread over that stretch
    early, late_l, late_r = np.mean(local[:3]), np.mean(local[-3:]), np.mean(remote[-3:])
    assert late_l > early and late_r > early, f"single {local}, ray {remote}"
    after_l, after_r = np.asarray(local[k:]), np.asarray(remote[k:])
    assert abs(after_r.mean() - after_l.mean()) <= after_l.std(), f"single {local}, ray {remote}"
