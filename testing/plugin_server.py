"""Test servers for the C input plugin (plugin_c/): real HTTP over real sockets.

``PluginTestServer`` speaks the drive protocol (DESIGN.md) on a threaded
``http.server`` with HTTP/1.1 keep-alive and can misbehave on purpose (stall,
garbage, truncated, chunked, oversized, close) so tests can check the plugin
always falls back to neutral input. It records every request: connection
count, method, frame headers, telemetry and the last posted frames.

``FastAnswerServer`` is the "trivial server" of the benchmark: a raw socket
loop that answers every request with one fixed JSON body, so server cost
does not hide the plugin's own overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "stall", "garbage_http", "garbage_json", "truncated", "chunked", "oversized", "close",
         "http10", "status500")


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    connection: int
    frame: str | None
    frame_index: int | None
    telemetry: dict[str, str]
    body_len: int
    time: float


@dataclass
class ServerState:
    mode: str = "ok"
    answer: dict = field(default_factory=lambda: {"A_BUTTON": 1, "X_AXIS": 40, "Y_AXIS": -20})
    stall_s: float = 1.0
    commands: list = field(default_factory=list)   # CMDs to send, one per answer
    keep_frames: int = 8
    requests: list = field(default_factory=list)
    frames: list = field(default_factory=list)     # (index, width, height, bytes)
    connections: int = 0
    sockets: list = field(default_factory=list)    # open client connections
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_telemetry(value: str | None) -> dict[str, str]:
    """'a=1;b=2' -> {'a': '1', 'b': '2'}."""
    out: dict[str, str] = {}
    for part in (value or "").split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1
            self.conn_no = self.server.state.connections
            self.server.state.sockets.append(self.connection)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        frame = self.headers.get("X-Frame")
        idx = self.headers.get("X-Frame-Index")
        st = self.server.state
        with st.lock:
            st.requests.append(Request(self.command, self.path, self.conn_no, frame,
                                       int(idx) if idx is not None else None,
                                       parse_telemetry(self.headers.get("X-Telemetry")), len(body),
                                       time.monotonic()))
            if frame and body:
                w, h, _c = (int(v) for v in frame.split("x"))
                st.frames.append((int(idx or -1), w, h, body))
                del st.frames[:-st.keep_frames]
        return body

    def _raw(self, data: bytes, close: bool = True) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        if close:
            self.close_connection = True

    def _answer(self) -> None:
        self._record()
        st = self.server.state
        with st.lock:
            mode, answer = st.mode, dict(st.answer)
            if st.commands:
                answer["CMD"] = st.commands.pop(0)
        body = json.dumps(answer).encode()
        if mode == "stall":
            time.sleep(st.stall_s)
        elif mode == "garbage_http":
            return self._raw(b"\x00\xffNOT HTTP AT ALL\r\n\r\n{\"A_BUTTON\": 1}")
        elif mode == "garbage_json":
            body = b"{\"A_BUTTON\": 1, \"X_AXIS\": [oops"
        elif mode == "truncated":
            return self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                             + body[:5])
        elif mode == "chunked":
            hexlen = f"{len(body):x}".encode()
            return self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
                             b"\r\n\r\n" + hexlen + b"\r\n" + body + b"\r\n0\r\n\r\n")
        elif mode == "oversized":
            pad = b" " * 100000
            return self._raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body) + len(pad)).encode() + b"\r\n\r\n" + body + pad)
        elif mode == "close":
            self.close_connection = True
            return None
        elif mode == "http10":
            return self._raw(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
        elif mode == "status500":
            body = b"{\"error\": \"boom\"}"
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None

    do_GET = _answer
    do_POST = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: ServerState

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (the plugin timed out) is expected here


class PluginTestServer:
    """Threaded HTTP/1.1 drive-protocol server for tests; port 0 picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, mode: str = "ok"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self._httpd = _Server((host, port), _Handler)
        self._httpd.state = ServerState(mode=mode)
        self.state = self._httpd.state
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> PluginTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed server: the listener and every open connection go away."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.state.lock:
            socks, self.state.sockets = self.state.sockets, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self.state.lock:
            self.state.mode = mode

    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def frames(self) -> list:
        with self.state.lock:
            return list(self.state.frames)

    def wait_requests(self, n: int, timeout: float) -> list[Request]:
        """Wait until at least n requests arrived (or timeout); returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reqs = self.requests()
            if len(reqs) >= n:
                return reqs
            time.sleep(0.02)
        return self.requests()

    def __enter__(self) -> PluginTestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FastAnswerServer:
    """Minimal keep-alive server: one thread per connection, fixed JSON answer."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, answer: dict | None = None):
        body = json.dumps(answer or {"A_BUTTON": 1}).encode()
        self._reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                       + str(len(body)).encode() + b"\r\n\r\n" + body)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(8)
        self.host, self.port = self._sock.getsockname()[:2]
        self.requests = 0
        self.frame_bytes = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> FastAnswerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        body = bytearray()
        with conn:
            while not self._stop:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                length = 0
                for line in buf[:end].decode("latin-1").lower().split("\r\n"):
                    if line.startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                have = buf[end + 4:end + 4 + length]
                buf = buf[end + 4 + len(have):]
                if len(body) < length:
                    body = bytearray(length)
                view = memoryview(body)
                view[:len(have)] = have
                got = len(have)
                while got < length:  # frames: read straight into one buffer, no re-copying
                    n = conn.recv_into(view[got:length])
                    if not n:
                        return
                    got += n
                self.requests += 1
                self.frame_bytes += length
                conn.sendall(self._reply)


def main(argv=None) -> None:
    from common.defaults import DRIVE_PORT

    ap = argparse.ArgumentParser(prog="python -m testing.plugin_server",
                                 description="Drive-protocol test server for the KartPilot C plugin "
                                 "(answers GET/POST /<controller> with fixed JSON).")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=DRIVE_PORT, help="TCP port (default %(default)s)")
    ap.add_argument("--mode", default="ok", choices=MODES, help="how to answer (default ok)")
    ap.add_argument("--stall", type=float, default=1.0, help="seconds to stall in --mode stall")
    args = ap.parse_args(argv)
    srv = PluginTestServer(args.host, args.port, args.mode)
    srv.state.stall_s = args.stall
    print(f"serving {args.mode} on http://{srv.host}:{srv.port}/", flush=True)
    srv.start()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
