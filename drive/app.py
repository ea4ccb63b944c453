"""The Flask app: the poll routes (GET/POST /<controller>) and the dashboard.

The poll handlers do only what a poll needs: parse headers (common.protocol),
view the body as a frame without copying (np.frombuffer), call
``Pilot.answer``, return bytes. Every refused request gets a 4xx with a
plain-text message saying why; drive.guard refuses foreign Hosts and
cross-origin state changes before any handler runs.

mupen64plus-input-bot (TensorKart, gym-mupen64plus) opens a connection per
poll, sends exactly ``GET /<n> HTTP/1.0`` (older builds: ``GET / HTTP/1.0``)
and takes the 6th ``\\n``-separated non-empty token of the reply as the body.
Such polls (HTTP/1.0, no keep-alive) are answered with exactly three header
lines (Connection, Content-Type, Date) so that token is the JSON; a plain
HTTP/1.0 ``GET /`` without an Accept header is a poll of controller 0.
"""

from __future__ import annotations

import logging
from time import perf_counter

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from common import protocol
from common.protocol import ProtocolError
from drive.dashboard import dashboard
from drive.guard import Guard, Refused
from drive.pilot import Pilot

log = logging.getLogger("drive")


def _text(message: str, status: int) -> Response:
    return Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain")


def _input_bot_style() -> bool:
    """An HTTP/1.0 poll that reads to close (input-bot): its reply must have no Content-Length."""
    env = request.environ
    return env.get("SERVER_PROTOCOL") == "HTTP/1.0" and request.headers.get("Connection", "").lower() != "keep-alive"


def create_app(pilot: Pilot, capture=None, guard: Guard | None = None) -> Flask:
    """``capture``: a common.screen.ScreenCapture for GET polls (None: GET answers 503).
    ``guard``: the Host/Origin/token checks (default: a server bound to 127.0.0.1)."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = protocol.MAX_FRAME_BYTES  # also bounds chunked bodies
    app.extensions["pilot"] = pilot
    app.extensions["capture"] = capture
    guard = guard or Guard()
    app.extensions["guard"] = guard
    app.register_blueprint(dashboard)
    stats = pilot.stats

    @app.before_request
    def check_access():
        guard.check(request.method, request.headers, request.cookies, request.remote_addr or "",
                    request.args.get("token") if request.path == "/" else None)
        if (request.path == "/" and request.method == "GET" and request.environ.get("SERVER_PROTOCOL") == "HTTP/1.0"
                and "Accept" not in request.headers):
            return poll(0, False)  # input-bot's single-controller builds: GET / HTTP/1.0, no headers
        return None

    def poll(controller: int, posted: bool) -> Response:
        t0 = perf_counter()
        protocol.check_controller(controller)
        head = protocol.parse_poll(request.method, request.headers.get)
        frame = None
        if posted:
            protocol.check_length(request.content_length, head)  # refuse before reading a wrong body
            if request.content_length is None:  # chunked: werkzeug enforces MAX_CONTENT_LENGTH while reading
                raw = request.get_data(cache=False)
            else:  # waitress has the whole body in memory: one read, no 64 KiB chunking
                raw = request.environ["wsgi.input"].read(head.body_bytes)
            frame = protocol.frame_from_body(raw, *head.size)
        elif capture is None:
            raise ProtocolError("GET polls need screen capture (start the server with an X DISPLAY); "
                                "or POST the frame with X-Frame", 503)
        else:
            frame = capture.grab()
        body = pilot.answer(controller, frame, index=head.index, telemetry=head.telemetry, posted=posted,
                            done=head.done)
        stats.record(controller, perf_counter() - t0)
        if not posted and _input_bot_style():
            # a generator: no Content-Length, so waitress adds only Connection and Date (3 header lines)
            return Response(iter((body,)), mimetype=protocol.JSON_TYPE)
        return Response(body, mimetype=protocol.JSON_TYPE)

    @app.post("/<int(signed=True):controller>")
    def post_poll(controller: int):
        return poll(controller, True)

    @app.get("/<int(signed=True):controller>")
    def get_poll(controller: int):
        return poll(controller, False)

    @app.errorhandler(ProtocolError)
    def bad_request(exc: ProtocolError):
        stats.error()
        return _text(f"{request.method} {request.path}: {exc.message}", exc.status)

    @app.errorhandler(Refused)
    def refused(exc: Refused):
        stats.error()
        return _text(f"{request.method} {request.path}: {exc.status} refused: {exc.message}", exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        stats.error()
        hint = " (polls: GET/POST /0../3; dashboard: /)" if exc.code in (404, 405) else ""
        return _text(f"{request.method} {request.path}: {exc.code} {exc.name}: {exc.description}{hint}",
                     exc.code or 400)

    @app.errorhandler(Exception)
    def server_error(exc: Exception):  # logged, answered, and the server keeps serving
        stats.error()
        log.exception("error answering %s %s", request.method, request.path)
        return _text(f"{request.method} {request.path}: internal error: {type(exc).__name__}: {exc}", 500)

    return app
