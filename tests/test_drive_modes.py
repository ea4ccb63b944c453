"""Modes, LB override and corrections, with gamepad events fed through `inputs`.

The gamepad is common.gamepad's reader on a file of real ``struct input_event``
records (what the kernel writes to /dev/input/eventN); the server is the real
app on waitress; the model is a real PilotNet set to answer a constant action.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from common import action as act
from common.gamepad import Gamepad, write_event
from dataset.session import load_image, load_session
from drive import modes
from drive.client import DriveClient
from drive.pilot import Pilot
from testing.drive import frame_id, pattern_frame, serving
from testing.models import constant_pilotnet

EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
ABS_X, ABS_Y = 0x00, 0x01
BTN_SOUTH, BTN_EAST, BTN_TL, BTN_SELECT = 0x130, 0x131, 0x136, 0x13A

AI = [0.75, -0.25, 1.0, 0.0, 1.0]
AI_KEYS = {"X_AXIS": 60, "Y_AXIS": -20, "A_BUTTON": 1, "B_BUTTON": 0, "R_TRIG": 1}
NEUTRAL_KEYS = {"X_AXIS": 0, "Y_AXIS": 0, "A_BUTTON": 0, "B_BUTTON": 0, "R_TRIG": 0}
TRIM = 0.3
H, W = 120, 160


class Pad:
    """Writes evdev events to the file the Gamepad reads, then waits until they are applied."""

    def __init__(self, path, gamepad: Gamepad):
        self.fh = open(path, "ab", buffering=0)
        self.gamepad = gamepad

    def send(self, *events) -> None:
        mapped = self.gamepad.events
        presses = self.gamepad.mode_presses
        for ev_type, code, value in events:
            write_event(self.fh, ev_type, code, value)
        write_event(self.fh, EV_SYN, 0, 0)
        n_mapped = sum(code != BTN_SELECT for _, code, _ in events)
        n_mode = sum(code == BTN_SELECT and value == 1 for _, code, value in events)
        end = time.monotonic() + 5
        while (self.gamepad.events < mapped + n_mapped or self.gamepad.mode_presses < presses + n_mode):
            assert time.monotonic() < end, "gamepad events were not applied"
            time.sleep(0.005)

    def close(self):
        self.fh.close()


@pytest.fixture(scope="module")
def policy():
    from train.policy import Policy

    return Policy(constant_pilotnet(AI))


@pytest.fixture
def rig(policy, tmp_path):
    """(pilot, pad, client) with a live server; the pilot is closed at the end."""
    events = tmp_path / "pad.events"
    events.touch()
    gamepad = Gamepad(events).start()
    pilot = Pilot(policy, gamepad=gamepad, sessions_dir=tmp_path / "sessions", trim_s=TRIM,
                  meta={"game": "test"})
    gamepad.on_mode_button = pilot.cycle_mode
    pad = Pad(events, gamepad)
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        yield pilot, pad, cli
    pad.close()
    gamepad.stop()
    pilot.close()


def poll(cli, index, port=0):
    status, body = cli.post(port, pattern_frame(index, H, W), index=index)
    assert status == 200, body
    answer = json.loads(body)
    return {k: answer[k] for k in NEUTRAL_KEYS}


def test_decide_table():
    assert modes.decide("ai", False, False) == modes.Decision(True, True, False, False, "model")
    assert modes.decide("ai", True, False) == modes.Decision(False, False, True, False, "correction")
    assert modes.decide("ai", True, True).correction
    assert modes.decide("human", True, True) == modes.Decision(False, False, False, False, "human")
    assert modes.decide("shadow", True, True) == modes.Decision(False, True, False, False, "human")
    with pytest.raises(ValueError, match="unknown mode"):
        modes.decide("autopilot", False, False)


def test_override_trims_each_takeover():
    ov = modes.Override(trim_s=0.3)
    assert [ov.update(h, t) for h, t in ((True, 10.0), (True, 10.2), (True, 10.31), (False, 10.4),
                                         (True, 11.0), (True, 11.29), (True, 11.3))] == [
        False, False, True, False, False, False, True]
    assert ov.takeovers == 2


def test_lb_override_switches_at_once_and_saves_trimmed_corrections(rig):
    pilot, pad, cli = rig
    assert poll(cli, 0) == AI_KEYS
    pad.send((EV_ABS, ABS_X, 32767), (EV_KEY, BTN_SOUTH, 1))  # stick right + A, no LB yet
    assert poll(cli, 1) == AI_KEYS  # ai mode: the stick alone does not take over
    human = {"X_AXIS": 80, "Y_AXIS": 0, "A_BUTTON": 1, "B_BUTTON": 0, "R_TRIG": 0}

    pad.send((EV_KEY, BTN_TL, 1))  # LB down: the very next answer is the human's
    assert poll(cli, 2) == human  # first poll of the takeover: inside the trim, not saved
    assert pilot.state()["lb_held"] and pilot.state()["ports"]["0"]["driver"] == "correction"
    time.sleep(TRIM + 0.05)
    assert [poll(cli, i) for i in (3, 4, 5)] == [human] * 3  # past the trim: saved
    assert poll(cli, 6, port=1) == AI_KEYS  # other controllers stay with the model
    pad.send((EV_KEY, BTN_TL, 0))  # LB up: the model takes back over
    assert poll(cli, 7) == AI_KEYS

    pad.send((EV_ABS, ABS_X, -32768), (EV_KEY, BTN_TL, 1))  # second takeover, stick left
    assert poll(cli, 8)["X_AXIS"] == -80
    time.sleep(TRIM + 0.05)
    assert poll(cli, 9)["X_AXIS"] == -80
    pad.send((EV_KEY, BTN_TL, 0))
    assert poll(cli, 10) == AI_KEYS

    out = pilot.close()["corrections"]
    df = load_session(out["path"])
    meta = df.attrs["meta"]
    assert meta["source"] == "correction" and meta["takeovers"] == 2 and meta["trim_s"] == TRIM
    assert meta["resolution"] == [H, W] and meta["game"] == "test"
    assert list(df["driver"]) == ["correction"] * 4
    saved = [frame_id(load_image(out["path"], img)) for img in df["image"]]
    assert saved == [3, 4, 5, 9]
    for img, idx in zip(df["image"], saved, strict=True):
        assert np.array_equal(load_image(out["path"], img), pattern_frame(idx, H, W))
    np.testing.assert_allclose(act_rows(df)[:3], [[1, 0, 1, 0, 0]] * 3)
    np.testing.assert_allclose(act_rows(df)[3], [-1, 0, 1, 0, 0])


def act_rows(df):
    return df[list(act.FIELDS)].to_numpy()


def test_mode_button_on_the_gamepad_cycles_modes(rig):
    pilot, pad, cli = rig
    seen = []
    for _ in range(3):
        pad.send((EV_KEY, BTN_SELECT, 1), (EV_KEY, BTN_SELECT, 0))
        seen.append(pilot.mode)
    assert seen == ["shadow", "human", "ai"]


def test_shadow_mode_sends_only_the_human_input(rig, tmp_path):
    pilot, pad, cli = rig
    status, out = cli.api("POST", "/api/mode", {"mode": "shadow"})
    assert status == 200 and out == {"mode": "shadow"}
    answers = [poll(cli, i) for i in range(5)]  # nobody touches the pad: neutral, never the model
    assert answers == [NEUTRAL_KEYS] * 5
    assert poll(cli, 5, port=2) == NEUTRAL_KEYS
    pad.send((EV_ABS, ABS_Y, -32768), (EV_KEY, BTN_EAST, 1), (EV_KEY, BTN_TL, 1))  # up + B, LB too
    assert poll(cli, 6) == {"X_AXIS": 0, "Y_AXIS": 80, "A_BUTTON": 0, "B_BUTTON": 1, "R_TRIG": 0}
    state = pilot.state()
    np.testing.assert_allclose(state["ports"]["0"]["ai"], AI, atol=0.02)  # the model ran and is shown
    assert state["shadow_rows"] == 7
    out = pilot.close()
    assert out["corrections"]["path"] is None  # LB in shadow mode is not an override
    log = np.genfromtxt(out["shadow"]["path"], delimiter=",", names=True)
    assert len(log) == 7
    # a shadow log is not a session: beside the sessions folder, never in it (make dataset reads it)
    assert os.path.dirname(out["shadow"]["path"]) == str(tmp_path / "shadow")
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())
    np.testing.assert_allclose(log["ai_x"], 0.75, atol=0.02)
    np.testing.assert_allclose(log["human_y"][-1], 1.0)


def test_human_mode_records_the_posted_frames_and_answers(rig):
    pilot, pad, cli = rig
    pad.send((EV_ABS, ABS_X, 32767), (EV_KEY, BTN_SOUTH, 1))
    assert poll(cli, 0) == AI_KEYS  # ai mode: recording is for human mode only
    assert cli.api("POST", "/api/mode", {"mode": "human"})[0] == 200
    status, out = cli.api("POST", "/api/record", {"on": True})
    assert status == 200 and out["on"]
    answers = [poll(cli, i) for i in range(10, 16)]
    assert answers == [{"X_AXIS": 80, "Y_AXIS": 0, "A_BUTTON": 1, "B_BUTTON": 0, "R_TRIG": 0}] * 6
    poll(cli, 16, port=3)  # another controller: not the gamepad's, not recorded
    status, out = cli.api("POST", "/api/record", {"on": False})
    assert status == 200 and out["finished"]["frames"] == 6
    df = load_session(out["finished"]["path"])
    assert df.attrs["meta"]["source"] == "plugin" and list(df["driver"]) == ["human"] * 6
    assert [frame_id(load_image(df.attrs["path"], i)) for i in df["image"]] == list(range(10, 16))
    np.testing.assert_allclose(act_rows(df), [[1, 0, 1, 0, 0]] * 6)


def test_dashboard_api_rejects_bad_input(rig):
    pilot, pad, cli = rig
    assert cli.api("POST", "/api/mode", {"mode": "autopilot"}) == (
        400, "POST /api/mode: unknown mode 'autopilot'; modes are ai, human, shadow\n")
    assert cli.api("POST", "/api/record", {"on": "yes"})[0] == 400
    assert cli.api("POST", "/api/reset", {"ports": [7]})[0] == 400
    status, _ = cli.request("POST", "/api/mode", b"not json", {"Content-Type": "application/json"})
    assert status == 400
    assert pilot.mode == "ai"
