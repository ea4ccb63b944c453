"""Multi-machine Ray, as such: a two-node cluster on this machine (``ray start --head`` on loopback,
then a second node joined to it with its own custom resource), fine-tuning through
``python -m train.finetune --ray ADDRESS`` with env actors on both nodes. The test starts the
cluster and stops it itself (its own processes only, found by its own temp dir).

Addresses: the head runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, so Ray keeps 127.0.0.1 as
given and its GCS listens on loopback only; the driver does the same. A joining node may not set
that variable, and Ray rewrites "127.0.0.1" into the machine's network address for it, so it is
told "127.0.0.01" (the same loopback address, spelled so Ray leaves it alone). Ray still advertises
the second node's raylet at the machine's own address (listening on every interface): the cluster
uses token authentication with a random token made for this test (``RAY_AUTH_TOKEN``; nothing is
written to ~/.ray), and all of its traffic stays inside this machine.

Ray is the optional extra (``make setup EXTRAS=ray``): without it this test skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is the optional extra: make setup EXTRAS=ray")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
OVAL = {
    "name": "oval",
    "points": [[30 * np.cos(a), 18 * np.sin(a), 12.0] for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)],
    "surface": {"offroad": "grass", "offroad_speed": 0.45},
    "theme": "meadow",
    "checkpoint_spacing": 15,
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_cmd(temp_dir: str, resources: dict, ip: str, *, head_port: int | None = None,
              address: str | None = None) -> list:
    ports = _free_ports(7)
    cmd = [RAY, "start", "--block", f"--node-ip-address={ip}", "--num-cpus=1",
           f"--resources={json.dumps(resources)}", "--disable-usage-stats",
           f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
           f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
           f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
           "--object-store-memory=80000000"]
    if head_port is not None:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=false", f"--temp-dir={temp_dir}",
                f"--ray-client-server-port={ports[6]}"]
    else:
        cmd += [f"--address={address}"]
    return cmd


def _ours(marker: str) -> list[int]:
    """PIDs of processes whose command line names our cluster's unique temp dir."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _stop(procs: list[subprocess.Popen], marker: str) -> None:
    for p in reversed(procs):  # worker node first, then the head
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _ours(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _ours(marker):  # stragglers of our own cluster (raylet workers), by id
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_nodes(address: str, n: int, procs, logs, env, timeout: float = 180.0) -> None:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(sum(1 for x in ray.nodes() if x['Alive'])); ray.shutdown()")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited with {p.returncode}: {Path(log).read_text()[-2000:]}")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {n} nodes in {timeout:.0f} s")


@pytest.fixture
def two_nodes():
    if not os.path.exists(RAY):
        pytest.skip(f"no ray executable next to {sys.executable}")
    temp_dir = tempfile.mkdtemp(prefix="kpray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    token = secrets.token_hex(32)
    node_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_memory_monitor_refresh_ms": "0"}  # shared machine: no memory-monitor kills
    head_env = {**node_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keep 127.0.0.1 as given
    port = _free_ports(1)[0]
    procs: list[subprocess.Popen] = []
    logs: list[str] = []
    try:
        for cmd, env in ((_node_cmd(temp_dir, {"kp_env": 2}, "127.0.0.1", head_port=port), head_env),
                         (_node_cmd(temp_dir, {"kp_env": 2, "kp_second_node": 1}, "127.0.0.1",
                                    address=f"127.0.0.01:{port}"), node_env)):
            logs.append(os.path.join(temp_dir, f"node{len(procs)}.log"))
            with open(logs[-1], "w") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
            _wait_nodes(f"127.0.0.1:{port}", len(procs), procs, logs, head_env)
        yield f"127.0.0.1:{port}", head_env
    finally:
        _stop(procs, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_finetune_runs_env_actors_on_both_nodes_of_a_cluster(two_nodes, tmp_path):
    from testing.models import tiny_pilotnet
    from train.model import save_model

    track = tmp_path / "oval.json"
    track.write_text(json.dumps(OVAL))
    model = save_model(tiny_pilotnet(seed=1), str(tmp_path / "tiny.keras"))
    out = tmp_path / "run"
    # 2 actors x 2 envs, each actor needing 2 "kp_env" (one per env): one actor fits on each node
    address, env = two_nodes
    cmd = [sys.executable, "-m", "train.finetune", "--ray", address, "--ray-actors", "2", "--ray-resource",
           "kp_env", "--ray-cpus-per-actor", "1", "--model", model, "--track", str(track), "--eval-tracks",
           str(track), "--envs", "4", "--action-repeat", "4", "--rollout", "8", "--frames", "384",
           "--warmup-frames", "0", "--epochs", "1", "--minibatch", "32", "--eval-laps", "1", "--eval-max-s", "5",
           "--out", str(out), "--no-tensorboard", "--quiet", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = summary["env_stats"]
    assert stats["ray_actors"] == 2 and stats["slice_per_actor"] == [2, 2] and stats["resource"] == "kp_env"
    assert len(stats["node_ids"]) == 2, f"env actors ran on {stats['node_ids']}, not on both nodes"
    assert summary["updates"] == 3 and summary["frames"] == 384  # 3 x 8 decisions x 4 envs x 4 frames
    assert (out / "ckpt" / "state.npz").exists() and "ray: 2 env actors" in proc.stderr
