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
from testing.script_server import ScriptServer, response

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


# -- out-of-turn bytes, backoff after unusable answers, confirmed commands --------------------
# (testing/script_server.py can send bytes out of turn and reset connections)

MARKER = {"B_BUTTON": 1, "X_AXIS": -99}  # only ever sent out of turn


def marker(p: dict) -> bool:
    return p["X_AXIS"] == -99


@pytest.fixture
def script_server():
    servers: list[ScriptServer] = []

    def make(script=None, **kw) -> ScriptServer:
        srv = ScriptServer(script, answer=dict(ANSWER), **kw).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def test_bytes_sent_while_idle_never_serve_as_the_next_answer(harness_factory, script_server):
    """The server answers, then sends a complete second answer unasked: the
    plugin finds it before its next request, drops the connection and backs off."""
    extra_sent = threading.Semaphore(0)
    srv = script_server(lambda s, req: [("send", response(ANSWER)), ("sleep", 0.005), ("send", response(MARKER)),
                                        ("call", extra_sent.release)])
    h = harness_factory(srv.port, reconnect_ms=30, reconnect_max_ms=30)
    polls = []
    for _ in range(3):
        polls += h.poll(1)
        assert extra_sent.acquire(timeout=10)
        time.sleep(0.02)  # the unasked answer is now waiting on the idle connection
        polls += h.poll(1)  # finds it: neutral, connection dropped, backoff
        time.sleep(0.06)  # past reconnect_ms
    assert not any(marker(p) for p in polls), polls
    assert [answered(p) for p in polls] == [True, False] * 3, polls
    # each connection carried exactly one request: the one it was opened for
    assert [r.connection for r in srv.requests()] == [1, 2, 3]
    assert h.wait_log("out of turn"), h.log()


def test_bytes_beyond_a_complete_answer_refuse_it_and_back_off(harness_factory, script_server):
    """An answer followed, in the same write, by another: neither is used."""
    srv = script_server(lambda s, req: [("send", response(ANSWER) + response(MARKER))])
    h = harness_factory(srv.port, reconnect_ms=5000, reconnect_max_ms=5000)
    polls = h.poll(20)
    assert all(neutral(p) for p in polls), polls
    assert srv.connections == 1 and len(srv.requests()) == 1  # backing off, not reconnecting per poll
    assert h.wait_log("out of turn"), h.log()


def test_server_speaking_out_of_turn_is_cut_off(harness_factory, script_server):
    """The reported attack: every answer is followed 20 ms later by an unasked
    one. Bytes that arrive after a request was sent are its answer by HTTP's
    rules, so the first unasked answer can be read; the bytes behind it are
    out of turn and end the connection, and the backoff stops the plugin from
    reconnecting on every poll (before: 30 answers for 15 requests, a new
    connection every other poll)."""
    srv = script_server(lambda s, req: [("send", response(ANSWER)), ("sleep", 0.02), ("send", response(MARKER))])
    h = harness_factory(srv.port, reconnect_ms=5000, reconnect_max_ms=5000)
    polls = []
    for _ in range(30):
        polls += h.poll(1)
        time.sleep(0.002)  # a little emulation between polls, as in the emulator
    assert srv.connections == 1, srv.connections
    # cut off early: after the out-of-turn bytes showed, only neutral input
    assert all(neutral(p) for p in polls[-10:]), polls
    assert h.wait_log("out of turn"), h.log()


