"""Drive server latency and load: our server vs TensorKart's way, in one run.

    python -m bench.drive [--model M.keras] --json
    -> post_p50_ms, post_p99_ms   POST frames on one keep-alive connection, at the size drive's
                                  plugin posts (--frame, default 240x320: the N64's own)
       get_p50_ms, get_p99_ms     GET: the server captures its screen region with mss (private Xvfb)
       naive_p50_ms, naive_p99_ms TensorKart's way: Werkzeug dev server, a new connection
                                  per poll, model.predict per request (same frame, same model)
       model_p50_ms, model_p99_ms one 66x200 frame through the same compiled model (drive's
                                  Policy, same thread settings), in this process, in blocks
                                  interleaved with the POST blocks (same machine load)
       transform_p50_ms, ..._p99  the posted frame -> 66x200 transform the server applies first
       post_of_model              post_p99_ms / model_p99_ms   (target <= 1.5)
       speedup                    naive_p99_ms / post_p99_ms   (target >= 15x)
       floor_p50_ms, floor_p99_ms what HTTP alone costs: the same waitress settings and Flask, a
                                  route that only reads the posted frame and answers fixed JSON
                                  (no guard, transform or model): the part of post_p99 that is
                                  not the model's or the transform's
       profile                    with --profile FILE: a second drive server, run with drive's
                                  --profile (cProfile of each request's handling), takes the same
                                  POSTs; its top functions in ms per request (not timed above)
       load_*                     4 controllers polling concurrently (default 20,000 requests):
                                  errors, requests/s, server RSS at start and end

Both servers run as their own processes (like the emulator and the server do),
the clients here. Latency is client-side: from sending the request to having
read the whole answer. Without --model an untrained PilotNet is saved to a temp
dir (the weights do not change the cost of a forward pass).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from common.cli import add_json, emit_json, fail, format_size, size_arg
from common.defaults import POST_FRAME_HW


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def percentiles(lat_s: list[float]) -> tuple[float, float]:
    a = np.asarray(lat_s) * 1000.0
    p50, p99 = np.percentile(a, [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


class ServerProcess:
    """A server subprocess that announces its port on stderr ('... on http://127.0.0.1:PORT')."""

    def __init__(self, cmd: list[str], env: dict | None = None, timeout: float = 120.0):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.port: int | None = None
        self.stderr_tail: list[str] = []
        ready = threading.Event()

        def drain():  # keep reading stderr so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.stderr_tail = (self.stderr_tail + [line])[-20:]
                m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or self.port is None:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {' '.join(cmd)}\n{''.join(self.stderr_tail)}")

    def stop(self) -> str:
        """SIGINT, wait, return stdout."""
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def bench_keepalive(port: int, method: str, n: int, warmup: int, frame: np.ndarray) -> list[float]:
    from drive.client import DriveClient

    lat = []
    with DriveClient("127.0.0.1", port) as cli:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            status, body = cli.post(0, frame, index=i) if method == "POST" else cli.get(0)
            dt = time.perf_counter() - t0
            if status != 200:
                raise RuntimeError(f"{method} /0 answered {status}: {body[:200]!r}")
            if i >= warmup:
                lat.append(dt)
    return lat


def bench_post_and_model(port: int, policy, n: int, warmup: int, frame: np.ndarray,
                         block: int = 100) -> tuple[list[float], list[float], list[float]]:
    """POST latency, the model's own latency for one frame, and the frame transform's
    (``to_model_input`` of the posted frame), in alternating blocks of ``block``."""
    from common.frames import to_model_input
    from drive.client import DriveClient

    x = to_model_input(frame)  # the model alone: the frame already transformed
    post, model, transform = [], [], []
    with DriveClient("127.0.0.1", port) as cli:
        for i in range(warmup):
            cli.post(0, frame, index=i)
            policy(x)
        i = warmup
        while len(post) < n:
            for _ in range(min(block, n - len(post))):
                t0 = time.perf_counter()
                status, body = cli.post(0, frame, index=i)
                post.append(time.perf_counter() - t0)
                i += 1
                if status != 200:
                    raise RuntimeError(f"POST /0 answered {status}: {body[:200]!r}")
            for _ in range(min(block, n - len(model))):
                t0 = time.perf_counter()
                policy(x)
                t1 = time.perf_counter()
                to_model_input(frame)
                model.append(t1 - t0)
                transform.append(time.perf_counter() - t1)
    return post, model, transform


def bench_naive(port: int, n: int, warmup: int, frame: np.ndarray) -> list[float]:
    """TensorKart's client side: a new TCP connection for every poll."""
    import http.client

    body = frame.tobytes()
    headers = {"X-Frame": f"{frame.shape[1]}x{frame.shape[0]}x3", "Connection": "close"}
    lat = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/0", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"naive server answered {resp.status}: {data[:200]!r}")
        if i >= warmup:
            lat.append(dt)
    return lat


