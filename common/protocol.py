"""The drive protocol: the one home of the wire format between the C plugin
(or any input-bot style client) and a server (the drive server, the env's bridge).

Requests (the plugin's polls)::

    GET  /<controller>                      controller 0..3; the server captures the frame itself
    POST /<controller>                      the frame is the body
      X-Frame: <width>x<height>x3           raw RGB bytes, top row first; 1..MAX_SIDE each side
      X-Frame-Index: <n>                    optional, the emulator's frame counter (non-negative)
      X-Telemetry: name=value;...           optional, numbers read from RDRAM (game profile)
      X-KartPilot-Done: <id>                optional, the last CMD_ID the plugin carried out

Answer: ``200 application/json``, the 16 mupen64plus-input-bot keys as integers
(``encode_answer``), plus ``"CMD"`` and ``"CMD_ID"`` while a command is pending
for that controller (``Commands``). Anything unusable is refused with a 4xx and
a message naming the header or body at fault (``ProtocolError``).

The rules where the drive server and the env's bridge used to disagree:
frames up to 4096x4096 (the plugin clamps its frame size there); telemetry
values are numbers only (the plugin prints integers and ``%.9g`` floats, so
``nan``/``inf`` arrive as such and are kept as floats; ``json_safe`` turns them
into ``null`` for JSON); every answer, the neutral one included, carries all
16 keys.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from common import action as act

CONTROLLERS = 4  # N64 ports 0..3
MAX_SIDE = 4096  # widest / tallest frame accepted (the plugin's own clamp)
MAX_FRAME_BYTES = MAX_SIDE * MAX_SIDE * 3
MAX_TELEMETRY = 4096  # bytes of X-Telemetry (the plugin's buffer)
MAX_INDEX_DIGITS = 19  # fits a signed 64-bit integer
JSON_TYPE = "application/json"

FRAME_HEADER = "X-Frame"
INDEX_HEADER = "X-Frame-Index"
TELEMETRY_HEADER = "X-Telemetry"
DONE_HEADER = "X-KartPilot-Done"

COMMANDS = ("reset", "save")  # what the plugin carries out (exact match only)


class ProtocolError(ValueError):
    """A request the server refuses; ``status`` is the 4xx to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


class TelemetryError(ProtocolError):
    """An X-Telemetry header that cannot be parsed, or lacks a profile field."""


# --------------------------------------------------------------------------- requests
def check_controller(controller: int) -> int:
    if not 0 <= controller < CONTROLLERS:
        raise ProtocolError(f"controller {controller} out of range: N64 ports are 0..{CONTROLLERS - 1}", 404)
    return controller


def parse_controller(path: str) -> int:
    """``"/2"`` -> 2; anything else is a 404 naming the path."""
    digits = path[1:] if path.startswith("/") else ""
    if not digits.isdigit() or len(digits) > 3:
        raise ProtocolError(f"path {path[:40]!r} is not /<controller> (0..{CONTROLLERS - 1})", 404)
    return check_controller(int(digits))


def parse_frame_header(value: str | None) -> tuple[int, int]:
    """``X-Frame: <width>x<height>x3`` -> (width, height)."""
    if value is None:
        raise ProtocolError(f"POST needs an {FRAME_HEADER}: <width>x<height>x3 header "
                            "(or use GET: the server captures)")
    parts = value.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and len(p) <= 9 for p in parts):
        raise ProtocolError(f"{FRAME_HEADER} {value[:40]!r} is not <width>x<height>x3")
    w, h, c = (int(p) for p in parts)
    if c != 3:
        raise ProtocolError(f"{FRAME_HEADER} {value!r}: frames are RGB, 3 channels, not {c}")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise ProtocolError(f"{FRAME_HEADER} {value!r}: width and height must be 1..{MAX_SIDE}",
                            413 if w and h else 400)
    return w, h


