"""The policy runner: one poll in, one answer out.

``Pilot.answer`` is the hot path shared by GET and POST: read the human's
input, decide who drives (drive.modes), run the compiled Policy on
``common.frames.to_model_input(frame)`` when needed, hand frames to the
background session writers, and encode the input-bot JSON. Everything the
dashboard shows is a cheap reference kept here.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from common import action as act
from common.frames import to_model_input
from common.protocol import CONTROLLERS, Commands, encode_answer, json_safe
from drive import modes
from drive.recording import Corrections, PluginRecording, ShadowLog
from drive.stats import Stats


class Pilot:
    """Answers polls for up to 4 controllers; the gamepad belongs to ``human_port``.

    ``policy``: a callable ``(66, 200, 3) uint8 -> (5,)`` action (``train.policy.Policy``).
    ``gamepad``: an object with ``read() -> (action, lb_held)`` (common.gamepad.Gamepad), or None.
    """

    def __init__(self, policy, *, gamepad=None, human_port: int = 0, mode: str = "ai",
                 sessions_dir: str | Path = "data/sessions", trim_s: float = 0.3,
                 meta: dict | None = None, model_path: str | None = None,
                 shadow_dir: str | Path | None = None):
        if mode not in modes.MODES:
            raise ValueError(f"mode must be one of {modes.MODES}, got {mode!r}")
        if not 0 <= human_port < CONTROLLERS:
            raise ValueError(f"human port must be 0..{CONTROLLERS - 1}, got {human_port}")
        self.policy = policy
        self.gamepad = gamepad
        self.human_port = human_port
        self.model_path = model_path
        self._mode = mode
        meta = {"game": "unknown", "rate_hz": 60, **(meta or {})}
        self.override = modes.Override(trim_s)
        self.corrections = Corrections(sessions_dir, meta, trim_s)
        self.recording = PluginRecording(sessions_dir, meta)
        # shadow logs are not sessions: beside the sessions folder (data/sessions -> data/shadow)
        self.shadow = ShadowLog(shadow_dir if shadow_dir is not None else Path(sessions_dir).parent / "shadow")
        self.stats = Stats()
        self.commands = Commands()  # CMD reset: pending until the plugin confirms it (X-KartPilot-Done)
        self._override_lock = threading.Lock()
        self._mode_lock = threading.Lock()
        # Latest poll per port, for the dashboard: (frame, ai, human, sent, driver, index, telemetry, t)
        self.view: list[tuple | None] = [None] * CONTROLLERS
        self.lb_held = False
        self.started = time.monotonic()

    # -- control (dashboard, gamepad) -------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> str:
        if mode not in modes.MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {', '.join(modes.MODES)}")
        with self._mode_lock:
            self._mode = mode
        return mode

    def cycle_mode(self) -> str:
        with self._mode_lock:
            self._mode = modes.next_mode(self._mode)
            return self._mode

    def request_reset(self, ports=None) -> list[int]:
        """Every answer to each port carries ``"CMD": "reset"`` and its ``"CMD_ID"`` until the
        plugin confirms it (``X-KartPilot-Done``). Default: the ports that have polled (else all)."""
        if ports is None:
            ports = [p for p, v in enumerate(self.view) if v is not None] or list(range(CONTROLLERS))
        ports = [int(p) for p in ports]
        for p in ports:
            if not 0 <= p < CONTROLLERS:
                raise ValueError(f"port {p} out of range 0..{CONTROLLERS - 1}")
        for p in ports:
            self.commands.request(p, "reset")
        return ports

    # -- the hot path -----------------------------------------------------------------
    def human_input(self, controller: int) -> tuple[np.ndarray, bool]:
        if controller != self.human_port or self.gamepad is None:
            return act.NEUTRAL, False
        action, lb = self.gamepad.read()
        return action, bool(lb)

    def answer(self, controller: int, frame: np.ndarray, *, index: int | None = None,
               telemetry: dict | None = None, posted: bool = True, done: int | None = None) -> bytes:
        """``done``: the poll's X-KartPilot-Done (the last command id the plugin carried out)."""
        now = time.monotonic()
        self.commands.seen(controller, done)
        human, lb = self.human_input(controller)
        mode = self._mode
        if controller == self.human_port:
            self.lb_held = lb
            with self._override_lock:
                past_trim = self.override.update(lb and mode == "ai", now)
        else:
            past_trim = False
        d = modes.decide(mode, lb, past_trim)
        ai = self.policy(to_model_input(frame)) if d.run_ai else None
        sent = ai if d.use_ai else human
        if d.correction:
            self.corrections.save(frame, human, now)
        elif mode == "human" and posted and controller == self.human_port and self.recording.on:
            self.recording.save(frame, sent, now)
        if mode == "shadow" and ai is not None:
            self.shadow.log(now, controller, index, ai, human)
        self.view[controller] = (frame, ai, human, sent, d.driver, index, telemetry, now)
        return encode_answer(sent, *self.commands.pending(controller))

    # -- dashboard --------------------------------------------------------------------
    def latest_frame(self) -> np.ndarray | None:
        """The human port's latest frame, else the most recent of any port."""
        view = self.view[self.human_port]
        if view is None:
            seen = [v for v in self.view if v is not None]
            view = max(seen, key=lambda v: v[-1]) if seen else None
        return None if view is None else view[0]

    def state(self) -> dict:
        """What the dashboard shows; plain JSON data (NaN/Inf telemetry is None: missing)."""
        ports = {}
        for port, view in enumerate(self.view):
            if view is None:
                continue
            frame, ai, human, sent, driver, index, telemetry, t = view
            ports[str(port)] = {
                "ai": None if ai is None else [round(float(v), 4) for v in ai],
                "human": [round(float(v), 4) for v in human],
                "sent": [round(float(v), 4) for v in sent],
                "driver": driver,
                "frame_index": index,
                "frame_shape": list(frame.shape),
                "telemetry": telemetry or {},
                "age_s": round(time.monotonic() - t, 3),
            }
        return json_safe({
            "mode": self._mode,
            "modes": list(modes.MODES),
            "human_port": self.human_port,
            "gamepad": self.gamepad is not None,
            "lb_held": self.lb_held,
            "takeovers": self.override.takeovers,
            "model": self.model_path,
            "corrections": self.corrections.summary(),
            "recording": self.recording.summary(),
            "shadow_rows": self.shadow.rows,
            "commands": self.commands.state(),
            "ports": ports,
            "uptime_s": round(time.monotonic() - self.started, 1),
            **self.stats.snapshot(),
        })

    def close(self) -> dict:
        """Finish every session; returns what was written."""
        return {
            "corrections": self.corrections.close(takeovers=self.override.takeovers),
            "recording": self.recording.stop(),
            "recordings": self.recording.finished,
            "shadow": self.shadow.close(),
        }
