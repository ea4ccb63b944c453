"""The env's side of the drive protocol: a small in-process HTTP endpoint.

The plugin polls ``POST /<controller>`` (frame + telemetry) and waits for the
answer; the emulator does not advance until it gets one. That wait is the
lockstep: each poll becomes a :class:`Poll` the env takes with
:meth:`Bridge.next_poll` and answers (input-bot keys) with :meth:`Poll.answer`.
A poll nobody answers within ``hold_s`` (kept below the plugin's
``timeout_ms``) is answered with neutral input by the server itself, so an
idle learner costs one neutral frame per hold instead of a dropped connection.

Requests are parsed and answers encoded by common.protocol (the one home of
the wire format). Commands (``reset``, ``save``) are confirmed ones
(``Bridge.commands``): every answer to the controller carries ``"CMD"`` and
``"CMD_ID"`` until the plugin's ``X-KartPilot-Done`` confirms it.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from common import protocol
from common.protocol import Commands, ProtocolError


class BridgeError(RuntimeError):
    """The plugin sent a request the env cannot use (says which header)."""


@dataclass
class Poll:
    """One controller poll held open until answered."""

    controller: int
    index: int  # X-Frame-Index (-1 when absent)
    frame: np.ndarray | None  # (H, W, 3) uint8, top row first
    telemetry: dict[str, float]
    done: int | None = None  # X-KartPilot-Done: the last command id the plugin carried out
    received: float = field(default_factory=time.monotonic)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _keys: dict = field(default_factory=dict, repr=False)  # input-bot keys (missing ones: 0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _commands: Commands | None = field(default=None, repr=False)
    _bridge: Bridge | None = field(default=None, repr=False)
    expired: bool = False

    def answer(self, keys: dict | None = None, cmd: str | None = None, *, then: int = 0) -> bool:
        """Answer with input-bot keys. ``cmd`` (``"reset"``/``"save"``) makes that command
        pending for this controller (``Bridge.commands``; the one already pending keeps its id):
        this and every later answer carry it until the plugin confirms it. ``then``: the bridge
        answers the next ``then`` polls with the same keys itself, as they arrive (action repeat
        without a round trip through the env; they are still queued, answered, for their
        telemetry). False if the server already answered this poll (held past ``hold_s``)."""
        keys = protocol.answer_keys(keys or {})
        if cmd:
            if self._commands is None:
                raise RuntimeError("this poll has no bridge to send commands through")
            self._commands.request(self.controller, cmd)
        with self._lock:
            if self.expired or self._done.is_set():
                return False
            if then:
                if self._bridge is None:
                    raise RuntimeError("this poll has no bridge to repeat answers through")
                self._bridge._repeat(keys, then)  # armed before the emulator can send the next poll
            self._keys = keys
            self._done.set()
        return True

    def _wait(self, hold_s: float) -> dict:
        if not self._done.wait(hold_s):
            with self._lock:
                if not self._done.is_set():
                    self.expired = True
                    self._done.set()
        return self._keys


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    bridge: Bridge


class _Headers(dict):
    """Request headers by lower-case name (``get`` is case-insensitive; a repeated header keeps its last value)."""

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)


MAX_HEADER_LINE = 8192
MAX_HEADERS = 64


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per controller
    server: _Server

    def parse_request(self) -> bool:
        """The request line and headers, without the email parser http.server uses (that was
        0.1 ms of the env's CPU per frame, more than the rest of the poll's parsing together).
        Replies 400/431/505 itself and returns False for a request it cannot read."""
        self.command = None
        self.request_version = "HTTP/1.1"  # error replies carry a status line (never HTTP/0.9's bare body)
        self.close_connection = True
        self.requestline = line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) != 3:
            self.send_error(400, f"Bad request line {line[:60]!r}")
            return False
        self.command, self.path, version = words
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(505, f"HTTP version {version[:20]!r} not supported")
            return False
        headers = _Headers()
        while True:
            raw = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(raw) > MAX_HEADER_LINE:
                self.send_error(431, "Header line too long")
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(headers) >= MAX_HEADERS:
                self.send_error(431, "Too many headers")
                return False
            name, sep, value = raw.decode("iso-8859-1").partition(":")
            if not sep or not name.strip():
                self.send_error(400, f"Bad header line {raw[:60]!r}")
                return False
            headers[name.strip().lower()] = value.strip()
        self.headers = headers
        self.request_version = version
        conn = headers.get("connection", "").lower()
        self.close_connection = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        return True

    def log_message(self, fmt, *args):  # the env reports problems itself
        pass

    def setup(self):
        super().setup()
        # One small answer per frame: never let Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, body: bytes, content_type: str = protocol.JSON_TYPE) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Content Too Large",
                  431: "Request Header Fields Too Large"}.get(status, "Error")
        close = "Connection: close\r\n" if self.close_connection else ""
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{close}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.wfile.write(head + body)  # one write, one segment

    def _handle(self) -> None:
        bridge = self.server.bridge
        try:
            poll = self._parse()
        except ProtocolError as exc:
            msg = f"{self.command} {self.path[:40]}: {exc.message}"
            bridge._error(msg)
            self.close_connection = True  # an unread body may follow: never parse it as a request
            self._reply(exc.status, (msg + "\n").encode(), "text/plain")
            return
        bridge.commands.seen(poll.controller, poll.done)
        repeat = bridge._take_repeat()
        if repeat is not None:
            poll.answer(repeat)
        bridge._queue.put(poll)
        keys = poll._wait(bridge.hold_s)
        if poll.expired:
            bridge.idle_polls += 1
        body = protocol.encode_answer(keys, *bridge.commands.pending(poll.controller))
        with contextlib.suppress(OSError):  # the plugin gave up on this poll; it reconnects itself
            self._reply(200, body)

    def _parse(self) -> Poll:
        controller = protocol.parse_controller(self.path)
        head = protocol.parse_poll(self.command, self.headers.get)
        length = self.headers.get("Content-Length")
        if length is not None and not length.strip().isdigit():
            raise ProtocolError(f"Content-Length {length[:40]!r} is not a number")
        protocol.check_length(None if length is None else int(length), head)
        frame = None
        if head.size is not None:
            raw = self.rfile.read(head.body_bytes)
            frame = protocol.frame_from_body(raw, *head.size)
        return Poll(controller, -1 if head.index is None else head.index, frame, head.telemetry, head.done,
                    _commands=self.server.bridge.commands, _bridge=self.server.bridge)

    def do_POST(self):  # noqa: N802 (http.server naming)
        self._handle()

    def do_GET(self):  # noqa: N802
        self._handle()


class Bridge:
    """HTTP endpoint on 127.0.0.1 (an ephemeral port unless given)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hold_s: float = 9.0):
        self.hold_s = hold_s
        self.idle_polls = 0
        self.commands = Commands()
        self._queue: queue.Queue[Poll] = queue.Queue()
        self._errors: list[str] = []
        self._repeat_lock = threading.Lock()
        self._repeat_keys: dict | None = None
        self._repeat_left = 0
        self._server = _Server((host, port), _Handler)
        self._server.bridge = self
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"bridge:{self.port}",
                                        daemon=True)
        self._thread.start()

    def _error(self, msg: str) -> None:
        self._errors.append(msg)

    def _repeat(self, keys: dict, n: int) -> None:
        with self._repeat_lock:
            self._repeat_keys, self._repeat_left = keys, n

    def _take_repeat(self) -> dict | None:
        """The keys for an arriving poll the bridge answers itself (``Poll.answer(then=)``), else None."""
        with self._repeat_lock:
            if self._repeat_left <= 0:
                return None
            self._repeat_left -= 1
            return self._repeat_keys

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
        """Answer every queued poll with neutral input (used before a restart); no repeats left."""
        self._repeat({}, 0)
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
