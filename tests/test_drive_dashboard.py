"""The live dashboard in Debian's headless Chromium, driven over the DevTools protocol.

Chromium runs with --remote-debugging-pipe (CDP messages on fds 3/4), so no
WebDriver or websocket library is needed. The page must show the live frame,
the AI and human sticks, mode, req/s and the latency histogram, and its mode
buttons must switch the server's mode.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from drive.client import DriveClient
from drive.pilot import Pilot
from drive.stats import EDGES_MS
from testing.drive import pattern_frame, serving
from testing.models import constant_pilotnet

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="Debian's chromium is not installed"),
]


class Chromium:
    """Headless Chromium with a DevTools pipe: ``evaluate(js)`` in one page."""

    def __init__(self, profile_dir):
        cmd_r, self._cmd_w = os.pipe()
        self._resp_r, resp_w = os.pipe()

        def wire_fds():  # the child reads commands on fd 3 and writes replies on fd 4
            a, b = os.dup(cmd_r), os.dup(resp_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile_dir}", "--remote-debugging-pipe", "--window-size=1200,900", "about:blank"],
            preexec_fn=wire_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(resp_w)
        self._buf = b""
        self._id = 0
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = end - time.monotonic()
            assert left > 0 and select.select([self._resp_r], [], [], left)[0], f"chromium did not answer {method}"
            chunk = os.read(self._resp_r, 1 << 20)
            assert chunk, "chromium closed the DevTools pipe"
            self._buf += chunk

    def page(self, method: str, **params) -> dict:
        return self.send(method, self.session, **params)

    def evaluate(self, js: str):
        res = self.page("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page JS failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, js: str, timeout: float = 20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.evaluate(js)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"page never satisfied: {js}")

    def close(self) -> None:
        with contextlib.suppress(AssertionError, RuntimeError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._resp_r)


@pytest.fixture(scope="module")
def policy():
    from train.policy import Policy

    return Policy(constant_pilotnet([0.75, -0.25, 1.0, 0.0, 1.0]))


def test_dashboard_is_live_and_switches_modes(policy, tmp_path):
    pilot = Pilot(policy, sessions_dir=tmp_path / "sessions")
    stop = threading.Event()

    def game(port):  # a steady 30 Hz client, like the plugin: NaN/Inf telemetry, confirms commands
        with DriveClient("127.0.0.1", port) as cli:
            i, done = 0, {}
            while not stop.is_set():
                status, body = cli.post(0, pattern_frame(i % 50, 240, 320), index=i,
                                        telemetry="lap=0;speed=nan;boost=inf", headers=done)
                assert status == 200
                if "CMD_ID" in json.loads(body):
                    done = {"X-KartPilot-Done": str(json.loads(body)["CMD_ID"])}
                i += 1
                time.sleep(1 / 30)

    with serving(pilot) as srv:
        feeder = threading.Thread(target=game, args=(srv.port,), daemon=True)
        feeder.start()
        browser = Chromium(tmp_path / "chromium-profile")
        try:
            browser.page("Page.enable")
            browser.page("Page.navigate", url=f"{srv.url}/")
            browser.wait_for("document.getElementById('mode') && document.getElementById('mode').textContent === 'ai'")
            browser.wait_for("Number(document.getElementById('rps').textContent) > 5")
            # NaN/Inf telemetry: /api/state stays valid JSON, the page stays live and shows them as missing
            cell = "document.querySelector('#telemetry td[data-name=%s]')"
            browser.wait_for(f"{cell % 'speed'} && {cell % 'speed'}.textContent === 'missing'")
            assert browser.evaluate(f"{cell % 'boost'}.textContent") == "missing"
            assert browser.evaluate(f"{cell % 'lap'}.textContent") == "0"
            assert browser.evaluate("document.getElementById('conn').textContent") == "live"
            first = int(browser.evaluate("document.getElementById('requests').textContent"))
            # the frame keeps refreshing and is the posted frame's size
            browser.wait_for("Number(document.getElementById('frame').dataset.loaded) >= 3")
            assert browser.evaluate("document.getElementById('frame').naturalWidth") == 320
            assert "240x320" in browser.evaluate("document.getElementById('frame-info').textContent")  # HxW
            # sticks: AI's at x=0.75, human's neutral (no gamepad)
            ai_x = float(browser.wait_for("document.getElementById('stick-ai').dataset.x"))
            assert ai_x == pytest.approx(0.75, abs=0.02)
            assert float(browser.evaluate("document.getElementById('stick-human').dataset.x")) == 0.0
            assert browser.evaluate("document.getElementById('btn-ai').textContent") == "A R"
            # latency histogram: one bar per bucket, counts match the server's
            bars = browser.wait_for(
                "Array.from(document.querySelectorAll('#histogram .bar')).map(b => Number(b.dataset.count))")
            assert len(bars) == len(EDGES_MS) + 1 and sum(bars) >= first
            browser.wait_for(f"Number(document.getElementById('requests').textContent) > {first}")  # live
            assert browser.evaluate("document.getElementById('latency').textContent").count("/") == 1

            # reset: shown pending until the client confirms it, then confirmed
            browser.evaluate("document.getElementById('reset').click()")
            browser.wait_for("document.getElementById('reset-state').textContent.includes('reset confirmed')")
            assert pilot.state()["commands"]["0"]["state"] == "confirmed"
            pilot.request_reset([2])  # nothing polls port 2: it stays pending, and says so
            browser.wait_for("document.getElementById('reset-state').textContent.includes('port 2: reset pending')")

            browser.evaluate("document.querySelector('#mode-buttons [data-mode=shadow]').click()")
            browser.wait_for("document.getElementById('mode').textContent === 'shadow'")
            assert pilot.mode == "shadow"
            browser.wait_for("document.getElementById('driver').textContent === 'human'")
            browser.evaluate("document.querySelector('#mode-buttons [data-mode=ai]').click()")
            browser.wait_for("document.getElementById('mode').textContent === 'ai'")
            assert pilot.mode == "ai"

            shot = base64.b64decode(browser.page("Page.captureScreenshot", format="png")["data"])
            (tmp_path / "dashboard.png").write_bytes(shot)
            assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
        finally:
            browser.close()
            stop.set()
            feeder.join(5)
    pilot.close()
    assert pilot.stats.errors == 0
    assert np.isfinite(pilot.stats.snapshot()["latency_ms"]["p99"])
