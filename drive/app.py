"""The Flask app: the poll routes (GET/POST /<controller>) and the dashboard.

The poll handlers do only what a poll needs: parse headers, view the body as
a frame without copying (np.frombuffer), call ``Pilot.answer``, return bytes.
Every refused request gets a 4xx with a plain-text message saying why.
"""

from __future__ import annotations

import logging
from time import perf_counter

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from drive import protocol
from drive.dashboard import dashboard
from drive.pilot import Pilot
from drive.protocol import BadRequest

log = logging.getLogger("drive")


def _text(message: str, status: int) -> Response:
    return Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain")


def create_app(pilot: Pilot, capture=None) -> Flask:
    """``capture``: a common.screen.ScreenCapture for GET polls (None: GET answers 503)."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = protocol.MAX_FRAME_BYTES  # also bounds chunked bodies
    app.extensions["pilot"] = pilot
    app.extensions["capture"] = capture
    app.register_blueprint(dashboard)
    stats = pilot.stats

    @app.post("/<int(signed=True):controller>")
    def post_poll(controller: int):
        t0 = perf_counter()
        protocol.check_controller(controller)
        headers = request.headers
        width, height = protocol.parse_frame_header(headers.get("X-Frame"))
        index = protocol.parse_index(headers.get("X-Frame-Index"))
        telemetry = protocol.parse_telemetry(headers.get("X-Telemetry"))
        need = width * height * 3
        declared = request.content_length
        if declared is not None and declared != need:  # refuse before reading a wrong body
            raise BadRequest(f"Content-Length {declared} but X-Frame {width}x{height}x3 needs {need} bytes")
        if declared is None:  # chunked: werkzeug enforces MAX_CONTENT_LENGTH while reading
            raw = request.get_data(cache=False)
        else:  # waitress has the whole body in memory: one read, no 64 KiB chunking
            raw = request.environ["wsgi.input"].read(need)
        frame = protocol.frame_from_body(raw, width, height)
        body = pilot.answer(controller, frame, index=index, telemetry=telemetry)
        stats.record(controller, perf_counter() - t0)
        return Response(body, mimetype=protocol.JSON_TYPE)

    @app.get("/<int(signed=True):controller>")
    def get_poll(controller: int):
        t0 = perf_counter()
        protocol.check_controller(controller)
        if capture is None:
            raise BadRequest("GET polls need screen capture (start the server with an X DISPLAY); "
                             "or POST the frame with X-Frame", 503)
        frame = capture.grab()
        body = pilot.answer(controller, frame, posted=False)
        stats.record(controller, perf_counter() - t0)
        return Response(body, mimetype=protocol.JSON_TYPE)

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        stats.error()
        return _text(f"{request.method} {request.path}: {exc.message}", exc.status)

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
