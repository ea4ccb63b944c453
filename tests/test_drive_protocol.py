"""The drive protocol over real HTTP: input-bot compatible answers, keep-alive, GET capture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import action as act
from common.frames import to_model_input
from drive.client import DriveClient
from drive.pilot import Pilot
from testing.drive import pattern_frame, serving
from testing.models import constant_pilotnet

AI = [0.75, -0.25, 1.0, 0.0, 1.0]  # what the model answers: X_AXIS 60, Y_AXIS -20, A, R


@pytest.fixture(scope="module")
def policy():
    from train.policy import Policy

    return Policy(constant_pilotnet(AI))


@pytest.fixture
def pilot(policy, tmp_path):
    p = Pilot(policy, sessions_dir=tmp_path / "sessions")
    yield p
    p.close()


def check_input_bot(answer: dict) -> None:
    """What mupen64plus-input-bot (json-c, int per key) needs: the 16 keys, ints, in range."""
    assert set(answer) - {"CMD", "CMD_ID"} == set(act.N64_KEYS)
    for key in act.N64_KEYS:
        value = answer[key]
        assert type(value) is int, (key, value)
        if key in ("X_AXIS", "Y_AXIS"):
            assert -80 <= value <= 80
        else:
            assert value in (0, 1)


def test_post_answers_the_models_action_as_input_bot_json(pilot, policy):
    frame = pattern_frame(1)
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        status, body = cli.post(0, frame, index=7, telemetry="lap=1;progress=0.25;surface=2")
        assert status == 200
        answer = json.loads(body)
        check_input_bot(answer)
        expected = act.to_n64(policy(to_model_input(frame)))
        assert {k: answer[k] for k in act.N64_KEYS} == expected
        assert (answer["X_AXIS"], answer["Y_AXIS"], answer["A_BUTTON"], answer["B_BUTTON"], answer["R_TRIG"]) == (
            60, -20, 1, 0, 1)
        assert "CMD" not in answer
        port = pilot.state()["ports"]["0"]
        assert port["frame_index"] == 7 and port["telemetry"] == {"lap": 1.0, "progress": 0.25, "surface": 2.0}


def test_keep_alive_many_polls_one_connection_all_controllers(pilot):
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        cli.post(0, pattern_frame(0, 240, 320))
        sock = cli.conn.sock
        for i in range(40):
            status, body = cli.post(i % 4, pattern_frame(i, 240, 320), index=i)
            assert status == 200
            check_input_bot(json.loads(body))
        assert cli.conn.sock is sock  # HTTP/1.1: the server never closed the connection
    assert pilot.stats.per_controller == [11, 10, 10, 10]
    assert pilot.stats.errors == 0


def test_any_frame_size_and_model_sized_frames(pilot):
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        for h, w in ((66, 200), (120, 160), (480, 640), (1, 1)):
            status, body = cli.post(0, np.zeros((h, w, 3), np.uint8))
            assert status == 200, body


def test_reset_command_is_sent_until_confirmed_per_port(pilot):
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        status, out = cli.api("POST", "/api/reset", {"ports": [0, 2]})
        assert status == 200 and out == {"reset": [0, 2]}
        answers = [json.loads(cli.post(p, pattern_frame(p, 60, 80))[1]) for p in (0, 1, 2, 0, 2)]
        # no X-KartPilot-Done yet: every answer to ports 0 and 2 still carries the reset
        assert [a.get("CMD") for a in answers] == ["reset", None, "reset", "reset", "reset"]
        ids = {p: a["CMD_ID"] for p, a in zip((0, 1, 2, 0, 2), answers, strict=True) if "CMD" in a}
        assert ids[0] != ids[2]
        for a in answers:
            check_input_bot(a)
        status, state = cli.api("GET", "/api/state")
        assert {p: (c["cmd"], c["state"]) for p, c in state["commands"].items()} == {
            "0": ("reset", "pending"), "2": ("reset", "pending")}
        done = json.loads(cli.post(0, pattern_frame(0, 60, 80), headers={"X-KartPilot-Done": str(ids[0])})[1])
        assert "CMD" not in done
        status, state = cli.api("GET", "/api/state")
        assert state["commands"]["0"]["state"] == "confirmed" and state["commands"]["2"]["state"] == "pending"


def test_get_captures_the_screen_with_mss(pilot, xvfb, policy):
    from common.screen import ScreenCapture

    cap = ScreenCapture((0, 0, 640, 480), display=xvfb.name)
    try:
        with serving(pilot, capture=cap) as srv, DriveClient(srv.host, srv.port) as cli:
            for _ in range(3):
                status, body = cli.get(0)
                assert status == 200, body
                check_input_bot(json.loads(body))
            frame = pilot.latest_frame()
            assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
            assert pilot.state()["ports"]["0"]["driver"] == "model"
    finally:
        cap.close()


def test_get_without_a_display_says_why(pilot):
    with serving(pilot, capture=None) as srv, DriveClient(srv.host, srv.port) as cli:
        status, body = cli.get(1)
        assert status == 503 and b"capture" in body
        assert cli.post(1, pattern_frame(1, 60, 80))[0] == 200


def test_four_controllers_polling_at_once(pilot):
    """Bounded version of bench/drive.py's load test: concurrent keep-alive clients, 0 errors."""
    import threading

    n = 60
    bad: list = []

    def controller(port):
        with DriveClient(srv.host, srv.port) as cli:
            for i in range(n):
                status, body = cli.post(port, pattern_frame(i, 120, 160), index=i)
                answer = json.loads(body) if status == 200 else None
                if answer is None or answer["X_AXIS"] != 60:
                    bad.append((port, i, status, body[:100]))

    with serving(pilot) as srv:
        threads = [threading.Thread(target=controller, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert bad == []
    assert pilot.stats.per_controller == [n] * 4 and pilot.stats.errors == 0
    assert sum(pilot.stats.snapshot()["histogram"]["counts"]) == 4 * n


def test_dashboard_endpoints_before_and_after_a_poll(pilot):
    with serving(pilot) as srv, DriveClient(srv.host, srv.port) as cli:
        assert cli.request("GET", "/api/frame.jpg")[0] == 404
        status, page = cli.request("GET", "/")
        assert status == 200 and b"KartPilot drive" in page and b"/static/dashboard.js" in page
        assert cli.request("GET", "/static/dashboard.js")[0] == 200
        cli.post(0, pattern_frame(3, 240, 320))
        status, jpg = cli.request("GET", "/api/frame.jpg")
        assert status == 200 and jpg.startswith(b"\xff\xd8")
        status, state = cli.api("GET", "/api/state")
        assert status == 200 and state["mode"] == "ai" and state["requests"] == 1
        assert state["ports"]["0"]["frame_shape"] == [240, 320, 3]
