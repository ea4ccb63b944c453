"""The C plugin driven by its C harness (plugin_c/tests/harness.c) against a real
Python HTTP server: keep-alive, timeouts, garbage, server down and back.

The harness dlopens the real libmupen64plus core and the plugin, and calls
the plugin API the way the core does; these tests script it poll by poll.
"""

from __future__ import annotations

import ctypes.util
import json
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from common.mupen import PLUGIN_SO, plugin_sets, section
from testing.emulator import HARNESS, build_plugin
from testing.plugin_server import PluginTestServer

ANSWER = {"A_BUTTON": 1, "X_AXIS": 40, "Y_AXIS": -20}


def _core_available() -> bool:
    return Path("/usr/include/mupen64plus/m64p_plugin.h").is_file() and (
        ctypes.util.find_library("mupen64plus") is not None
        or Path("/usr/lib/x86_64-linux-gnu/libmupen64plus.so.2").exists())


pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None or not _core_available(),
    reason="needs a C compiler and Debian's libmupen64plus-dev / libmupen64plus2 (apt-get install libmupen64plus-dev)")


@pytest.fixture(scope="module")
def plugin() -> Path:
    try:
        return build_plugin(harness=True)
    except RuntimeError as exc:  # show the compiler's complaint
        pytest.fail(str(exc))


