"""The env's HTTP endpoint, over real HTTP/1.1 keep-alive (as the plugin talks to it)."""

from __future__ import annotations

import http.client
import json
import threading

import numpy as np
import pytest

from common import protocol
from envs.mupen.bridge import Bridge, BridgeError


def keys(**pressed) -> dict:
    """The full input-bot answer (all 16 keys) with ``pressed`` set."""
    return {**json.loads(protocol.NEUTRAL_ANSWER), **pressed}


@pytest.fixture
def bridge():
    b = Bridge(hold_s=2.0)
    yield b
    b.close()


def _post(conn, frame: np.ndarray | None, telemetry: str = "", index: int = 0, spec: str | None = None):
    headers = {"X-Frame-Index": str(index)}
    body = b""
    if frame is not None:
        h, w, _ = frame.shape
        headers["X-Frame"] = spec or f"{w}x{h}x3"
        body = frame.tobytes()
    if telemetry:
        headers["X-Telemetry"] = telemetry
    conn.request("POST", "/0", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, (json.loads(data) if resp.status == 200 else data.decode())


def test_lockstep_polls_over_one_connection(bridge):
    conn = http.client.HTTPConnection(bridge.host, bridge.port, timeout=10)
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    answers = []

    def plugin():
        for i, f in enumerate(frames):
            answers.append(_post(conn, f, f"lap={i};speed={i * 1.5}", index=i))

    t = threading.Thread(target=plugin)
    t.start()
    for i in range(3):
        poll = bridge.next_poll(5)
        assert poll is not None and poll.index == i and poll.frame.shape == (4, 6, 3)
        assert (poll.frame == i).all() and poll.telemetry == {"lap": i, "speed": i * 1.5}
        assert poll.answer({"X_AXIS": 40 + i, "A_BUTTON": 1}, cmd="reset" if i == 2 else None)
        assert not poll.answer({"X_AXIS": 0})  # answered once only
    t.join(10)
    assert answers[0] == (200, keys(X_AXIS=40, A_BUTTON=1))
    cmd_id = bridge.commands.state()["0"]["id"]
    assert answers[2] == (200, keys(X_AXIS=42, A_BUTTON=1, CMD="reset", CMD_ID=cmd_id))
    conn.close()


def test_unanswered_poll_gets_neutral_after_hold(bridge):
    bridge.hold_s = 0.2
    conn = http.client.HTTPConnection(bridge.host, bridge.port, timeout=10)
    status, body = _post(conn, np.zeros((2, 2, 3), np.uint8))
    assert status == 200 and body == keys()  # the neutral answer: all 16 keys, as the drive server's
    poll = bridge.next_poll(1)
    assert poll.expired and not poll.answer({"A_BUTTON": 1})
    assert bridge.idle_polls == 1
    conn.close()


def test_bad_frame_header_is_refused_and_reported(bridge):
    conn = http.client.HTTPConnection(bridge.host, bridge.port, timeout=10)
    status, body = _post(conn, np.zeros((2, 2, 3), np.uint8), spec="3x2x3")
    assert status == 400 and "X-Frame 3x2x3 needs 18 bytes" in body
    with pytest.raises(BridgeError, match="X-Frame 3x2x3"):
        bridge.next_poll(1)
    status, body = _post(conn, np.zeros((2, 2, 3), np.uint8), telemetry="lap=oops")
    assert status == 400 and "not a number" in body
    with pytest.raises(BridgeError, match="'lap'"):
        bridge.next_poll(1)
    conn.close()


def test_get_poll_without_frame(bridge):
    conn = http.client.HTTPConnection(bridge.host, bridge.port, timeout=10)
    result = {}

    def plugin():
        conn.request("GET", "/0")
        resp = conn.getresponse()
        result["body"] = json.loads(resp.read())

    t = threading.Thread(target=plugin)
    t.start()
    poll = bridge.next_poll(5)
    assert poll.frame is None and poll.index == -1 and poll.telemetry == {}
    poll.answer({"B_BUTTON": 1})
    t.join(10)
    assert result["body"] == keys(B_BUTTON=1)
    assert bridge.next_poll(0.05) is None
    conn.close()


def test_answer_then_repeats_the_keys_for_exactly_that_many_polls(bridge):
    """Action repeat: answer(then=2) has the bridge answer the next 2 polls itself (still queued, in
    order, with their telemetry, already answered); the poll after them waits for the env again."""
    conn = http.client.HTTPConnection(bridge.host, bridge.port, timeout=10)
    answers = []

    def plugin():
        for i in range(5):
            answers.append(_post(conn, np.full((2, 3, 3), i, np.uint8), f"lap={i}", index=i))

    t = threading.Thread(target=plugin)
    t.start()
    first = bridge.next_poll(5)
    assert first.answer({"X_AXIS": 50}, then=2)
    repeated = [bridge.next_poll(5), bridge.next_poll(5)]
    assert [p.index for p in repeated] == [1, 2] and [p.telemetry["lap"] for p in repeated] == [1, 2]
    assert not any(p.answer({"X_AXIS": -9}) for p in repeated)  # the bridge answered them already
    held = bridge.next_poll(5)
    assert held.index == 3
    assert bridge.next_poll(0.3) is None  # poll 4 cannot exist yet: poll 3 is held, unanswered
    assert held.answer({"X_AXIS": -20})
    last = bridge.next_poll(5)
    assert last.index == 4 and last.answer({"X_AXIS": 0})
    t.join(10)
    assert [a[1]["X_AXIS"] for a in answers] == [50, 50, 50, -20, 0]


def _raw(bridge, data: bytes) -> bytes:
    import socket

    with socket.create_connection((bridge.host, bridge.port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /0 HTTP/1.1\r\nX-Frame 2x2x3\r\n\r\n", b"400"),  # a header line without a colon
    (b"POST /0 HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
    (b"POST /0 HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(70)) + b"\r\n", b"431"),
    (b"POST /0 HTTP/2.0\r\n\r\n", b"505"),
    (b"POST /0\r\n\r\n", b"400"),
])
def test_unreadable_requests_get_an_error_status_and_never_a_poll(bridge, request_bytes, status):
    reply = _raw(bridge, request_bytes)
    assert reply.startswith(b"HTTP/1.") and reply.split(b" ", 2)[1] == status, reply[:120]
    assert bridge.next_poll(0.05) is None


def test_header_names_are_case_insensitive_and_http10_closes(bridge):
    result = {}

    def plugin():  # lower-case names, HTTP/1.0 without keep-alive: answered, then closed
        result["reply"] = _raw(bridge, b"POST /0 HTTP/1.0\r\nx-frame: 2x1x3\r\ncontent-length: 6\r\n"
                                       b"x-telemetry: lap=2\r\n\r\n" + bytes(range(6)))

    t = threading.Thread(target=plugin)
    t.start()
    poll = bridge.next_poll(5)
    assert poll.frame.shape == (1, 2, 3) and poll.frame.tobytes() == bytes(range(6))
    assert poll.telemetry == {"lap": 2.0}
    poll.answer({"A_BUTTON": 1})
    t.join(10)
    head, body = result["reply"].split(b"\r\n\r\n", 1)  # the server closed: _raw read to the end
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == keys(A_BUTTON=1)
