"""Unmodified mupen64plus-input-bot clients (TensorKart, gym-mupen64plus) read the model's answer.

``input_bot_poll`` does what input-bot's read_controller does per poll: a new
TCP connection, exactly ``GET /<n> HTTP/1.0\\r\\n\\r\\n`` (older single-controller
builds: ``GET / HTTP/1.0``), read until the server closes into a 4 KiB buffer
(4095 bytes at most), then split on ``\\n`` the way strtok does (empty tokens
skipped), skip 5 tokens and parse the 6th as JSON. Newer input-bot builds look
for the body after ``\\r\\n\\r\\n`` instead; both parses must read the answer.
"""

from __future__ import annotations

import json
import socket

import pytest

from common import action as act
from drive.client import DriveClient
from drive.pilot import Pilot
from testing.drive import serving
from testing.models import constant_pilotnet

AI = [0.75, -0.25, 1.0, 0.0, 1.0]  # X_AXIS 60, Y_AXIS -20, A, R
EXPECTED = act.to_n64(AI)


def input_bot_poll(host: str, port: int, request: bytes) -> tuple[dict | None, dict | None, bytes]:
    """(strtok-parsed body, strstr-parsed body, raw reply); None where input-bot would read nothing."""
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(request)
        response = b""
        while len(response) < 4095:
            chunk = s.recv(4095 - len(response))
            if not chunk:
                break
            response += chunk
    tokens = [t for t in response.split(b"\n") if t]  # strtok(response, "\n"): empty tokens skipped
    by_strtok = _json(tokens[5]) if len(tokens) > 5 else None
    head, sep, body = response.partition(b"\r\n\r\n")
    by_strstr = _json(body) if sep else None
    return by_strtok, by_strstr, response


def _json(text: bytes) -> dict | None:
    """json-c's json_tokener_parse: an object, or NULL (all-zero input)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.fixture(scope="module")
def policy():
    from train.policy import Policy

    return Policy(constant_pilotnet(AI))


@pytest.fixture
def capture(xvfb):
    from common.screen import ScreenCapture

    cap = ScreenCapture((0, 0, 640, 480), display=xvfb.name)
    yield cap
    cap.close()


def keys_of(answer: dict) -> dict:
    return {k: answer.get(k, 0) for k in act.N64_KEYS}


def test_input_bot_reads_the_models_answer(policy, capture, tmp_path):
    pilot = Pilot(policy, sessions_dir=tmp_path / "sessions")
    with serving(pilot, capture=capture) as srv:
        for controller in (0, 3):
            by_strtok, by_strstr, reply = input_bot_poll(srv.host, srv.port,
                                                         f"GET /{controller} HTTP/1.0\r\n\r\n".encode())
            assert reply.startswith(b"HTTP/1.0 200"), reply
            assert by_strtok is not None and keys_of(by_strtok) == EXPECTED, reply
            assert keys_of(by_strstr) == EXPECTED
        # the older single-controller build: GET / is a poll of controller 0, not the dashboard
        by_strtok, by_strstr, reply = input_bot_poll(srv.host, srv.port, b"GET / HTTP/1.0\r\n\r\n")
        assert keys_of(by_strtok) == EXPECTED and keys_of(by_strstr) == EXPECTED, reply
        assert pilot.stats.per_controller == [2, 0, 0, 1]
        assert pilot.state()["ports"]["0"]["driver"] == "model"
        # a pending reset rides along; input-bot ignores the extra keys
        pilot.request_reset([0])
        by_strtok, _, reply = input_bot_poll(srv.host, srv.port, b"GET /0 HTTP/1.0\r\n\r\n")
        assert keys_of(by_strtok) == EXPECTED and by_strtok["CMD"] == "reset"
    pilot.close()


def test_keep_alive_clients_and_browsers_are_unchanged(policy, capture, tmp_path):
    pilot = Pilot(policy, sessions_dir=tmp_path / "sessions")
    with serving(pilot, capture=capture) as srv:
        # HTTP/1.1 keep-alive GET polls: Content-Length, one connection for all of them
        with DriveClient(srv.host, srv.port) as cli:
            status, body = cli.get(1)
            sock = cli.conn.sock
            for _ in range(3):
                status, body = cli.get(1)
                assert status == 200 and keys_of(json.loads(body)) == EXPECTED
            assert cli.conn.sock is sock
            # a browser's GET / is the dashboard
            status, page = cli.request("GET", "/", None, {"Accept": "text/html,*/*"})
            assert status == 200 and b"KartPilot drive" in page
        # HTTP/1.0 with keep-alive: a Content-Length answer on a kept connection
        with socket.create_connection((srv.host, srv.port), timeout=30) as s:
            s.sendall(b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += s.recv(4096)
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(body) < length:
                body += s.recv(4096)
            assert keys_of(json.loads(body)) == EXPECTED and b"keep-alive" in head.lower()
        # HTTP/1.0 GET / with an Accept header (curl -0, an old browser): the dashboard
        _, _, reply = input_bot_poll(srv.host, srv.port, b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 200") and b"KartPilot drive" in reply
    pilot.close()


def test_input_bot_without_a_display_is_told_why(policy, tmp_path):
    pilot = Pilot(policy, sessions_dir=tmp_path / "sessions")
    with serving(pilot, capture=None) as srv:
        _, _, reply = input_bot_poll(srv.host, srv.port, b"GET /0 HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.0 503") and b"screen capture" in reply
    pilot.close()
