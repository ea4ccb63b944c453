"""Multi-machine Ray, as such: a two-node cluster on this machine (``ray start --head``, then a
second node joined to it with its own custom resource), fine-tuning through
``python -m train.finetune --ray ADDRESS`` with env actors on both nodes.

Loopback only: ``testing.ray_cluster`` runs the cluster and the fine-tuning run in a network
namespace of their own whose only interface is loopback (``unshare -n``, ``ip link set lo up``),
so every node advertises and is reached at 127.0.0.1 and no traffic can go anywhere else. It stops
both nodes itself; whatever is still in the namespace afterwards is killed (by pid).

Ray is the optional extra (``make setup EXTRAS=ray``): without it this test skips. Without
``unshare``/``ip`` (or the right to make a namespace) it skips too, which fails the run under CI
(``KARTPILOT_REQUIRE_SYSTEM=1``, tests/conftest.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="optional extra ray: make setup EXTRAS=ray (or make test EXTRAS=ray)")

from testing.ray_cluster import HEAD_RESOURCES, SECOND_RESOURCES, cluster_missing, run_isolated  # noqa: E402
from testing.tracks import write_oval

pytestmark = pytest.mark.slow


def test_finetune_runs_env_actors_on_both_nodes_of_a_loopback_cluster(tmp_path):
    why = cluster_missing()
    if why:
        pytest.skip(why)
    from testing.models import tiny_pilotnet
    from train.model import save_model

    track = tmp_path / "oval.json"
    write_oval(track)
    model = save_model(tiny_pilotnet(seed=1), str(tmp_path / "tiny.keras"))
    out = tmp_path / "run"
    # 2 actors x 2 envs, each actor needing 2 "kp_env" (one per env) and each node having 2:
    # one actor fits on each node
    report = run_isolated(["--ray-actors", "2", "--ray-resource", "kp_env", "--ray-cpus-per-actor", "1",
                           "--model", model, "--track", str(track), "--eval-tracks", str(track), "--envs", "4",
                           "--action-repeat", "4", "--rollout", "8", "--frames", "384", "--warmup-frames", "0",
                           "--epochs", "1", "--minibatch", "32", "--eval-laps", "1", "--eval-max-s", "5",
                           "--out", str(out), "--no-tensorboard", "--quiet", "--json"])
    # the cluster saw loopback alone, and both nodes live (and are reached) at 127.0.0.1
    assert report["interfaces"] == ["lo"], report
    nodes = report["nodes"]
    assert [n["address"] for n in nodes] == ["127.0.0.1", "127.0.0.1"], nodes
    assert sorted((n["resources"] for n in nodes), key=len) == [HEAD_RESOURCES, SECOND_RESOURCES], nodes
    assert report["address"].startswith("127.0.0.1:")

    ft = report["finetune"]
    assert ft["returncode"] == 0, f"{ft['stderr']}\n--- outer stderr ---\n{report['stderr']}"
    stats = ft["summary"]["env_stats"]
    assert stats["ray_actors"] == 2 and stats["slice_per_actor"] == [2, 2] and stats["resource"] == "kp_env"
    assert stats["node_ids"] == sorted(n["node_id"] for n in nodes), f"env actors ran on {stats['node_ids']}"
    assert ft["summary"]["updates"] == 3 and ft["summary"]["frames"] == 384  # 3 x 8 decisions x 4 envs x 4 frames
    assert (out / "ckpt" / "state.npz").exists() and "ray: 2 env actors" in ft["stderr"]
    assert report["stopped"] and report["leftover"] == {}, f"processes outlived stop_nodes: {report['leftover']}"
    assert report["returncode"] == 0
