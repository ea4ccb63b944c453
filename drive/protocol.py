"""The wire format: parsing a poll and encoding the answer (nothing else).

Requests that cannot be used raise :class:`BadRequest` with an HTTP status and
a message naming the header or body at fault; the app turns it into a 4xx.
"""

from __future__ import annotations

import json

import numpy as np

from common import action as act

CONTROLLERS = 4  # N64 ports 0..3
MAX_SIDE = 2048  # widest / tallest frame accepted
MAX_FRAME_BYTES = MAX_SIDE * MAX_SIDE * 3
MAX_TELEMETRY = 4096  # bytes of X-Telemetry
JSON_TYPE = "application/json"


class BadRequest(Exception):
    """A poll the server refuses; ``status`` is the 4xx to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


def check_controller(controller: int) -> int:
    if not 0 <= controller < CONTROLLERS:
        raise BadRequest(f"controller {controller} out of range: N64 ports are 0..{CONTROLLERS - 1}", 404)
    return controller


def parse_frame_header(value: str | None) -> tuple[int, int]:
    """``X-Frame: <width>x<height>x3`` -> (width, height)."""
    if value is None:
        raise BadRequest("POST needs an X-Frame: <width>x<height>x3 header (or use GET: the server captures)")
    parts = value.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BadRequest(f"X-Frame {value!r} is not <width>x<height>x3")
    w, h, c = (int(p) for p in parts)
    if c != 3:
        raise BadRequest(f"X-Frame {value!r}: frames are RGB, 3 channels, not {c}")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise BadRequest(f"X-Frame {value!r}: width and height must be 1..{MAX_SIDE}", 413 if w and h else 400)
    return w, h


def parse_index(value: str | None) -> int | None:
    """``X-Frame-Index: <n>`` (optional) -> n."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 19:
        raise BadRequest(f"X-Frame-Index {value[:40]!r} is not a non-negative integer")
    return int(value)


def parse_telemetry(value: str | None) -> dict[str, float | str]:
    """``X-Telemetry: name=value;name=value`` -> dict (numbers as float)."""
    if not value:
        return {}
    if len(value) > MAX_TELEMETRY:
        raise BadRequest(f"X-Telemetry is {len(value)} bytes, at most {MAX_TELEMETRY}", 431)
    out: dict[str, float | str] = {}
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise BadRequest(f"X-Telemetry entry {item[:40]!r} is not name=value")
        raw = raw.strip()
        try:
            out[name] = float(raw)
        except ValueError:
            out[name] = raw
    return out


def frame_from_body(body: bytes, width: int, height: int) -> np.ndarray:
    """Raw RGB bytes, top row first -> (height, width, 3) uint8 view (no copy)."""
    need = width * height * 3
    if len(body) != need:
        raise BadRequest(
            f"body has {len(body)} bytes, X-Frame {width}x{height}x3 needs {need}"
            + (" (truncated?)" if len(body) < need else "")
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width, 3)


def encode_answer(action: np.ndarray, cmd: str | None = None) -> bytes:
    """Action vector -> the input-bot JSON (16 integer keys, optional "CMD")."""
    keys: dict[str, int | str] = act.to_n64(action)
    if cmd:
        keys["CMD"] = cmd
    return json.dumps(keys, separators=(",", ":")).encode()


NEUTRAL_ANSWER = encode_answer(act.NEUTRAL)
