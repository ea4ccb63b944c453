"""The env's side of the drive protocol: a small in-process HTTP endpoint.

The plugin polls ``POST /<controller>`` (frame + telemetry) and waits for the
answer; the emulator does not advance until it gets one. That wait is the
lockstep: each poll becomes a :class:`Poll` the env takes with
:meth:`Bridge.next_poll` and answers (action JSON, optionally ``"CMD"``)
with :meth:`Poll.answer`. A poll nobody answers within ``hold_s`` (kept below
the plugin's ``timeout_ms``) is answered with neutral input by the server
itself, so an idle learner costs one neutral frame per hold instead of a
dropped connection.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from envs.mupen.profiles import TelemetryError, parse_telemetry

NEUTRAL_BODY = json.dumps({"X_AXIS": 0, "Y_AXIS": 0}).encode()
MAX_FRAME_BYTES = 4096 * 4096 * 3


class BridgeError(RuntimeError):
    """The plugin sent a request the env cannot use (says which header)."""


@dataclass
class Poll:
    """One controller poll held open until answered."""

    controller: int
    index: int  # X-Frame-Index (-1 when absent)
    frame: np.ndarray | None  # (H, W, 3) uint8, top row first
    telemetry: dict[str, float]
    received: float = field(default_factory=time.monotonic)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _body: bytes = field(default=NEUTRAL_BODY, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    expired: bool = False

    def answer(self, keys: dict | None = None, cmd: str | None = None) -> bool:
        """Answer with input-bot keys (+ optional CMD). False if the server
        already answered it (held past ``hold_s``)."""
        body = dict(keys or {})
        if cmd:
            body["CMD"] = cmd
        with self._lock:
            if self.expired or self._done.is_set():
                return False
            self._body = json.dumps(body).encode()
            self._done.set()
        return True

    def _wait(self, hold_s: float) -> bytes:
        if not self._done.wait(hold_s):
            with self._lock:
                if not self._done.is_set():
                    self.expired = True
                    self._done.set()
        return self._body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    bridge: Bridge


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per controller
    server: _Server

    def log_message(self, fmt, *args):  # the env reports problems itself
        pass

    def setup(self):
        super().setup()
        # One small answer per frame: never let Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, body: bytes) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.wfile.write(head + body)  # one write, one segment

    def _handle(self, has_body: bool) -> None:
        bridge = self.server.bridge
        try:
            controller = int(self.path.strip("/") or 0)
        except ValueError:
            self._reply(404, b'{"error": "path must be /<controller>"}')
            return
        try:
            poll = self._parse(controller, has_body)
        except (BridgeError, TelemetryError) as exc:
            bridge._error(str(exc))
            self._reply(400, json.dumps({"error": str(exc)}).encode())
            return
        bridge._queue.put(poll)
        body = poll._wait(bridge.hold_s)
        if poll.expired:
            bridge.idle_polls += 1
        with contextlib.suppress(OSError):  # the plugin gave up on this poll; it reconnects itself
            self._reply(200, body)

    def _parse(self, controller: int, has_body: bool) -> Poll:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_FRAME_BYTES:
            raise BridgeError(f"POST /{controller}: body of {length} bytes is larger than any frame")
        raw = self.rfile.read(length) if (has_body and length) else b""
        frame = None
        spec = self.headers.get("X-Frame")
        if spec:
            try:
                w, h, c = (int(v) for v in spec.lower().split("x"))
            except ValueError:
                raise BridgeError(f"X-Frame {spec!r} is not <width>x<height>x3") from None
            if c != 3 or w <= 0 or h <= 0 or w * h * 3 != len(raw):
                raise BridgeError(f"X-Frame {spec!r} does not match a body of {len(raw)} bytes")
            frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        try:
            index = int(self.headers.get("X-Frame-Index", -1))
        except ValueError:
            raise BridgeError(f"X-Frame-Index {self.headers.get('X-Frame-Index')!r} is not an integer") from None
        return Poll(controller, index, frame, parse_telemetry(self.headers.get("X-Telemetry")))

    def do_POST(self):  # noqa: N802 (http.server naming)
        self._handle(True)

    def do_GET(self):  # noqa: N802
        self._handle(False)


class Bridge:
    """HTTP endpoint on 127.0.0.1 (an ephemeral port unless given)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hold_s: float = 9.0):
        self.hold_s = hold_s
        self.idle_polls = 0
        self._queue: queue.Queue[Poll] = queue.Queue()
        self._errors: list[str] = []
        self._server = _Server((host, port), _Handler)
        self._server.bridge = self
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"bridge:{self.port}",
                                        daemon=True)
        self._thread.start()

    def _error(self, msg: str) -> None:
        self._errors.append(msg)

    def next_poll(self, timeout: float) -> Poll | None:
        """The next poll, or None after ``timeout`` seconds without one.
        Raises BridgeError if the plugin sent a request we cannot use."""
        if self._errors:
            raise BridgeError(self._errors.pop(0))
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._errors:
                raise BridgeError(self._errors.pop(0)) from None
            return None

    def drain(self) -> int:
        """Answer every queued poll with neutral input (used before a restart)."""
        n = 0
        while True:
            try:
                self._queue.get_nowait().answer()
                n += 1
            except queue.Empty:
                return n

    def close(self) -> None:
        self.drain()
        self._server.shutdown()
        self._server.server_close()
