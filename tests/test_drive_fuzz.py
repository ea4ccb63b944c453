"""Bad requests get a 4xx with a message, and the server keeps serving."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import action as act
from common.protocol import MAX_FRAME_BYTES
from drive.client import DriveClient
from drive.pilot import Pilot
from testing.drive import serving
from testing.models import constant_pilotnet


@pytest.fixture(scope="module")
def server():
    import tempfile

    from train.policy import Policy

    with tempfile.TemporaryDirectory() as tmp:
        pilot = Pilot(Policy(constant_pilotnet([0.5, 0, 1, 0, 0])), sessions_dir=tmp)
        with serving(pilot) as srv:
            yield srv, pilot
        pilot.close()


def still_serving(srv) -> None:
    with DriveClient(srv.host, srv.port) as cli:
        status, body = cli.post(0, np.zeros((48, 64, 3), np.uint8))
        assert status == 200
        assert set(json.loads(body)) == set(act.N64_KEYS)


def raw_exchange(srv, data: bytes, *, close_after_send: bool = False) -> bytes:
    """Send raw bytes on a fresh socket; the server's reply (b'' if it sent none)."""
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(data)
        if close_after_send:
            return b""
        s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


FRAME = bytes(64 * 48 * 3)
CASES = [
    # (method, path, headers, body, expected status, text the message must contain)
    ("POST", "/4", {"X-Frame": "64x48x3"}, FRAME, 404, b"controller 4 out of range"),
    ("POST", "/-1", {"X-Frame": "64x48x3"}, FRAME, 404, b"out of range"),
    ("GET", "/99999999999999999999", {}, b"", 404, b"out of range"),
    ("POST", "/0", {}, FRAME, 400, b"X-Frame"),
    ("POST", "/0", {"X-Frame": "64x48"}, FRAME, 400, b"not <width>x<height>x3"),
    ("POST", "/0", {"X-Frame": "64x48x4"}, bytes(64 * 48 * 4), 400, b"3 channels"),
    ("POST", "/0", {"X-Frame": "0x0x3"}, b"", 400, b"width and height"),
    ("POST", "/0", {"X-Frame": "4097x4096x3"}, b"x", 413, b"width and height"),
    ("POST", "/0", {"X-Frame": "64x48x3"}, FRAME[:-1], 400, b"needs 9216"),
    ("POST", "/0", {"X-Frame": "64x48x3"}, FRAME + b"\0", 400, b"needs 9216"),
    ("POST", "/0", {"X-Frame": "64x48x3"}, b"", 400, b"needs 9216"),
    ("POST", "/0", {"X-Frame": "64x48x3", "X-Frame-Index": "-3"}, FRAME, 400, b"X-Frame-Index"),
    ("POST", "/0", {"X-Frame": "64x48x3", "X-Frame-Index": "12a"}, FRAME, 400, b"X-Frame-Index"),
    ("POST", "/0", {"X-Frame": "64x48x3", "X-Telemetry": "lap=1;garbage"}, FRAME, 400, b"X-Telemetry"),
    ("POST", "/0", {"X-Frame": "64x48x3", "X-Telemetry": "a=1;" * 2000}, FRAME, 431, b"X-Telemetry"),
    ("PUT", "/0", {"X-Frame": "64x48x3"}, FRAME, 405, b"Method Not Allowed"),
    ("POST", "/api/mode", {"Content-Type": "application/json"}, b"{", 400, b"JSON"),
    ("GET", "/nothing-here", {}, b"", 404, b"Not Found"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {c[4]} {c[5].decode()[:20]}" for c in CASES])
def test_bad_request_gets_4xx_with_message(server, case):
    srv, pilot = server
    method, path, headers, body, status, text = case
    with DriveClient(srv.host, srv.port) as cli:
        got, msg = cli.request(method, path, body, headers)
        assert got == status, msg
        assert text in msg
        # the same keep-alive connection still answers a good poll
        assert cli.post(1, np.zeros((48, 64, 3), np.uint8))[0] == 200


def test_oversized_body_is_refused_before_it_is_read(server):
    srv, _ = server
    head = (f"POST /0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Frame: 2048x2048x3\r\n"
            f"Content-Length: {MAX_FRAME_BYTES + 1}\r\n\r\n").encode()
    reply = raw_exchange(srv, head + b"\0" * 1000)
    assert reply.startswith(b"HTTP/1.1 413")
    still_serving(srv)


def test_oversized_chunked_body_is_refused(server):
    srv, _ = server
    chunk = b"\0" * (1 << 20)

    def body():
        for _ in range(MAX_FRAME_BYTES // len(chunk) + 2):
            yield chunk

    with DriveClient(srv.host, srv.port) as cli:
        try:
            cli.conn.request("POST", "/0", body=body(), headers={"X-Frame": "2048x2048x3"}, encode_chunked=True)
            resp = cli.conn.getresponse()
            assert resp.status == 413
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close on us mid-body: also a refusal
    still_serving(srv)


def test_valid_chunked_body_is_accepted(server):
    srv, _ = server
    frame = bytes(range(256)) * (64 * 48 * 3 // 256)
    with DriveClient(srv.host, srv.port) as cli:
        cli.conn.request("POST", "/2", body=iter([frame[:5000], frame[5000:]]), headers={"X-Frame": "64x48x3"},
                         encode_chunked=True)
        resp = cli.conn.getresponse()
        assert resp.status == 200, resp.read()


@pytest.mark.parametrize("data", [
    b"\x00\xff\x13garbage\r\n\r\n",
    b"POST /0 HTTP/1.1\r\nContent-Length: banana\r\n\r\n",
    b"POST /0 HTTP/9.9\r\n\r\n",
    b"POST /0 HTTP/1.1\r\nX-Frame: 64x48x3\r\nContent-Length: 9216\r\nContent-Length: 12\r\n\r\n",
    b"POST /0 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Frame: 64x48x3\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
])
def test_garbage_on_the_socket(server, data):
    srv, _ = server
    reply = raw_exchange(srv, data)
    assert reply == b"" or reply.split(b" ", 2)[1].startswith(b"4"), reply[:200]
    still_serving(srv)


def test_truncated_body_then_hang_up(server):
    srv, _ = server
    head = b"POST /0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Frame: 640x480x3\r\nContent-Length: 921600\r\n\r\n"
    for _ in range(20):
        raw_exchange(srv, head + b"\1" * 5000, close_after_send=True)
    still_serving(srv)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    xframe=st.one_of(st.none(), st.text(alphabet="0123456789x -+.", max_size=14),
                     st.builds(lambda w, h, c: f"{w}x{h}x{c}", st.integers(-2, 70), st.integers(-2, 70),
                               st.integers(0, 4))),
    extra=st.integers(-3, 3),
    index=st.one_of(st.none(), st.text(alphabet="0123456789-ab ", max_size=8)),
    telemetry=st.one_of(st.none(), st.text(alphabet="ab=;.0123 ", max_size=20)),
    port=st.integers(-1, 5),
)
def test_fuzzed_polls_never_break_the_server(server, xframe, extra, index, telemetry, port):
    srv, pilot = server
    size = 0
    if xframe:
        parts = xframe.split("x")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            size = int(parts[0]) * int(parts[1]) * int(parts[2])
    body = bytes(max(0, size + extra))
    headers = {k: v for k, v in (("X-Frame", xframe), ("X-Frame-Index", index), ("X-Telemetry", telemetry))
               if v is not None}
    with DriveClient(srv.host, srv.port) as cli:
        status, msg = cli.request("POST", f"/{port}", body, headers)
        assert status == 200 or 400 <= status < 500, (status, msg)
        if status == 200:
            assert set(json.loads(msg)) == set(act.N64_KEYS)
        else:
            assert msg.strip(), "a 4xx must say why"
    still_serving(srv)
