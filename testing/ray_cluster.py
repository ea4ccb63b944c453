"""A two-node Ray cluster on loopback only, and one fine-tuning run through it.

    python -m testing.ray_cluster --json -- --model M --track T --envs 4 ... --out DIR --json

starts a network namespace of its own whose only interface is loopback (``unshare -n``, then
``ip link set lo up``; as root, or ``unshare -rn`` in a user namespace otherwise), and inside it:
``ray start --head`` on 127.0.0.1, a second node joined to it with its own custom resource
(``{"kp_env": 2, "kp_second_node": 1}``; the head has ``{"kp_env": 2}``), then
``python -m train.finetune --ray 127.0.0.1:PORT ARGS...`` (the arguments after ``--``). It stops
both nodes, kills whatever is left in the namespace, and prints what happened: the interfaces
seen, the nodes with the addresses Ray gave them, the run's exit status, its last-line JSON
summary and the tail of its stderr (``--json``: as one JSON line).

Why a namespace: in one, Ray can find no address but 127.0.0.1, so every node advertises and is
reached at loopback, and nothing it does can leave the namespace (outside one, Ray on Linux
rewrites 127.0.0.1 into the machine's network address for a joining node). The cluster still uses
token authentication, Ray's default, with a random token made for this run (``RAY_AUTH_TOKEN``),
so nothing is read from or written to ``~/.ray``.

Used by tests/test_ray_cluster.py (``run_isolated``); needs Ray (``make setup EXTRAS=ray``),
``unshare`` (util-linux) and ``ip`` (iproute2).
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m testing.ray_cluster"
HEAD_RESOURCES = {"kp_env": 2}
SECOND_RESOURCES = {"kp_env": 2, "kp_second_node": 1}
INSIDE = "--inside-netns"  # internal, with the work folder: this process runs in the loopback-only namespace


# ---- the namespace (outside it) -----------------------------------------------------------------

def isolate_command(argv: list[str]) -> list[str]:
    """``argv`` run in a fresh network namespace whose only interface, loopback, is up."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]
    return [*unshare, "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *argv]


def cluster_missing() -> str | None:
    """Why this machine cannot run the cluster (no ray executable, no unshare/ip, no permission), or None."""
    if not Path(sys.executable).with_name("ray").exists():
        return f"no ray executable next to {sys.executable}: make setup EXTRAS=ray"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return (f"`{tool}` is not installed ({'util-linux' if tool == 'unshare' else 'iproute2'}): "
                    "the Ray cluster runs in a network namespace of its own (unshare -n)")
    probe_cmd = isolate_command(["true"])
    try:
        probe = subprocess.run(probe_cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a network namespace ({' '.join(probe_cmd)}): {exc}"
    if probe.returncode != 0:
        return (f"cannot make a network namespace ({' '.join(probe_cmd)}, exit {probe.returncode}): "
                f"{probe.stderr.strip()[-500:]}")
    return None


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _kill_netns(ns: str) -> dict[int, str]:
    """SIGKILL every process in network namespace ``ns`` (one we made, so all of them are ours) and
    wait for them to go; returns their command lines by pid."""
    killed = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid() and _netns(int(d.name)) == ns:
            with contextlib.suppress(OSError):
                cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                os.kill(int(d.name), signal.SIGKILL)
                killed[int(d.name)] = cmdline[:300]
    deadline = time.monotonic() + 10
    while any(_netns(pid) == ns for pid in killed) and time.monotonic() < deadline:  # not gone yet
        time.sleep(0.1)
    return killed


def run_isolated(finetune_args: list[str], *, timeout: float = 900.0, finetune_timeout: float = 600.0) -> dict:
    """Run this module (cluster + ``train.finetune --ray``) in a loopback-only namespace of its own.

    Returns the inner run's report (see ``main``), with ``"leftover"``: processes still in the
    namespace at the end (pid: command line), which were then killed. Raises RuntimeError (with the
    stderr tail) when the inner run printed no report. The work folder (Ray's temp dir, the logs) is
    made here and removed here, whatever happened inside."""
    own_ns = _netns(os.getpid())
    work = tempfile.mkdtemp(prefix="kpray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    cmd = isolate_command([sys.executable, "-m", "testing.ray_cluster", INSIDE, work, "--json",
                           f"--timeout={finetune_timeout:g}", "--", *finetune_args])
    try:
        stdout, stderr, returncode, leftover = _run_in_netns(cmd, own_ns, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"{PROG} exited with {returncode} without a JSON report "
                           f"(limit {timeout:.0f} s); stderr:\n{stderr[-4000:]}") from None
    report["returncode"] = returncode
    report["leftover"] = leftover
    report["stderr"] = stderr[-4000:]
    return report


def _run_in_netns(cmd: list[str], own_ns: str | None, timeout: float) -> tuple[str, str, int, dict]:
    """Run ``cmd`` (an ``isolate_command``); afterwards kill whatever is left in its namespace."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True, start_new_session=True)
        ns = None
        try:
            # unshare execs sh, which execs python: one pid, whose namespace changes once unshare has run
            deadline = time.monotonic() + 30
            while ns is None and proc.poll() is None and time.monotonic() < deadline:
                cur = _netns(proc.pid)
                ns = cur if cur is not None and cur != own_ns else None
                time.sleep(0.05)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            leftover = _kill_netns(ns) if ns is not None else {}
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), proc.returncode, leftover


# ---- the cluster (inside the namespace) ---------------------------------------------------------

def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_executable() -> str:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise FileNotFoundError(f"no ray executable next to {sys.executable}: make setup EXTRAS=ray")
    return str(ray)


def node_command(temp_dir: str, resources: dict, *, head_port: int | None = None,
                 address: str | None = None) -> list[str]:
    """``ray start --block`` for one small node on 127.0.0.1 (head with ``head_port``, else joining ``address``).

    Every port is chosen here, so the two nodes on one machine never ask for the same default."""
    ports = _free_ports(7)
    cmd = [_ray_executable(), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
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


def _others_here() -> list[int]:
    """PIDs of the other processes in this network namespace: inside ours, all of them are ours."""
    ns = _netns(os.getpid())
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and int(d.name) != os.getpid() and _netns(int(d.name)) == ns]


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """Stop the ``ray start --block`` processes (worker node first), give the rest of the namespace
    (raylet workers) 20 s to follow, then SIGKILL what is left, by id, and wait for it to go."""
    for p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _others_here() and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _others_here():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _others_here() and time.monotonic() < deadline:  # SIGKILLed, not yet gone
        time.sleep(0.1)


def _alive_nodes(ray) -> list[dict]:
    return [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"],
             "resources": {k: v for k, v in n["Resources"].items() if k.startswith("kp_")}}
            for n in ray.nodes() if n["Alive"]]


def wait_nodes(address: str, n: int, procs: list[subprocess.Popen], logs: list[str],
               timeout: float = 180.0) -> list[dict]:
    """Connect to the cluster at ``address`` until it has ``n`` live nodes; returns them."""
    import ray

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for p, log in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"ray start exited with {p.returncode}: {Path(log).read_text()[-2000:]}")
            if not ray.is_initialized():
                try:
                    ray.init(address=address, log_to_driver=False)
                except ConnectionError:
                    time.sleep(2)
                    continue
            nodes = _alive_nodes(ray)
            if len(nodes) == n:
                return nodes
            time.sleep(1)
    finally:
        ray.shutdown()
    raise TimeoutError(f"the Ray cluster at {address} did not reach {n} nodes in {timeout:.0f} s")


def run_cluster(temp_dir: str, finetune_args: list[str], timeout: float) -> dict:
    """Start the two nodes (Ray's temp dir and the logs in ``temp_dir``), run ``train.finetune --ray``
    through them, stop them; the report."""
    # Ray's default token authentication, with a token of our own: nothing read from ~/.ray
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                       "RAY_memory_monitor_refresh_ms": "0"})  # shared machine: no memory-monitor kills
    port = _free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs: list[str] = []
    report: dict = {"interfaces": interfaces(), "address": address}
    try:
        for cmd in (node_command(temp_dir, HEAD_RESOURCES, head_port=port),
                    node_command(temp_dir, SECOND_RESOURCES, address=address)):
            logs.append(os.path.join(temp_dir, f"node{len(procs)}.log"))
            with open(logs[-1], "w") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            report["nodes"] = wait_nodes(address, len(procs), procs, logs)
        out, err = os.path.join(temp_dir, "finetune.out"), os.path.join(temp_dir, "finetune.err")
        with open(out, "w") as fo, open(err, "w") as fe:
            try:
                rc = subprocess.run([sys.executable, "-m", "train.finetune", "--ray", address, *finetune_args],
                                    cwd=ROOT, stdout=fo, stderr=fe, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
        lines = Path(out).read_text().strip().splitlines()
        summary = None
        with contextlib.suppress(IndexError, json.JSONDecodeError):
            summary = json.loads(lines[-1])
        report["finetune"] = {"returncode": rc, "timed_out": rc is None, "summary": summary,
                              "stderr": Path(err).read_text()[-4000:]}
    finally:
        stop_nodes(procs)
        report["stopped"] = not _others_here()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the report as one JSON line (the last line)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds the fine-tuning run may take (600)")
    ap.add_argument(INSIDE, dest="inside", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("finetune_args", nargs=argparse.REMAINDER,
                    help="after --: the arguments of python -m train.finetune (without --ray)")
    args = ap.parse_args(argv)
    rest = args.finetune_args[1:] if args.finetune_args[:1] == ["--"] else args.finetune_args
    if not rest:
        ap.error("give the fine-tuning arguments after --, e.g. -- --model M --track T --out DIR --json")
    if "--ray" in rest or any(a.startswith("--ray=") for a in rest):
        ap.error("--ray is set here (the cluster's address); leave it out of the fine-tuning arguments")
    if args.inside:
        if interfaces() != ["lo"]:
            ap.error(f"{INSIDE}: this namespace has interfaces {interfaces()}, not loopback alone")
        report = run_cluster(args.inside, rest, args.timeout)
    else:
        why = cluster_missing()
        if why:
            ap.error(why)
        try:
            report = run_isolated(rest, finetune_timeout=args.timeout, timeout=args.timeout + 300)
        except RuntimeError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report))
    else:
        ft = report.get("finetune") or {}
        print(f"interfaces {report['interfaces']}; nodes {report.get('nodes')}; finetune exit "
              f"{ft.get('returncode')}; summary {ft.get('summary')}")
    return 0 if (report.get("finetune") or {}).get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
