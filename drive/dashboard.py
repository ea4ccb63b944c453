"""The live dashboard: the page at ``/`` and the small JSON API it polls.

    GET  /                 the page (drive/static/dashboard.html + .js + .css)
    GET  /api/state        mode, sticks, req/s, latency histogram, sessions
    GET  /api/frame.jpg    the latest frame (the human's port first)
    POST /api/mode         {"mode": "ai" | "human" | "shadow"}
    POST /api/record       {"on": true | false}   plugin recording (human mode)
    POST /api/reset        {"ports": [0, ...]}    answers carry "CMD": "reset" until the plugin confirms it

State-changing requests are POSTs with a JSON body; drive.guard refuses them
from another origin. /api/state is strict JSON: NaN or Inf telemetry is null.
"""

from __future__ import annotations

import io
import json

from flask import Blueprint, Response, current_app, jsonify, request
from PIL import Image

from common.protocol import JSON_TYPE, ProtocolError, json_safe
from drive.guard import TOKEN_COOKIE

dashboard = Blueprint("dashboard", __name__)


def _pilot():
    return current_app.extensions["pilot"]


def _json_body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ProtocolError("expected a JSON object body (Content-Type: application/json)")
    return data


@dashboard.get("/")
def page():
    resp = current_app.send_static_file("dashboard.html")
    resp.headers["Cache-Control"] = "no-store"
    token = request.args.get("token")
    if current_app.extensions["guard"].token_matches(token):  # later requests carry it as a cookie
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
    return resp


@dashboard.get("/api/state")
def state():
    # strict JSON: a NaN/Inf (telemetry from the plugin's %.9g floats) becomes null, never a bare NaN
    body = json.dumps(json_safe(_pilot().state()), allow_nan=False)
    return Response(body, mimetype=JSON_TYPE, headers={"Cache-Control": "no-store"})


@dashboard.get("/api/frame.jpg")
def frame():
    img = _pilot().latest_frame()
    if img is None:
        raise ProtocolError("no frame yet: nothing has polled the server", 404)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=80)
    return Response(buf.getvalue(), mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@dashboard.post("/api/mode")
def set_mode():
    mode = _json_body().get("mode")
    try:
        _pilot().set_mode(mode)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    return jsonify({"mode": mode})


@dashboard.post("/api/record")
def record():
    on = _json_body().get("on")
    if not isinstance(on, bool):
        raise ProtocolError('"on" must be true or false')
    pilot = _pilot()
    if on:
        return jsonify({"on": True, "path": pilot.recording.start(), "mode": pilot.mode})
    return jsonify({"on": False, "finished": pilot.recording.stop()})


@dashboard.post("/api/reset")
def reset():
    ports = _json_body().get("ports")
    if ports is not None and (not isinstance(ports, list) or not all(isinstance(p, int) for p in ports)):
        raise ProtocolError('"ports" must be a list of controller numbers')
    try:
        return jsonify({"reset": _pilot().request_reset(ports)})
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
