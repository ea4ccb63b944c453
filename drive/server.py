"""Serving the app with waitress (production WSGI server, HTTP/1.1 keep-alive).

Tuned for polls that carry a whole frame: big socket reads (one recv per
frame instead of ~100 of 8 KiB) and request bodies kept in memory (waitress
spills bodies over 512 KiB to a temp file by default).
"""

from __future__ import annotations

import contextlib
import threading

import waitress
from waitress import wasyncore

from drive.protocol import MAX_FRAME_BYTES

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8082
DEFAULT_THREADS = 8  # 4 keep-alive controllers + dashboard + headroom


class Server:
    """A waitress server on (host, port); ``port=0`` picks a free one (see ``.port``)."""

    def __init__(self, app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, threads: int = DEFAULT_THREADS):
        self._server = waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="kartpilot-drive",
            recv_bytes=1 << 20,
            inbuf_overflow=MAX_FRAME_BYTES + (1 << 20),
            max_request_body_size=MAX_FRAME_BYTES,
            channel_timeout=300,
            connection_limit=64,
            expose_tracebacks=False,
        )
        self.host = host
        self.port = self._server.effective_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