def _parse_count(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > MAX_INDEX_DIGITS:
        raise ProtocolError(f"{name} {value[:40]!r} is not a non-negative integer")
    return int(value)


def parse_index(value: str | None) -> int | None:
    """``X-Frame-Index: <n>`` (optional) -> n."""
    return _parse_count(INDEX_HEADER, value)


def parse_done(value: str | None) -> int | None:
    """``X-KartPilot-Done: <id>`` (optional) -> the last command id the plugin carried out."""
    return _parse_count(DONE_HEADER, value)


def parse_telemetry(value: str | None) -> dict[str, float]:
    """``"a=1;b=-2.5"`` -> ``{"a": 1.0, "b": -2.5}`` (empty or None -> {}).

    Values are numbers (``nan``/``inf`` included, as ``%.9g`` prints them);
    anything else is a TelemetryError naming the entry."""
    if not value:
        return {}
    if len(value) > MAX_TELEMETRY:
        raise TelemetryError(f"{TELEMETRY_HEADER} is {len(value)} bytes, at most {MAX_TELEMETRY}", 431)
    out: dict[str, float] = {}
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise TelemetryError(f"{TELEMETRY_HEADER} entry {item[:40]!r} is not name=value")
        try:
            out[name] = float(raw)
        except ValueError:
            raise TelemetryError(
                f"{TELEMETRY_HEADER} value of {name[:40]!r} is not a number: {raw.strip()[:40]!r}") from None
    return out


@dataclass(frozen=True)
class PollHeaders:
    """What a poll's headers say (``size`` is (width, height) of the posted frame, None for GET)."""

    size: tuple[int, int] | None
    index: int | None
    telemetry: dict[str, float]
    done: int | None

    @property
    def body_bytes(self) -> int:
        return 0 if self.size is None else self.size[0] * self.size[1] * 3


def parse_poll(method: str, header: Callable[[str], str | None]) -> PollHeaders:
    """Parse a poll's headers (``header(name)`` looks one up). POST needs X-Frame."""
    size = parse_frame_header(header(FRAME_HEADER)) if method == "POST" else None
    return PollHeaders(size, parse_index(header(INDEX_HEADER)),
                       parse_telemetry(header(TELEMETRY_HEADER)), parse_done(header(DONE_HEADER)))


def check_length(declared: int | None, poll: PollHeaders) -> None:
    """Refuse a Content-Length that does not fit the poll before reading the body."""
    need = poll.body_bytes
    if declared is None or declared == need:
        return
    if poll.size is None:
        raise ProtocolError(f"GET carries no body (Content-Length {declared}); POST frames with {FRAME_HEADER}")
    w, h = poll.size
    raise ProtocolError(f"Content-Length {declared} but {FRAME_HEADER} {w}x{h}x3 needs {need} bytes",
                        413 if declared > MAX_FRAME_BYTES else 400)


def frame_from_body(body: bytes, width: int, height: int) -> np.ndarray:
    """Raw RGB bytes, top row first -> (height, width, 3) uint8 view (no copy)."""
    need = width * height * 3
    if len(body) != need:
        raise ProtocolError(
            f"body has {len(body)} bytes, {FRAME_HEADER} {width}x{height}x3 needs {need}"
            + (" (truncated?)" if len(body) < need else "")
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width, 3)


# --------------------------------------------------------------------------- answers
def answer_keys(action_or_keys) -> dict[str, int]:
    """An action vector, or a mapping of input-bot keys (missing ones are 0), -> all 16 keys as ints."""
    if not isinstance(action_or_keys, Mapping):
        return act.to_n64(action_or_keys)
    unknown = set(action_or_keys) - set(act.N64_KEYS)
    if unknown:
        raise ValueError(f"not input-bot keys: {sorted(unknown)} (keys are {', '.join(act.N64_KEYS)})")
    return {k: int(action_or_keys.get(k, 0)) for k in act.N64_KEYS}


def encode_answer(action_or_keys, cmd: str | None = None, cmd_id: int | None = None) -> bytes:
    """The answer body: the 16 input-bot keys, plus ``"CMD"``/``"CMD_ID"`` when a command is pending."""
    keys: dict[str, int | str] = dict(answer_keys(action_or_keys))
    if cmd:
        keys["CMD"] = cmd
        if cmd_id is not None:
            keys["CMD_ID"] = int(cmd_id)
    return json.dumps(keys, separators=(",", ":")).encode()


NEUTRAL_ANSWER = encode_answer(act.NEUTRAL)


def json_safe(value):
    """``value`` with every non-finite float (NaN, Inf) replaced by None, so JSON stays valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.floating):
        return json_safe(float(value))
    return value


# --------------------------------------------------------------------------- commands
MAX_SENDS = 120  # answers that carry one command before the server stops (2 s of polls at 60 Hz)
_ids = {"last": 0}
_ids_lock = threading.Lock()


def _new_id() -> int:
    with _ids_lock:
        _ids["last"] = max(_ids["last"] + 1, int(time.time()) % (1 << 30))
        return _ids["last"]


@dataclass
class Command:
    controller: int
    cmd: str
    id: int
    requested: float  # time.monotonic()
    sent: int = 0  # answers that carried it
    confirmed: float | None = None  # when the plugin's X-KartPilot-Done reached this id
    gave_up: bool = False  # sent MAX_SENDS times, never confirmed: no longer sent

    @property
    def state(self) -> str:
        if self.confirmed is not None:
            return "confirmed"
        return "unconfirmed" if self.gave_up else "pending"

    def summary(self, now: float) -> dict:
        return {"cmd": self.cmd, "id": self.id, "state": self.state, "sent": self.sent,
                "age_s": round(now - self.requested, 3),
                "confirmed_after_s": None if self.confirmed is None else round(self.confirmed - self.requested, 3)}


class Commands:
    """Confirmed commands, per controller (the server's half of the contract).

    ``request`` makes a command pending with a new id: the larger of the last
    id + 1 (process-wide) and the clock in seconds (kept below 2**31), so a
    plugin that outlives a server restart, still reporting the old server's
    last id, does not confirm the new server's commands. Every answer to that controller then carries ``"CMD"`` and
    ``"CMD_ID"`` (``pending``) until a request from it carries
    ``X-KartPilot-Done`` >= the id (``seen``); only then is it confirmed.
    Requesting the command that is already pending keeps its id. A command
    sent ``max_sends`` times without a confirmation (a plugin that predates
    the contract carries out every answer's CMD, so re-sending would repeat it
    forever) is no longer sent and reads "unconfirmed".
    """

    def __init__(self, max_sends: int = MAX_SENDS):
        self.max_sends = max_sends
        self._lock = threading.Lock()
        self._latest: list[Command | None] = [None] * CONTROLLERS

    def request(self, controller: int, cmd: str) -> int:
        if cmd not in COMMANDS:
            raise ValueError(f"unknown command {cmd!r}; commands are {', '.join(COMMANDS)}")
        check_controller(controller)
        with self._lock:
            cur = self._latest[controller]
            if cur is not None and cur.state == "pending" and cur.cmd == cmd:
                return cur.id
            cid = _new_id()
            self._latest[controller] = Command(controller, cmd, cid, time.monotonic())
            return cid

    def seen(self, controller: int, done: int | None) -> None:
        """A request from ``controller`` carried ``X-KartPilot-Done: done`` (None: no header)."""
        if done is None:
            return
        with self._lock:
            cur = self._latest[controller]
            if cur is not None and cur.confirmed is None and cur.sent and done >= cur.id:
                cur.confirmed = time.monotonic()

    def pending(self, controller: int) -> tuple[str | None, int | None]:
        """(cmd, id) the next answer to ``controller`` carries, counted as sent; (None, None) if none."""
        with self._lock:
            cur = self._latest[controller]
            if cur is None or cur.state != "pending":
                return None, None
            if cur.sent >= self.max_sends:
                cur.gave_up = True
                return None, None
            cur.sent += 1
            return cur.cmd, cur.id

    def status(self, controller: int) -> str | None:
        """State of ``controller``'s latest command ("pending", "confirmed", "unconfirmed"), None if none."""
        with self._lock:
            cur = self._latest[controller]
            return None if cur is None else cur.state

    def state(self) -> dict[str, dict]:
        """The latest command per controller, for the dashboard."""
        now = time.monotonic()
        with self._lock:
            return {str(c.controller): c.summary(now) for c in self._latest if c is not None}