class Harness:
    """The C harness as a child process, scripted through stdin, read with a timeout."""

    def __init__(self, configdir: Path, sets: dict[str, object]):
        args = [str(HARNESS), "--plugin", str(PLUGIN_SO), "--configdir", str(configdir)]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        self.version = self._next("version")
        self.present = self._next("controllers")["present"]

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\n"))

    def _next(self, event: str, timeout: float = 20.0) -> dict:
        line = self.lines.get(timeout=timeout)
        msg = json.loads(line)
        assert msg["event"] == event, f"expected {event}, harness said {msg}; stderr: {self.stderr[-5:]}"
        return msg

    def poll(self, n: int = 1, controller: int = 0) -> list[dict]:
        self.proc.stdin.write(f"poll {n} {controller}\n")
        self.proc.stdin.flush()
        return [self._next("poll") for _ in range(n)]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        return "\n".join(self.stderr)

    def wait_log(self, text: str, timeout: float = 5.0) -> bool:
        """True once the plugin logged ``text`` (stderr is read by a thread)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.02)
        return False


@pytest.fixture
def server():
    srv = PluginTestServer().start()
    srv.state.answer = dict(ANSWER)
    yield srv
    srv.stop()


@pytest.fixture
def harness_factory(plugin, tmp_path):
    made: list[Harness] = []

    def make(port: int, **sets) -> Harness:
        # generous default so a loaded CI machine never turns a good answer into a timeout;
        # the timeout tests pass their own
        conf: dict[str, object] = plugin_sets({"port": port, "timeout_ms": 2000})
        conf.update({f"{section(0)}[{k}]" if "[" not in k else k: v for k, v in sets.items()})
        h = Harness(tmp_path / f"cfg{len(made)}", conf)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def answered(p: dict) -> bool:
    return p["A_BUTTON"] == 1 and p["X_AXIS"] == 40 and p["Y_AXIS"] == -20


def neutral(p: dict) -> bool:
    return p["value"] == 0


def test_c_unit_tests(plugin):
    """plugin_c/tests/unit.c: HTTP framing, JSON answers, profiles, frame flip."""
    unit = PLUGIN_SO.parent / "kp_unit"
    subprocess.run(["make", "-s", "-C", str(PLUGIN_SO.parents[1]), "unit"], check=True, capture_output=True)
    res = subprocess.run([str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 failures" in res.stdout


def test_version_and_default_controllers(harness_factory, server):
    h = harness_factory(server.port)
    assert h.version["api"] == 0x020101
    assert h.version["name"] == "KartPilot Input Plugin"
    assert h.present == [1, 0, 0, 0]


def test_keepalive_reuses_one_connection(harness_factory, server):
    h = harness_factory(server.port)
    polls = h.poll(40)
    assert all(answered(p) for p in polls)
    reqs = server.requests()
    assert len(reqs) == 40
    assert server.state.connections == 1
    assert {r.method for r in reqs} == {"GET"} and {r.path for r in reqs} == {"/0"}


def test_each_controller_has_its_own_connection(harness_factory, server):
    h = harness_factory(server.port, **plugin_sets({"plugged": 1, "timeout_ms": 2000, "port": server.port},
                                                   controller=1))
    assert h.present == [1, 1, 0, 0]
    for _ in range(5):
        assert answered(h.poll(1, 0)[0]) and answered(h.poll(1, 1)[0])
    assert server.state.connections == 2
    assert sorted({r.path for r in server.requests()}) == ["/0", "/1"]


def test_unplugged_controller_reads_neutral_without_asking(harness_factory, server):
    h = harness_factory(server.port)
    assert neutral(h.poll(1, 2)[0])
    assert server.requests() == []


def test_buttons_and_axes_reach_the_core_struct(harness_factory, server):
    server.state.answer = {"START_BUTTON": 1, "B_BUTTON": 1, "R_TRIG": 1, "Z_TRIG": 0, "U_CBUTTON": 1,
                           "X_AXIS": -80, "Y_AXIS": 300}
    p = harness_factory(server.port).poll(1)[0]
    assert (p["START_BUTTON"], p["B_BUTTON"], p["R_TRIG"], p["Z_TRIG"], p["U_CBUTTON"], p["A_BUTTON"]) == \
        (1, 1, 1, 0, 1, 0)
    assert p["X_AXIS"] == -80 and p["Y_AXIS"] == 127  # clamped to the signed byte


def test_missing_keys_read_zero(harness_factory, server):
    server.state.answer = {"A_BUTTON": 1}
    p = harness_factory(server.port).poll(1)[0]
    assert p["A_BUTTON"] == 1 and p["X_AXIS"] == 0 and p["value"] == 1 << 7


def test_stalled_server_times_out_to_neutral(harness_factory, server):
    server.set_mode("stall")
    server.state.stall_s = 3.0
    h = harness_factory(server.port, timeout_ms=100)
    polls = h.poll(5)
    assert all(neutral(p) for p in polls)
    # behaviour, not speed: the plugin gave up long before the stalled answer
    assert max(p["ms"] for p in polls) < 3000
    assert h.wait_log("timed out"), h.log()
    # one log line, not one per poll
    assert sum("timed out" in line for line in h.stderr) == 1


@pytest.mark.parametrize("mode", ["garbage_http", "garbage_json", "truncated", "chunked", "oversized", "close",
                                  "status500"])
def test_bad_responses_give_neutral_then_recover(harness_factory, server, mode):
    server.set_mode(mode)
    h = harness_factory(server.port, timeout_ms=1000, reconnect_ms=20)
    polls = h.poll(4)
    assert all(neutral(p) for p in polls), polls
    assert h.proc.poll() is None  # still alive
    server.set_mode("ok")
    recovered = []
    for _ in range(20):
        recovered += h.poll(1)
        if answered(recovered[-1]):
            break
        time.sleep(0.05)
    assert answered(recovered[-1]), f"never recovered after {mode}: {h.log()}"
    assert h.wait_log("answering again"), h.log()


def test_http10_close_delimited_answers_work(harness_factory, server):
    server.set_mode("http10")
    h = harness_factory(server.port)
    polls = h.poll(5)
    assert all(answered(p) for p in polls)
    assert server.state.connections == 5  # the server closes each one


def test_server_down_then_back(harness_factory, tmp_path):
    srv = PluginTestServer().start()
    srv.state.answer = dict(ANSWER)
    port = srv.port
    h = harness_factory(port, reconnect_ms=20, reconnect_max_ms=100)
    try:
        assert all(answered(p) for p in h.poll(3))
        srv.stop()
        down = h.poll(10)
        assert all(neutral(p) for p in down)
        srv = PluginTestServer(port=port).start()
        srv.state.answer = dict(ANSWER)
        back = []
        for _ in range(40):
            back += h.poll(1)
            if answered(back[-1]):
                break
            time.sleep(0.02)
        assert answered(back[-1]), h.log()
        assert h.wait_log("answering again"), h.log()
        assert len(srv.requests()) >= 1
    finally:
        srv.stop()


def test_nothing_listening_is_neutral_and_backs_off(harness_factory):
    with PluginTestServer() as srv:
        port = srv.port  # a port that was free a moment ago; nothing listens now
    h = harness_factory(port, reconnect_ms=1000, reconnect_max_ms=1000)
    polls = h.poll(20)
    assert all(neutral(p) for p in polls)
    assert h.wait_log("connection failed"), h.log()
    assert sum("connection failed" in line for line in h.stderr) == 1
