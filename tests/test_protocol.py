"""common.protocol: the one wire format, and the drive server and the env's bridge both following it.

The rules where the two servers used to disagree are tested through both over
real HTTP: frames up to 4096x4096, numbers-only telemetry (nan/inf kept),
and a 16-key neutral answer. Confirmed commands are tested with a Python
client that follows the plugin's side of the contract (``ContractPlugin``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import threading

import numpy as np
import pytest

from common import action as act
from common import protocol
from common.protocol import Commands, ProtocolError, TelemetryError

NEUTRAL = json.loads(protocol.NEUTRAL_ANSWER)


# --------------------------------------------------------------------------- parsing
def test_frame_limit_is_4096_a_side():
    assert protocol.parse_frame_header("4096x4096x3") == (4096, 4096)
    assert protocol.parse_frame_header(" 640X480x3 ") == (640, 480)
    for bad, status in (("4097x1x3", 413), ("1x4097x3", 413), ("0x0x3", 400), ("64x48x4", 400),
                        ("64x48", 400), ("-1x2x3", 400), ("9" * 12 + "x1x3", 400)):
        with pytest.raises(ProtocolError) as err:
            protocol.parse_frame_header(bad)
        assert err.value.status == status and "X-Frame" in err.value.message
    assert protocol.MAX_FRAME_BYTES == 4096 * 4096 * 3


def test_telemetry_is_numbers_only_and_keeps_nan_and_inf():
    tel = protocol.parse_telemetry("lap=1;speed=-2.5;x=1e+30;bad=nan;far=inf;neg=-inf;;")
    assert {k: tel[k] for k in ("lap", "speed", "x")} == {"lap": 1.0, "speed": -2.5, "x": 1e30}
    assert math.isnan(tel["bad"]) and tel["far"] == math.inf and tel["neg"] == -math.inf
    assert protocol.parse_telemetry(None) == {} and protocol.parse_telemetry("") == {}
    with pytest.raises(TelemetryError, match="'surface' is not a number: 'road'"):
        protocol.parse_telemetry("lap=1;surface=road")
    with pytest.raises(TelemetryError, match="name=value"):
        protocol.parse_telemetry("lap=1;junk")
    with pytest.raises(TelemetryError) as err:
        protocol.parse_telemetry("a=1;" * 2000)
    assert err.value.status == 431
    assert issubclass(TelemetryError, ValueError)  # the env's profile errors stay ValueErrors


def test_index_and_done_headers():
    assert protocol.parse_index(None) is None and protocol.parse_index(" 42 ") == 42
    assert protocol.parse_done("7") == 7 and protocol.parse_done(None) is None
    for bad in ("-1", "1.5", "x", "1" * 20):
        with pytest.raises(ProtocolError, match="X-KartPilot-Done"):
            protocol.parse_done(bad)


def test_answers_always_carry_the_16_keys():
    assert set(NEUTRAL) == set(act.N64_KEYS) and not any(NEUTRAL.values())
    assert json.loads(protocol.encode_answer({"X_AXIS": 40, "A_BUTTON": 1})) == {**NEUTRAL, "X_AXIS": 40,
                                                                                 "A_BUTTON": 1}
    assert json.loads(protocol.encode_answer(act.NEUTRAL)) == NEUTRAL
    with_cmd = json.loads(protocol.encode_answer(act.NEUTRAL, "reset", 12))
    assert with_cmd == {**NEUTRAL, "CMD": "reset", "CMD_ID": 12}
    with pytest.raises(ValueError, match="X_AXSI"):
        protocol.encode_answer({"X_AXSI": 3})


def test_json_safe_turns_non_finite_into_null():
    data = {"a": math.nan, "b": [1.0, math.inf, np.float32("-inf")], "c": {"d": 2.5, "e": "x"}, "f": None}
    clean = protocol.json_safe(data)
    assert clean == {"a": None, "b": [1.0, None, None], "c": {"d": 2.5, "e": "x"}, "f": None}
    json.dumps(clean, allow_nan=False)


# --------------------------------------------------------------------------- commands
def test_command_stays_pending_until_done_reaches_its_id():
    cmds = Commands()
    cid = cmds.request(2, "reset")
    assert cmds.request(2, "reset") == cid  # already pending: same id
    assert cmds.pending(0) == (None, None)
    assert cmds.pending(2) == ("reset", cid) and cmds.pending(2) == ("reset", cid)
    cmds.seen(2, None)
    cmds.seen(2, cid - 1)  # an older command's id: not this one
    assert cmds.status(2) == "pending" and cmds.state()["2"]["sent"] == 2
    cmds.seen(2, cid)
    assert cmds.status(2) == "confirmed" and cmds.pending(2) == (None, None)
    assert cmds.state()["2"]["state"] == "confirmed"
    nxt = cmds.request(2, "reset")
    assert nxt > cid and cmds.pending(2) == ("reset", nxt)
    with pytest.raises(ValueError, match="unknown command"):
        cmds.request(0, "reset\x00x")
    with pytest.raises(ProtocolError):
        cmds.request(4, "reset")


def test_command_never_confirmed_stops_after_max_sends():
    cmds = Commands(max_sends=3)
    cid = cmds.request(0, "save")
    assert [cmds.pending(0) for _ in range(4)] == [("save", cid)] * 3 + [(None, None)]
    assert cmds.status(0) == "unconfirmed" and cmds.state()["0"]["sent"] == 3


def test_ids_are_unique_and_follow_the_clock():
    import time

    first, second = Commands(), Commands()
    ids = [first.request(0, "reset"), second.request(0, "reset"), first.request(1, "save")]
    assert ids == sorted(set(ids)) and ids[0] >= int(time.time()) % (1 << 30) - 1
    assert ids[-1] < 1 << 31  # fits a 32-bit int in the plugin's JSON parser


class ContractPlugin:
    """The plugin's side of the confirmed-command contract, over one keep-alive connection:
    carry out CMD (exact "reset"/"save") when its CMD_ID differs from the last carried out,
    then send ``X-KartPilot-Done: <last id>`` on every later request. ``drop`` answers are
    ignored as if lost to a timeout."""

    def __init__(self, host, port, controller=0):
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        self.controller = controller
        self.done: int | None = None
        self.carried_out: list[tuple[str, int]] = []
        self.drop = 0

    def poll(self, frame=None):
        frame = np.zeros((8, 8, 3), np.uint8) if frame is None else frame
        h, w = frame.shape[:2]
        headers = {"X-Frame": f"{w}x{h}x3", "X-Frame-Index": "1"}
        if self.done is not None:
            headers[protocol.DONE_HEADER] = str(self.done)
        self.conn.request("POST", f"/{self.controller}", frame.tobytes(), headers)
        resp = self.conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 200, answer
        if self.drop:
            self.drop -= 1
            return answer
        cmd, cid = answer.get("CMD"), answer.get("CMD_ID")
        if cmd in protocol.COMMANDS and cid != self.done:
            self.carried_out.append((cmd, cid))
            self.done = cid
        return answer

    def close(self):
        self.conn.close()


@pytest.fixture
def bridge():
    from envs.mupen.bridge import Bridge

    b = Bridge(hold_s=0.05)  # nobody takes the polls: the bridge answers each itself after the hold
    yield b
    b.close()


def test_bridge_resends_a_lost_command_until_confirmed(bridge):
    plugin = ContractPlugin(bridge.host, bridge.port)
    try:
        plugin.poll()
        poll = bridge.next_poll(1)
        assert poll.answer({}, cmd="reset") is False  # expired already; the command is pending anyway
        plugin.drop = 2  # two answers lost to a timeout
        answers = [plugin.poll() for _ in range(5)]
        cid = bridge.commands.state()["0"]["id"]
        assert [(a.get("CMD"), a.get("CMD_ID")) for a in answers] == [("reset", cid)] * 3 + [(None, None)] * 2
        assert plugin.carried_out == [("reset", cid)]  # once, although sent three times
        assert bridge.commands.status(0) == "confirmed"
    finally:
        plugin.close()


# --------------------------------------------------------------------------- both servers, one rule
@contextlib.contextmanager
def drive_server(tmp_path):
    from drive.app import create_app
    from drive.pilot import Pilot
    from drive.server import Server

    # human mode with no gamepad: the answer is neutral input, no model needed
    pilot = Pilot(None, mode="human", sessions_dir=tmp_path / "sessions")
    srv = Server(create_app(pilot), "127.0.0.1", 0, 4).start()
    try:
        yield srv.host, srv.port
    finally:
        srv.close()
        pilot.close()


@contextlib.contextmanager
def bridge_server(tmp_path):
    from envs.mupen.bridge import Bridge

    b = Bridge(hold_s=0.05)
    try:
        yield b.host, b.port
    finally:
        b.close()


SERVERS = {"drive": drive_server, "bridge": bridge_server}


def _post(host, port, headers, body):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/1", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("server", SERVERS)
def test_both_servers_follow_one_rule(server, tmp_path):
    with SERVERS[server](tmp_path) as (host, port):
        frame = bytes(4 * 2 * 3)
        status, body = _post(host, port, {"X-Frame": "4x2x3", "X-Telemetry": "lap=2;speed=nan"}, frame)
        assert status == 200 and json.loads(body) == NEUTRAL  # the neutral answer: 16 keys
        status, body = _post(host, port, {"X-Frame": "4x2x3", "X-Telemetry": "lap=2;surface=road"}, frame)
        assert status == 400 and b"'surface' is not a number" in body
        status, body = _post(host, port, {"X-Frame": "4097x1x3"}, b"")
        assert status == 413 and b"1..4096" in body
        status, body = _post(host, port, {"X-Frame": "4x2x3", protocol.DONE_HEADER: "soon"}, frame)
        assert status == 400 and b"X-KartPilot-Done" in body


def test_nan_telemetry_keeps_api_state_valid_json(tmp_path):
    def strict(text):  # no NaN / Infinity literals
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"/api/state has bare {c}"))

    with drive_server(tmp_path) as (host, port):
        status, _ = _post(host, port, {"X-Frame": "4x2x3", "X-Telemetry": "lap=1;speed=nan;far=-inf"},
                          bytes(24))
        assert status == 200
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/api/state")
        resp = conn.getresponse()
        state = strict(resp.read().decode())
        conn.close()
    assert resp.status == 200 and state["ports"]["1"]["telemetry"] == {"lap": 1.0, "speed": None, "far": None}


def test_largest_frame_is_accepted_by_both(tmp_path):
    big = bytes(4096 * 4096 * 3)
    for server in SERVERS.values():
        with server(tmp_path) as (host, port):
            status, body = _post(host, port, {"X-Frame": "4096x4096x3"}, big)
            assert status == 200 and json.loads(body) == NEUTRAL


def test_drive_answers_carry_a_pending_reset_until_confirmed(tmp_path):
    from drive.app import create_app
    from drive.pilot import Pilot
    from drive.server import Server

    pilot = Pilot(None, mode="human", sessions_dir=tmp_path / "sessions")
    srv = Server(create_app(pilot), "127.0.0.1", 0, 4).start()
    plugins = [ContractPlugin(srv.host, srv.port, c) for c in (0, 1)]
    try:
        for p in plugins:
            p.poll()
        assert pilot.request_reset() == [0, 1]  # the ports that have polled
        cid0 = pilot.state()["commands"]["0"]["id"]
        plugins[0].drop = 1  # the first answer carrying the reset is lost
        first = plugins[0].poll()
        assert (first["CMD"], first["CMD_ID"]) == ("reset", cid0)
        state = pilot.state()["commands"]
        assert state["0"]["state"] == "pending" and state["1"]["state"] == "pending"
        second = plugins[0].poll()
        assert (second["CMD"], second["CMD_ID"]) == ("reset", cid0)  # re-sent, same id
        third = plugins[0].poll()  # carries X-KartPilot-Done: cid0
        assert "CMD" not in third and pilot.state()["commands"]["0"]["state"] == "confirmed"
        assert plugins[0].carried_out == [("reset", cid0)]
        assert pilot.state()["commands"]["1"]["state"] == "pending"  # port 1 has not polled since
        plugins[1].poll()
        plugins[1].poll()
        assert pilot.state()["commands"]["1"]["state"] == "confirmed"
        assert plugins[1].carried_out[0][1] != cid0  # unique per command
    finally:
        for p in plugins:
            p.close()
        srv.close()
        pilot.close()


def test_bridge_threads_answer_concurrent_controllers(bridge):
    """Four controllers polling at once through the bridge each get their own pending command."""
    for c in range(4):
        bridge.commands.request(c, "save")
    seen: dict = {}

    def run(c):
        p = ContractPlugin(bridge.host, bridge.port, c)
        try:
            for _ in range(3):
                p.poll()
            seen[c] = p.carried_out
        finally:
            p.close()

    threads = [threading.Thread(target=run, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [seen[c][0][1] for c in range(4)]
    assert all(len(seen[c]) == 1 and seen[c][0][0] == "save" for c in range(4)) and len(set(ids)) == 4
    assert all(bridge.commands.status(c) == "confirmed" for c in range(4))