BODY = json.dumps(ANSWER).encode()
UNUSABLE = {
    "closed_mid_response": [("send", b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + BODY[:5]), ("close",)],
    "reset": [("send", b"HTTP/1.1 200 OK\r\nContent-Len"), ("reset",)],
    "reset_before_answer": [("reset",)],
    "oversized": [("send", b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 20000), ("close",)],
    "malformed": [("send", b"HTTP/1.1 OK 200\r\n\r\n" + BODY), ("close",)],
    "chunked": [("send", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n")],
    "status503_close": [("send", response({"error": "busy"}, "503 Service Unavailable", "Connection: close\r\n")),
                        ("close",)],
    "status503_keepalive": [("send", response({"error": "busy"}, "503 Service Unavailable"))],
    "json_garbage_close": [("send", response(b"{\"A_BUTTON\": [oops", extra_headers="Connection: close\r\n")),
                           ("close",)],
}


@pytest.mark.parametrize("kind", sorted(UNUSABLE))
def test_unusable_answer_backs_off_like_a_refused_connection(harness_factory, script_server, kind):
    """After an unusable answer the plugin waits reconnect_ms before the next
    connection instead of opening one per poll (TIME_WAIT exhaustion)."""
    srv = script_server(lambda s, req: list(UNUSABLE[kind]))
    h = harness_factory(srv.port, reconnect_ms=5000, reconnect_max_ms=5000)
    polls = h.poll(25)
    assert all(neutral(p) for p in polls), polls
    assert srv.connections == 1, f"{kind}: {srv.connections} connections for 25 polls"
    assert len(srv.requests()) == 1
    assert h.wait_log("neutral input"), h.log()


def test_a_usable_answer_resets_the_backoff(harness_factory, script_server):
    """Failures double the wait (see the C unit test); a usable answer starts it again at reconnect_ms."""
    bad = {"on": True}
    srv = script_server(lambda s, req: list(UNUSABLE["malformed"]) if bad["on"] else s.ok(req))
    h = harness_factory(srv.port, reconnect_ms=100, reconnect_max_ms=5000)
    for wait in (0.15, 0.3, 0.5):  # each past the doubled wait: 100, 200, 400 ms
        assert neutral(h.poll(1)[0])
        time.sleep(wait)
    bad["on"] = False
    assert answered(h.poll(1)[0])  # backoff over (800 ms from here if it was not reset)
    bad["on"] = True
    n = len(srv.requests())
    assert neutral(h.poll(1)[0])
    time.sleep(0.25)
    h.poll(1)
    assert len(srv.requests()) == n + 2, "after a usable answer the backoff starts again at reconnect_ms"


def _count(h: Harness, text: str, expect: int, timeout: float = 5.0) -> int:
    """Lines of the plugin's log containing text, once at least expect arrived (or timeout)."""
    deadline = time.monotonic() + timeout
    while sum(text in line for line in h.stderr) < expect and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # anything more would show up now
    return sum(text in line for line in h.stderr)


def test_command_with_id_is_carried_out_once_and_confirmed_refused_is_not(harness_factory, script_server):
    """Confirmed commands: the server repeats CMD + CMD_ID in every answer
    until a request carries X-KartPilot-Done >= the id; the plugin carries
    each id out once and confirms it on every later request."""
    srv = script_server()
    srv.command(0, "reset", 7, resend_after_done=3)  # and a server slow to notice the confirmation
    h = harness_factory(srv.port)
    assert all(answered(p) for p in h.poll(8))
    reqs = srv.requests()
    assert "x-kartpilot-done" not in reqs[0].headers
    assert [r.headers.get("x-kartpilot-done") for r in reqs[1:]] == ["7"] * 7
    assert srv.pending(0).confirmed and srv.pending(0).sent == 4  # the first answer + 3 resent
    assert _count(h, "CMD reset: load state CMD_ID 7", 1) == 1, h.log()
    # The harness runs no game: the core queues a state load but refuses a
    # save. A refused command is not confirmed; it is tried again on every
    # answer that carries it, and the refusal is logged once.
    srv.command(0, "save", 8)
    assert all(answered(p) for p in h.poll(4))
    assert [r.headers.get("x-kartpilot-done") for r in srv.requests()[8:]] == ["7"] * 4
    assert not srv.pending(0).confirmed and srv.pending(0).sent == 4
    assert _count(h, "CMD save: save state CMD_ID 8", 1) == 1, h.log()
    assert "refused by the core" in h.log()


def test_command_whose_answer_is_lost_is_still_carried_out(harness_factory, script_server):
    """The answer carrying a reset times out: nothing is carried out, the
    command stays pending, the next answer carries it again, and only then is
    it carried out and confirmed."""
    stalled = []

    def script(s, req):
        if not stalled:
            stalled.append(req)
            return [("sleep", 0.4), *s.ok(req)]  # past timeout_ms: lost
        return s.ok(req)

    srv = script_server(script)
    srv.command(0, "reset", 3)
    h = harness_factory(srv.port, timeout_ms=100, reconnect_ms=20, reconnect_max_ms=20)
    first = h.poll(1)[0]
    assert neutral(first)
    assert not srv.pending(0).confirmed
    polls = []
    for _ in range(40):
        polls += h.poll(1)
        if srv.pending(0).confirmed:
            break
        time.sleep(0.03)
    assert srv.pending(0).confirmed, h.log()
    assert _count(h, "CMD reset: load state CMD_ID 3", 1) == 1, h.log()
    assert any(answered(p) for p in polls)


def test_cmd_must_match_exactly(harness_factory, script_server):
    """"reset\\u0000x" is not reset: it is an unknown command, ignored."""
    srv = script_server()
    srv.answer = dict(ANSWER, CMD="reset\u0000x")
    h = harness_factory(srv.port)
    assert all(answered(p) for p in h.poll(3))
    assert _count(h, "unknown CMD ignored", 1) == 1, h.log()
    assert "CMD reset" not in h.log()


def test_command_without_id_is_tried_once_per_answer(harness_factory, script_server):
    """An older server (CMD, no CMD_ID): each answer's command is carried out, as before."""
    srv = script_server()
    srv.answer = dict(ANSWER, CMD="save")
    h = harness_factory(srv.port)
    assert all(answered(p) for p in h.poll(3))
    assert h.wait_log("CMD save"), h.log()
    deadline = time.monotonic() + 5
    while sum("CMD save" in line for line in h.stderr) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum("CMD save" in line for line in h.stderr) == 3, h.log()


@pytest.mark.parametrize("bad_id", ["7", 0, -3, 2.5, True, 10**20])
def test_command_with_unusable_id_is_ignored(harness_factory, script_server, bad_id):
    srv = script_server()
    srv.answer = dict(ANSWER, CMD="reset", CMD_ID=bad_id)
    h = harness_factory(srv.port)
    assert all(answered(p) for p in h.poll(4))
    assert h.wait_log("CMD_ID is not a positive integer"), h.log()
    assert "CMD reset" not in h.log()
    assert sum("CMD_ID is not a positive integer" in line for line in h.stderr) == 1
