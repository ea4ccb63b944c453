"""The gamepad module fed real evdev event bytes (struct input_event) through
inputs' GamePad, from a FIFO and from a file: there is no device here."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from common.gamepad import EVENT_FORMAT, Gamepad, MappingError, NoGamepad, load_mapping, write_event

EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
ABS_X, ABS_Y, ABS_RZ = 0x00, 0x01, 0x05
BTN_SOUTH, BTN_EAST, BTN_NORTH, BTN_TL, BTN_TR = 0x130, 0x131, 0x133, 0x136, 0x137
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "event-joystick"
    os.mkfifo(path)
    return path


def _syn(fh):
    write_event(fh, EV_SYN, 0, 0)


def test_xbox_layout_through_a_fifo(fifo):
    with Gamepad(fifo) as pad, open(fifo, "wb", buffering=0) as fh:
        assert pad.state().tolist() == [0, 0, 0, 0, 0] and not pad.lb
        write_event(fh, EV_ABS, ABS_X, 32767)  # full right
        write_event(fh, EV_ABS, ABS_Y, -32768)  # evdev: negative y is stick UP
        write_event(fh, EV_KEY, BTN_SOUTH, 1)  # A
        write_event(fh, EV_KEY, BTN_TR, 1)  # RB
        write_event(fh, EV_KEY, BTN_TL, 1)  # LB: override
        _syn(fh)
        assert pad.wait_events(5)
        np.testing.assert_allclose(pad.state(), [1, 1, 1, 0, 1], atol=1e-4)  # y flipped once: up = +1
        assert pad.lb
        write_event(fh, EV_ABS, ABS_X, -16384)  # half left
        write_event(fh, EV_ABS, ABS_Y, 400)  # inside the deadzone
        write_event(fh, EV_KEY, BTN_SOUTH, 0)
        write_event(fh, EV_KEY, BTN_EAST, 1)  # B
        write_event(fh, EV_KEY, BTN_TL, 0)
        _syn(fh)
        assert pad.wait_events(10)
        s = pad.state()
        assert -0.5 < s[0] < -0.4  # half deflection, rescaled past the deadzone
        assert s[1] == 0.0 and s[2] == 0 and s[3] == 1 and s[4] == 1
        assert not pad.lb


def test_event_split_across_writes_and_unknown_codes(fifo):
    with Gamepad(fifo) as pad, open(fifo, "wb", buffering=0) as fh:
        raw = struct.pack(EVENT_FORMAT, 1, 0, EV_ABS, ABS_X, 32767)
        write_event(fh, EV_KEY, 0x2FF, 1)  # a code inputs has no name for: ignored
        fh.write(raw[:7])
        fh.flush()
        fh.write(raw[7:])
        _syn(fh)
        assert pad.wait_events(1)
        assert pad.state()[0] == pytest.approx(1.0)


def test_recorded_event_file_and_custom_mapping(tmp_path):
    path = tmp_path / "events.bin"
    with open(path, "wb") as fh:
        write_event(fh, EV_KEY, BTN_NORTH, 1)  # TensorKart used X (north) for b
        write_event(fh, EV_ABS, ABS_RZ, 255)  # right trigger as R
        write_event(fh, EV_ABS, ABS_X, 32767)
        _syn(fh)
    mapping = {"b": {"button": "BTN_NORTH"}, "rb": {"axis": "ABS_RZ", "min": 0, "max": 255},
               "x": {"axis": "ABS_X", "invert": True}}
    with Gamepad(path, mapping) as pad:
        assert pad.wait_events(3)
        np.testing.assert_allclose(pad.state(), [-1, 0, 0, 1, 1], atol=1e-4)


def test_mapping_errors_name_the_field(tmp_path):
    with pytest.raises(MappingError, match="'jump' unknown"):
        load_mapping({"jump": {"button": "BTN_SOUTH"}})
    with pytest.raises(MappingError, match="'a' must be an object with 'axis' or 'button'"):
        load_mapping({"a": {"axis": "ABS_Z", "button": "BTN_SOUTH"}})
    bad = tmp_path / "m.json"
    bad.write_text("{nope")
    with pytest.raises(MappingError, match="m.json: cannot read controller mapping"):
        load_mapping(bad)
    assert load_mapping(None)["y"]["invert"] is True


def test_no_gamepad_is_a_clear_message(tmp_path):
    with pytest.raises(NoGamepad, match="--keyboard or --expert"):
        Gamepad(tmp_path / "absent")
    # the recorder's command line says the same, without a traceback
    out = subprocess.run([sys.executable, "-m", "record", "--source", "screen", "--gamepad",
                          str(tmp_path / "absent"), "--seconds", "1", "--out", str(tmp_path / "s")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "record: error: gamepad device" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s").exists()
