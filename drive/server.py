"""Serving the app with waitress (production WSGI server, HTTP/1.1 keep-alive).

Tuned for polls that carry a whole frame: big socket reads (one recv per
frame instead of ~100 of 8 KiB) and request bodies kept in memory (waitress
spills bodies over 512 KiB to a temp file by default).

Idle keep-alive connections cannot crowd out the plugin: waitress stops
accepting at ``connection_limit`` open connections, so when the server is
that full it closes the connections that have been idle longest (no request
in progress, nothing to send, quiet for ``EVICT_IDLE_S``) to make room. A
client that opens 64 sockets and sits on them loses them; the plugin, which
polls every frame, never sits idle that long.
"""

from __future__ import annotations

import contextlib
import threading
import time

import waitress
from waitress import wasyncore
from waitress.server import BaseWSGIServer

from common.defaults import DRIVE_PORT
from common.protocol import MAX_FRAME_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = DRIVE_PORT
DEFAULT_THREADS = 8  # 4 keep-alive controllers + dashboard + headroom
CONNECTION_LIMIT = 64
EVICT_IDLE_S = 1.0  # a connection quiet this long may be closed when the server is full
EVICT_HEADROOM = 4  # free slots kept for new connections (the plugin's reconnect)


def _evicting(server: BaseWSGIServer):
    """Wrap ``server.readable`` (called every loop turn): near the connection limit, close
    the longest-idle connections so a new one (the plugin) can always get in."""
    plain = server.readable
    limit = server.adj.connection_limit

    def readable():
        if len(server._map) >= limit - EVICT_HEADROOM:
            cutoff = time.time() - EVICT_IDLE_S
            idle = sorted((ch for ch in list(server.active_channels.values())
                           if not ch.requests and not ch.total_outbufs_len and not ch.will_close
                           and ch.last_activity < cutoff), key=lambda ch: ch.last_activity)
            excess = len(server._map) - (limit - EVICT_HEADROOM) + 1
            for ch in idle[:excess]:
                ch.will_close = True  # closed by the loop on its next turn (handle_write)
                server.evicted += 1
        return plain()

    server.evicted = 0
    server.readable = readable
    return server


class Server:
    """A waitress server on (host, port); ``port=0`` picks a free one (see ``.port``)."""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, threads: int = DEFAULT_THREADS):
        self._server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident=None,  # no Server header: input-bot reads the 6th line of a reply as its body
            recv_bytes=1 << 20,
            inbuf_overflow=MAX_FRAME_BYTES + (1 << 20),
            max_request_body_size=MAX_FRAME_BYTES + 1,  # waitress refuses a body of exactly this size
            channel_timeout=300,
            connection_limit=CONNECTION_LIMIT,
            expose_tracebacks=False,
        )
        for obj in self._listeners():
            _evicting(obj)
        self.host = host
        self.port = self._server.effective_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def evicted(self) -> int:
        """Idle connections closed to make room for new ones."""
        return sum(o.evicted for o in self._listeners())

    def _listeners(self) -> list[BaseWSGIServer]:
        """The listening server(s): one per address (``localhost`` may listen on two)."""
        objs = {id(o): o for o in [*self._server._map.values(), self._server] if isinstance(o, BaseWSGIServer)}
        return list(objs.values())

    def serve_forever(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # close() shut the map under select()
            self._server.run()

    def start(self) -> Server:
        """Serve on a background thread (tests, the simulator client)."""
        self._thread = threading.Thread(target=self.serve_forever, name="waitress", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        srv = self._server
        srv.task_dispatcher.shutdown(timeout=5)
        if self._thread is not None and self._thread.is_alive():
            # Close the sockets on the loop's own thread (woken through its trigger pipe),
            # so select() never sees a descriptor closed under it.
            # The trigger may already be closed if the loop is exiting on its own (EBADF): then
            # the close below, on this thread, does it.
            with contextlib.suppress(OSError):
                srv.trigger.pull_trigger(lambda: wasyncore.close_all(srv._map))
                self._thread.join(timeout=3)
        wasyncore.close_all(srv._map)  # not started, or the loop did not wake: close here
        if self._thread is not None:
            self._thread.join(timeout=3)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
