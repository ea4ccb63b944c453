"""A raw-socket HTTP/1.1 server for the C plugin's protocol tests: it answers
each request with whatever bytes a script says (well-formed, out of turn,
torn, reset), and implements the server side of confirmed commands.

Only tests/test_plugin_harness.py and tests/test_plugin_emulator.py use it.
``PluginTestServer`` (the shared test server) is built on ``http.server``,
which cannot send bytes out of turn or reset a connection; this one can.

Confirmed commands (the contract between the drive server and the plugin):
while a command is pending for a controller, every answer carries
``"CMD"`` and ``"CMD_ID"``; it is done once a request carries
``X-KartPilot-Done`` >= its id.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    """One request as the server parsed it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    connection: int
    time: float


def response(body: dict | bytes, status: str = "200 OK", extra_headers: str = "") -> bytes:
    """A complete HTTP/1.1 answer with Content-Length."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"{extra_headers}\r\n").encode() + data


# What a script returns for one request: a list of steps, each either
# ("send", bytes), ("sleep", seconds), ("call", fn) (fn() runs then),
# ("close",) or ("reset",).
Step = tuple
Script = Callable[["ScriptServer", Request], list[Step]]


@dataclass
class PendingCommand:
    cmd: str
    cmd_id: int
    confirmed: bool = False
    resend_after_done: int = 0  # keep sending it this many more times after it is done
    sent: int = 0


@dataclass
class _State:
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    commands: dict[int, PendingCommand] = field(default_factory=dict)  # controller -> command
    sockets: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ScriptServer:
    """Loopback HTTP/1.1 server; ``script(server, request)`` decides each answer."""

    def __init__(self, script: Script | None = None, answer: dict | None = None, host: str = "127.0.0.1"):
        self.answer = dict(answer or {"A_BUTTON": 1, "X_AXIS": 40, "Y_AXIS": -20})
        self.script = script or ScriptServer.ok
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self.host, self.port = self._sock.getsockname()[:2]
        self.state = _State()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    # -- scripts -------------------------------------------------------------

    def ok(self, req: Request) -> list[Step]:
        """The normal answer (with the pending command, if any)."""
        return [("send", response(self.body_for(req)))]

    def body_for(self, req: Request) -> dict:
        """The answer's JSON: self.answer plus CMD/CMD_ID while one is pending."""
        body = dict(self.answer)
        controller = int(req.path.strip("/") or 0)
        with self.state.lock:
            pending = self.state.commands.get(controller)
            if pending is not None:
                done = req.headers.get("x-kartpilot-done")
                if done is not None and done.isdigit() and int(done) >= pending.cmd_id:
                    pending.confirmed = True
                if not pending.confirmed or pending.resend_after_done > 0:
                    if pending.confirmed:
                        pending.resend_after_done -= 1
                    body["CMD"] = pending.cmd
                    body["CMD_ID"] = pending.cmd_id
                    pending.sent += 1
        return body

    def command(self, controller: int, cmd: str, cmd_id: int, resend_after_done: int = 0) -> None:
        """Make ``cmd`` pending for ``controller`` with ``cmd_id``."""
        with self.state.lock:
            self.state.commands[controller] = PendingCommand(cmd, cmd_id, resend_after_done=resend_after_done)

    def pending(self, controller: int) -> PendingCommand | None:
        with self.state.lock:
            return self.state.commands.get(controller)

    # -- plumbing ------------------------------------------------------------

    def start(self) -> ScriptServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self.state.lock:
            socks, self.state.sockets = self.state.sockets, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(5)

    def __enter__(self) -> ScriptServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def connections(self) -> int:
        with self.state.lock:
            return self.state.connections

    def _accept(self) -> None:
        self._sock.settimeout(0.05)  # wake up to notice stop()
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.state.lock:
                self.state.connections += 1
                number = self.state.connections
                self.state.sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        with conn:
            while not self._stop.is_set():
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                    continue
                lines = buf[:end].decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ") + ["", "", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                while len(buf) < end + 4 + length:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[end + 4 + length:]
                req = Request(method, path, headers, number, time.monotonic())
                with self.state.lock:
                    self.state.requests.append(req)
                for step in self.script(self, req):
                    try:
                        if step[0] == "send":
                            conn.sendall(step[1])
                        elif step[0] == "sleep":
                            time.sleep(step[1])
                        elif step[0] == "call":
                            step[1]()
                        elif step[0] == "close":
                            conn.shutdown(socket.SHUT_RDWR)
                            return
                        elif step[0] == "reset":  # RST instead of FIN
                            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            conn.close()
                            return
                    except OSError:
                        return
