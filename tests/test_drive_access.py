"""A locked-down drive server: foreign Hosts, cross-origin changes, tokens, idle sockets.

Real HTTP to a real waitress server on 127.0.0.1 (the DNS-rebinding attack is a
request whose Host names the attacker's domain).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drive.client import DriveClient
from drive.guard import Guard, Refused, host_name
from drive.pilot import Pilot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    from drive.app import create_app
    from drive.server import Server

    # human mode without a gamepad answers neutral input: no model needed for access checks
    pilot = Pilot(None, mode="human", sessions_dir=tmp_path / "sessions")
    srv = Server(create_app(pilot), "127.0.0.1", 0, 4).start()
    try:
        yield srv, pilot
    finally:
        srv.close()
        pilot.close()


def raw(srv, data: bytes) -> bytes:
    """One request on a fresh connection, read to close."""
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_foreign_host_is_refused(server):
    srv, pilot = server
    frame = np.zeros((48, 64, 3), np.uint8)
    with DriveClient(srv.host, srv.port) as cli:
        evil = {"Host": f"evil.example:{srv.port}", "Content-Type": "application/json"}
        for method, path, body in (("POST", "/api/mode", b'{"mode": "shadow"}'),
                                   ("POST", "/api/record", b'{"on": true}'),
                                   ("POST", "/api/reset", b"{}"),
                                   ("GET", "/api/state", None), ("GET", "/api/frame.jpg", None), ("GET", "/", None)):
            status, msg = cli.request(method, path, body, evil)
            assert status == 403 and b"evil.example" in msg, (method, path, status, msg)
        status, msg = cli.post(0, frame, headers={"Host": "evil.example"})
        assert status == 403
        assert pilot.mode == "human" and not pilot.recording.on and pilot.commands.state() == {}
        # the names the server does answer to, any port
        for host in ("127.0.0.1", f"127.0.0.1:{srv.port}", "localhost:9", "LOCALHOST", f"[::1]:{srv.port}"):
            status, msg = cli.request("GET", "/api/state", None, {"Host": host})
            assert status == 200, (host, msg)
        for host in ("127.0.0.1.evil.example", "localhost.", "[::1", "127.0.0.1:x", "user@127.0.0.1"):
            assert cli.request("GET", "/api/state", None, {"Host": host})[0] == 403, host
    # no Host at all (HTTP/1.0, as input-bot sends): served
    assert raw(srv, b"GET /api/state HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    assert raw(srv, b"GET /api/state HTTP/1.1\r\nHost: evil.example\r\n\r\n").startswith(b"HTTP/1.1 403")


def test_cross_origin_state_change_is_refused(server):
    srv, pilot = server
    with DriveClient(srv.host, srv.port) as cli:
        js = {"Content-Type": "application/json"}
        for origin in ("http://evil.example", f"http://evil.example:{srv.port}", "null", "file://"):
            status, msg = cli.request("POST", "/api/mode", b'{"mode": "ai"}', {**js, "Origin": origin})
            assert status == 403 and b"cross-origin" in msg, (origin, msg)
            status, _ = cli.request("POST", "/api/record", b'{"on": true}', {**js, "Origin": origin})
            assert status == 403
        status, _ = cli.request("POST", "/api/mode", b'{"mode": "ai"}', {**js, "Sec-Fetch-Site": "cross-site"})
        assert status == 403
        assert pilot.mode == "human" and not pilot.recording.on
        # a cross-origin read is not a state change (the browser's same-origin policy guards it)
        assert cli.request("GET", "/api/state", None, {"Origin": "http://evil.example"})[0] == 200
        # the dashboard's own origin, and tools that send no Origin, may change state
        own = {**js, "Origin": f"http://127.0.0.1:{srv.port}", "Sec-Fetch-Site": "same-origin"}
        assert cli.request("POST", "/api/mode", b'{"mode": "shadow"}', own)[0] == 200
        assert pilot.mode == "shadow"
        assert cli.request("POST", "/api/mode", b'{"mode": "ai"}', {**js, "Origin": "http://localhost:1"})[0] == 200
        assert cli.api("POST", "/api/mode", {"mode": "human"})[0] == 200
        assert pilot.mode == "human"


def test_guard_rules():
    assert host_name("Example.COM:8082") == "example.com" and host_name("[::1]:80") == "[::1]"
    assert host_name("a:b") is None and host_name("[::1") is None
    with pytest.raises(ValueError, match="needs a token"):
        Guard("0.0.0.0")
    with pytest.raises(ValueError, match="KARTPILOT_DRIVE_TOKEN"):
        Guard("192.168.1.5", token="")
    Guard("::1")  # loopback: no token needed
    g = Guard("192.168.1.5", token="s3cret", allow_hosts=["kart.lan"])
    home = {"Host": "192.168.1.5:8082"}
    g.check("GET", home, {}, "127.0.0.1")  # this machine: Host and Origin decide
    g.check("GET", {"Host": "kart.lan"}, {}, "127.0.0.1")
    with pytest.raises(Refused) as err:
        g.check("GET", home, {}, "192.168.1.9")  # another machine without the token
    assert err.value.status == 401 and "token" in err.value.message
    for headers, cookies in (({"Authorization": "Bearer s3cret"}, {}), ({"X-KartPilot-Token": "s3cret"}, {}),
                             ({}, {"kartpilot_token": "s3cret"})):
        g.check("POST", {**home, **headers}, cookies, "192.168.1.9")
    g.check("GET", {"Host": "192.168.1.5"}, {}, "192.168.1.9", query_token="s3cret")
    with pytest.raises(Refused):
        g.check("GET", {**home, "Authorization": "Bearer wrong"}, {}, "192.168.1.9")
    with pytest.raises(Refused):
        g.check("GET", {"Host": "evil.example"}, {}, "127.0.0.1")
    with pytest.raises(Refused):
        g.check("POST", {**home, "Origin": "http://evil.example"}, {}, "127.0.0.1")
    g.check("POST", {**home, "Origin": "http://192.168.1.5:8082"}, {}, "127.0.0.1")


def test_cli_refuses_a_public_bind_without_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KARTPILOT_DRIVE_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "drive", "--host", "0.0.0.0", "--model", str(tmp_path / "m.keras")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m drive: error: binding 0.0.0.0 (not loopback) needs a token"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_plugin_is_answered_while_64_idle_sockets_are_held(server):
    srv, _ = server
    held: list[socket.socket] = []
    try:
        for i in range(64):
            try:
                s = socket.create_connection((srv.host, srv.port), timeout=10)
            except OSError:
                break  # the backlog is full: the server refuses more, as it should
            if i % 3 == 0:  # a finished keep-alive request, then silence
                s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                s.recv(65536)
            elif i % 3 == 1:  # half a request header, then silence (slowloris)
                s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(s)  # i % 3 == 2: connected, never a byte
        assert len(held) >= 60
        # the plugin (a new keep-alive connection) still gets its polls answered
        with DriveClient(srv.host, srv.port, timeout=30) as cli:
            for i in range(5):
                status, body = cli.post(0, np.zeros((48, 64, 3), np.uint8), index=i)
                assert status == 200 and "X_AXIS" in json.loads(body)
        assert srv.evicted >= 1  # room was made by closing the longest-idle sockets
    finally:
        for s in held:
            with contextlib.suppress(OSError):
                s.close()