def load_test(port: int, pid: int, total: int, frame_hw: tuple[int, int], controllers: int = 4,
              progress=True) -> dict:
    """``controllers`` keep-alive clients polling at once until ``total`` answers."""
    from tqdm.auto import tqdm

    from drive.client import DriveClient

    frame = np.random.default_rng(1).integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    per = [total // controllers + (1 if c < total % controllers else 0) for c in range(controllers)]
    errors = [0] * controllers
    done = [0] * controllers
    exc: list[str] = []
    rss = {"start_kb": rss_kb(pid)}
    bar = tqdm(total=total, desc="load test", unit="req", disable=not progress)

    def client(c: int):
        try:
            with DriveClient("127.0.0.1", port) as cli:
                for i in range(per[c]):
                    status, body = cli.post(c, frame, index=i)
                    if status != 200 or not body.startswith(b"{"):
                        errors[c] += 1
                    done[c] += 1
        except Exception as e:  # a dropped connection is an error of the run, not a crash of the bench
            exc.append(f"controller {c}: {type(e).__name__}: {e}")
            errors[c] += per[c] - done[c]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(controllers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        bar.n = sum(done)
        bar.refresh()
        samples.append((sum(done), rss_kb(pid)))
    elapsed = time.perf_counter() - t0
    bar.close()
    rss["end_kb"] = rss_kb(pid)
    rss["max_kb"] = max([kb for _, kb in samples] + [rss["end_kb"]])
    # RSS after each further ~10% of the requests: flat means no growth per request
    marks, step = [], total / 10
    for n, kb in samples:
        if n >= step * (len(marks) + 1):
            marks.append(round(kb / 1024, 1))
    return {"load_requests": sum(done), "load_controllers": controllers, "load_errors": sum(errors),
            "load_exceptions": exc, "load_req_per_s": round(sum(done) / elapsed, 1),
            "load_seconds": round(elapsed, 1), "load_rss_start_mb": round(rss["start_kb"] / 1024, 1),
            "load_rss_end_mb": round(rss["end_kb"] / 1024, 1), "load_rss_max_mb": round(rss["max_kb"] / 1024, 1),
            "load_rss_every_10pct_mb": marks}


def profile_server(model: str, path: str, n: int, warmup: int, frame: np.ndarray, tmp: str) -> dict:
    """The drive server run with --profile: ``warmup + n`` POSTs, then its profile's top rows."""
    from common.profiling import format_top

    server = ServerProcess([sys.executable, "-m", "drive", "--model", model, "--port", "0", "--gamepad", "none",
                            "--sessions", os.path.join(tmp, "sessions-profiled"), "--profile", path, "--json"])
    try:
        bench_keepalive(server.port, "POST", n, warmup, frame)
    finally:
        out = server.stop()
    try:
        profile = json.loads(out.strip().splitlines()[-1])["profile"]
    except (ValueError, IndexError, KeyError) as exc:
        raise RuntimeError(f"the profiled drive server wrote no profile: {''.join(server.stderr_tail)}") from exc
    if profile.get("file") is None:
        raise RuntimeError(f"--profile {path}: {profile.get('error')}")
    print(format_top(profile["top"], f"drive server profile, {profile['requests']} requests (incl. {warmup} "
                     f"warm-up) -> {path}, ms per request:"), flush=True)
    return profile


def naive_server(model_path: str) -> None:
    """TensorKart's server: Flask on Werkzeug's dev server, ``model.predict`` per request."""
    from flask import Flask, jsonify, request
    from werkzeug.serving import make_server

    from common.action import to_n64
    from common.frames import to_model_input
    from train.model import load_model

    model = load_model(model_path)
    app = Flask("tensorkart")

    @app.route("/<int:controller>", methods=["GET", "POST"])
    def poll(controller):
        w, h, _ = (int(v) for v in request.headers["X-Frame"].split("x"))
        frame = np.frombuffer(request.get_data(), np.uint8).reshape(h, w, 3)
        action = model.predict(to_model_input(frame)[None], batch_size=1, verbose=0)[0]
        return jsonify(to_n64(np.clip(action, -1, 1)))

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"naive: TensorKart-style server on http://127.0.0.1:{srv.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


def floor_server() -> None:
    """The HTTP floor: drive's waitress settings and Flask, a route that reads the body and answers."""
    from flask import Flask, Response, request

    from common.memory import keep_freed_memory
    from drive.server import Server

    keep_freed_memory()  # as the drive server does
    app = Flask("floor")
    body = b'{"X_AXIS": 0}'

    @app.post("/<int:controller>")
    def poll(controller):
        request.environ["wsgi.input"].read(request.content_length or 0)
        return Response(body, mimetype="application/json")

    srv = Server(app, "127.0.0.1", 0)
    print(f"floor: bare Flask route on http://127.0.0.1:{srv.port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drive", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="PilotNet .keras (default: an untrained one in a temp dir)")
    p.add_argument("--requests", type=int, default=2000, help="timed POST polls (default: %(default)s)")
    p.add_argument("--get-requests", type=int, default=500, help="timed GET polls, 0 = skip (default: %(default)s)")
    p.add_argument("--naive-requests", type=int, default=200, help="timed naive polls (default: %(default)s)")
    p.add_argument("--load-requests", type=int, default=20000,
                   help="load test total over 4 controllers, 0 = skip (default: %(default)s)")
    p.add_argument("--frame", type=size_arg(), default=POST_FRAME_HW, metavar="HxW",
                   help=f"posted frame size, rows x columns (default: {format_size(POST_FRAME_HW)}, what drive's "
                   "plugin posts; 480x640 is the emulator window's)")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="also profile the server's handling of --requests POSTs (cProfile, a separate server run "
                   "after the timed one) and write the stats to FILE.prof")
    p.add_argument("--warmup", type=int, default=100, help="untimed polls first (default: %(default)s)")
    p.add_argument("--naive-server", metavar="MODEL", help=argparse.SUPPRESS)  # internal: run the naive server
    p.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)  # internal: the HTTP floor
    add_json(p)
    args = p.parse_args(argv)
    if args.model is not None and not os.path.isfile(args.model):
        fail(p.prog, f"--model {args.model}: no such file")
    if args.naive_server:
        naive_server(args.naive_server)
        return 0
    if args.floor_server:
        floor_server()
        return 0

    from common.machine import machine_info, machine_line
    from drive.runner import configure_tf

    print(machine_line(), flush=True)
    configure_tf()  # the server's thread settings, here too (before this process runs any TF op)
    tmp = tempfile.TemporaryDirectory(prefix="bench-drive-")
    model = args.model
    if model is None:
        from train.model import build_pilotnet, save_model

        model = save_model(build_pilotnet(), os.path.join(tmp.name, "pilotnet.keras"))
    frame = np.random.default_rng(0).integers(0, 256, (*args.frame, 3), dtype=np.uint8)
    fname = format_size(args.frame)
    result: dict = {"bench": "drive", "machine": machine_info(), "frame": fname,
                    "cpus": os.cpu_count(), "model": model}
    from drive.runner import DriveError, load_policy

    try:
        policy = load_policy(model)  # the compiled model the server runs, loaded the same way
    except DriveError as exc:
        p.error(str(exc))

    display_ctx = None
    env = {}
    if args.get_requests:
        from testing.display import virtual_display

        display_ctx = virtual_display()
        env["DISPLAY"] = display_ctx.__enter__()
    try:
        server = ServerProcess([sys.executable, "-m", "drive", "--model", model, "--port", "0", "--gamepad", "none",
                                "--sessions", os.path.join(tmp.name, "sessions"), "--json"], env)
        try:
            lat, model_lat, tr_lat = bench_post_and_model(server.port, policy, args.requests, args.warmup, frame)
            result["post_p50_ms"], result["post_p99_ms"] = percentiles(lat)
            result["model_p50_ms"], result["model_p99_ms"] = percentiles(model_lat)
            result["transform_p50_ms"], result["transform_p99_ms"] = percentiles(tr_lat)
            result["post_of_model"] = round(result["post_p99_ms"] / result["model_p99_ms"], 3)
            print(f"POST {fname} keep-alive: p50 {result['post_p50_ms']} ms  p99 {result['post_p99_ms']} ms; "
                  f"the model alone (one 66x200 frame): p50 {result['model_p50_ms']} ms  p99 "
                  f"{result['model_p99_ms']} ms; POST p99 / model p99 = {result['post_of_model']} (the {fname} -> "
                  f"66x200 transform alone: p50 {result['transform_p50_ms']} ms)", flush=True)
            if args.get_requests:
                lat = bench_keepalive(server.port, "GET", args.get_requests, args.warmup // 2, frame)
                result["get_p50_ms"], result["get_p99_ms"] = percentiles(lat)
                print(f"GET (mss capture): p50 {result['get_p50_ms']} ms  p99 {result['get_p99_ms']} ms",
                      flush=True)
            if args.load_requests:
                result.update(load_test(server.port, server.proc.pid, args.load_requests, args.frame))
                print(f"load: {result['load_requests']} requests from 4 controllers, {result['load_errors']} errors, "
                      f"{result['load_req_per_s']} req/s, server RSS {result['load_rss_start_mb']} -> "
                      f"{result['load_rss_end_mb']} MB", flush=True)
        finally:
            out = server.stop()
        try:
            summary = json.loads(out.strip().splitlines()[-1])
            result["server_side"] = summary.get("server", {}).get("latency_ms")
            result["server_errors"] = summary.get("server", {}).get("errors")
        except (ValueError, IndexError):
            result["server_side"] = None
    finally:
        if display_ctx is not None:
            display_ctx.__exit__(None, None, None)

    if args.profile:
        result["profile"] = profile_server(model, args.profile, args.requests, args.warmup, frame, tmp.name)

    floor = ServerProcess([sys.executable, "-m", "bench.drive", "--floor-server"])
    try:
        lat = bench_keepalive(floor.port, "POST", args.requests, args.warmup, frame)
    finally:
        floor.stop()
    result["floor_p50_ms"], result["floor_p99_ms"] = percentiles(lat)
    print(f"HTTP floor (same waitress + Flask, a route that only reads the {fname} frame): p50 "
          f"{result['floor_p50_ms']} ms  p99 {result['floor_p99_ms']} ms", flush=True)

    naive = ServerProcess([sys.executable, "-m", "bench.drive", "--naive-server", model])
    try:
        lat = bench_naive(naive.port, args.naive_requests, min(args.warmup, 10), frame)
    finally:
        naive.stop()
    result["naive_p50_ms"], result["naive_p99_ms"] = percentiles(lat)
    result["speedup"] = round(result["naive_p99_ms"] / result["post_p99_ms"], 1)
    result["speedup_p50"] = round(result["naive_p50_ms"] / result["post_p50_ms"], 1)
    print(f"naive (TensorKart's way): p50 {result['naive_p50_ms']} ms  p99 {result['naive_p99_ms']} ms; "
          f"speedup (p99) {result['speedup']}x", flush=True)
    tmp.cleanup()
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
