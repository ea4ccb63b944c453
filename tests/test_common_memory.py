"""common.memory: frame-sized buffers stay mapped between polls (no page faults per poll)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

# A fresh interpreter receives a 320x240 frame 200 times over a socket the way waitress reads
# it (recv with a 1 MiB limit: CPython allocates 1 MiB, then shrinks it to what came) and
# reports its minor page faults per frame.
PROBE = """
import json, resource, socket, sys, threading
if sys.argv[1] == "keep":
    from common.memory import keep_freed_memory
    assert keep_freed_memory()
FRAME, ROUNDS = 240 * 320 * 3, 200
a, b = socket.socketpair()
for s in (a, b):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
go = [threading.Event() for _ in range(ROUNDS)]
def send():
    for ev in go:
        ev.wait()
        a.sendall(bytes(FRAME))
threading.Thread(target=send, daemon=True).start()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one(ev):
    ev.set()
    got = 0
    while got < FRAME:
        got += len(b.recv(1 << 20))
one(go[0])
before = faults()
for ev in go[1:]:
    one(ev)
print(json.dumps({"faults_per_frame": (faults() - before) / (ROUNDS - 1)}))
"""


def _faults(mode: str) -> float:
    res = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["faults_per_frame"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_frame_buffers_are_not_faulted_in_again():
    plain, kept = _faults("plain"), _faults("keep")
    assert plain > 20, plain  # glibc's default: each 1 MiB read is mmap'd afresh and faulted in
    assert kept < plain / 10, (kept, plain)  # kept mapped: the next read reuses the same pages
