"""The gamepad: one device, one reader, for the recorder and the drive server.

Gamepad -> action vector, through ``inputs`` (evdev), Xbox layout.
A reader thread decodes evdev events with ``inputs.GamePad`` and keeps the
latest state; :meth:`Gamepad.state` returns it as the action vector
``[x, y, a, b, rb]`` (normalised once, here: evdev's y points down, so the
default mapping flips it), :attr:`Gamepad.lb` is the manual-override button
and :meth:`Gamepad.read` gives both (what drive/ polls). Pressing Back/Select
(``MODE_BUTTON``) calls ``on_mode_button`` (drive cycles ai -> shadow -> human).
The device can be a real /dev/input/event* node or any file or FIFO of
``struct input_event`` bytes (tests feed those); :func:`open_gamepad` reads
the CLIs' ``--gamepad`` spelling.

Mapping (JSON, merged over DEFAULT_MAPPING): each action field names either
``{"axis": CODE, "min": lo, "max": hi, "invert": bool, "deadzone": d}`` or
``{"button": CODE}``; "override" names the override button.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import inputs
import numpy as np

from common import action as act

DEFAULT_MAPPING: dict = {
    "x": {"axis": "ABS_X", "min": -32768, "max": 32767, "invert": False, "deadzone": 0.08},
    # evdev's y axis grows downwards; the action vector's y is up-positive: flip here, once.
    "y": {"axis": "ABS_Y", "min": -32768, "max": 32767, "invert": True, "deadzone": 0.08},
    "a": {"button": "BTN_SOUTH"},
    "b": {"button": "BTN_EAST"},
    "rb": {"button": "BTN_TR"},
    "override": {"button": "BTN_TL"},  # LB: manual override at drive time
}
_FIELDS = (*act.FIELDS, "override")
MODE_BUTTON = "BTN_SELECT"  # Back/Select: not in the mapping, never part of the action
EVENT_FORMAT = inputs.EVENT_FORMAT
EVENT_SIZE = inputs.EVENT_SIZE
NO_GAMEPAD_HELP = (
    "no gamepad found (looked in /dev/input/by-id and /dev/input/by-path for *-event-joystick). "
    "Plug in an Xbox-layout controller, pass --gamepad /dev/input/eventN, "
    "or for the simulator use --keyboard or --expert."
)


class NoGamepad(RuntimeError):
    """No usable gamepad; the message says what to do instead."""


class MappingError(ValueError):
    """A controller mapping that cannot be used (names the field)."""


def load_mapping(spec: str | os.PathLike | dict | None) -> dict:
    """DEFAULT_MAPPING updated with a JSON file or dict (per field, whole entries)."""
    mapping = copy.deepcopy(DEFAULT_MAPPING)
    if spec is None:
        return mapping
    if isinstance(spec, dict):
        user = spec
    else:
        try:
            user = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MappingError(f"{spec}: cannot read controller mapping: {exc}") from exc
    for key, entry in user.items():
        if key not in _FIELDS:
            raise MappingError(f"mapping field {key!r} unknown; expected one of {_FIELDS}")
        if not isinstance(entry, dict) or ("axis" in entry) == ("button" in entry):
            raise MappingError(f"mapping field {key!r} must be an object with 'axis' or 'button'")
        if "axis" in entry:
            base = {"min": -32768, "max": 32767, "invert": False, "deadzone": 0.0}
            if key in ("a", "b", "rb", "override"):
                base = {"min": 0, "max": 255, "invert": False, "deadzone": 0.0}
            entry = {**base, **entry}
            if entry["max"] == entry["min"]:
                raise MappingError(f"mapping field {key!r}: axis min equals max")
        mapping[key] = entry
    return mapping


def write_event(fh, ev_type: int, code: int, value: int, when: float | None = None) -> None:
    """Write one ``struct input_event`` (as the kernel would) to a binary file."""
    when = time.time() if when is None else when
    fh.write(struct.pack(EVENT_FORMAT, int(when), int((when % 1) * 1e6), ev_type, code, value))


class _EvdevStream(inputs.GamePad):
    """inputs.GamePad reading with a timeout, on a device node, file or FIFO."""

    def __init__(self, manager, char_path: str, device_path: str | None = None):
        # inputs parses the name out of a /dev/input/by-id style path; files have none.
        super().__init__(manager, device_path or "/dev/input/by-id/kartpilot-file-event-joystick",
                         char_path_override=char_path)
        self._fd: int | None = None
        self._buf = b""

    def _set_name(self):  # inputs reads /sys/class/input/<node>/device/name: absent for files
        try:
            super()._set_name()
        except OSError:
            self.name = os.path.basename(self.get_char_device_path())

    def read_events(self, timeout: float) -> list:
        """Decoded events available within ``timeout`` s ([] if none, or at EOF)."""
        if self._fd is None:
            self._fd = os.open(self.get_char_device_path(), os.O_RDONLY | os.O_NONBLOCK)
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self._fd, EVENT_SIZE * 64)
        except BlockingIOError:
            return []
        if not data:  # EOF on a file / FIFO without writer: wait for more, like tail -f
            time.sleep(min(timeout, 0.01))
            return []
        self._buf += data
        whole = len(self._buf) - len(self._buf) % EVENT_SIZE
        raw, self._buf = self._buf[:whole], self._buf[whole:]
        events = []
        for fields in struct.iter_unpack(EVENT_FORMAT, raw):
            try:
                events.append(self._make_event(*fields))
            except (inputs.UnknownEventType, inputs.UnknownEventCode):
                continue  # codes inputs has no name for cannot be mapped anyway
        return events

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def find_gamepad() -> tuple[str, str, str]:
    """(device path, char device path, name) of the first gamepad, or NoGamepad."""
    manager = inputs.DeviceManager()
    if not manager.gamepads:
        raise NoGamepad(NO_GAMEPAD_HELP)
    pad = manager.gamepads[0]
    return pad._device_path, pad.get_char_device_path(), pad.name


class Gamepad:
    """Latest gamepad state as an action vector, read by a background thread.

    ``Gamepad()`` opens the first gamepad (NoGamepad if none);
    ``Gamepad("/path/to/events")`` reads a device node, file or FIFO.
    ``on_mode_button``: called (on the reader thread) for each press of ``MODE_BUTTON``.
    """

    def __init__(self, device: str | os.PathLike | None = None, mapping=None,
                 on_mode_button: Callable[[], object] | None = None):
        self.mapping = load_mapping(mapping)
        self.on_mode_button = on_mode_button
        self.mode_presses = 0
        if device is None:
            dev_path, char_path, _ = find_gamepad()
        else:
            char_path, dev_path = str(device), None
            if not os.path.exists(char_path):
                raise NoGamepad(f"gamepad device {char_path} does not exist. {NO_GAMEPAD_HELP}")
        self._stream = _EvdevStream(inputs.DeviceManager(), char_path, dev_path)
        self.name = self._stream.name
        self.path = char_path
        self._codes = self._index(self.mapping)
        self._raw: dict[str, float] = {}  # latest value per mapped field
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.events = 0  # mapped events applied
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _index(mapping: dict) -> dict[str, list[str]]:
        codes: dict[str, list[str]] = {}
        for field, entry in mapping.items():
            codes.setdefault(entry.get("axis") or entry["button"], []).append(field)
        return codes

    def start(self) -> Gamepad:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gamepad", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._stream.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._stream.read_events(0.05)
            except OSError as exc:  # unplugged: go neutral rather than hold the last stick
                self.error = f"gamepad {self.path}: {errno.errorcode.get(exc.errno, exc)} ({exc.strerror})"
                with self._lock:
                    self._raw.clear()
                return
            if events:
                self.apply(events)

    def apply(self, events) -> None:
        """Fold decoded ``inputs`` events into the state (the reader thread calls this)."""
        for ev in events:
            if ev.code == MODE_BUTTON and ev.state == 1:  # press, not release or autorepeat (2)
                self.mode_presses += 1
                if self.on_mode_button is not None:
                    self.on_mode_button()
        with self._lock:
            for ev in events:
                for field in self._codes.get(ev.code, ()):
                    self._raw[field] = float(ev.state)
                    self.events += 1

    def wait_events(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` mapped events were applied (tests, calibration)."""
        end = time.monotonic() + timeout
        while self.events < n and time.monotonic() < end:
            time.sleep(0.005)
        return self.events >= n

    def _value(self, field: str) -> float:
        entry = self.mapping[field]
        raw = self._raw.get(field)
        if raw is None:
            return 0.0
        if "button" in entry:
            return 1.0 if raw else 0.0
        lo, hi = float(entry["min"]), float(entry["max"])
        if field in ("x", "y"):  # stick: centre -> 0, ends -> -1/+1, deadzone rescaled
            v = (2.0 * (raw - lo) / (hi - lo)) - 1.0
            dz = float(entry.get("deadzone", 0.0))
            v = 0.0 if abs(v) <= dz else np.sign(v) * (abs(v) - dz) / (1.0 - dz)
        else:  # analogue trigger used as a button: 0..1
            v = (raw - lo) / (hi - lo)
        v = -v if entry.get("invert") else v
        return float(v)

    def state(self) -> np.ndarray:
        """The current action vector [x, y, a, b, rb] (float32, in range)."""
        with self._lock:
            vec = [self._value(f) for f in act.FIELDS]
        return act.as_action(vec)

    @property
    def lb(self) -> bool:
        """Manual-override button (LB by default) held?"""
        with self._lock:
            return self._value("override") > act.BUTTON_THRESHOLD

    def read(self) -> tuple[np.ndarray, bool]:
        """(action vector, override held): what the drive server polls."""
        return self.state(), self.lb


def open_gamepad(spec: str | None, mapping=None) -> Gamepad | None:
    """A started Gamepad for ``spec``: 'none' -> None; 'auto' -> the first gamepad, None when there
    is none; None -> the first gamepad, NoGamepad when there is none; else a device node or file."""
    if spec == "none":
        return None
    if spec == "auto":
        try:
            return Gamepad(None, mapping).start()
        except NoGamepad:
            return None
    return Gamepad(spec, mapping).start()
