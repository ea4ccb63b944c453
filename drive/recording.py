"""Sessions written while driving: corrections (source ``correction``) and
plugin recordings (source ``plugin``), plus the shadow-mode log.

PNG encoding takes milliseconds, far too long for a poll, so each session goes
through ``dataset.sink.SessionSink`` (the recorder's writer too): a bounded
queue in front of encoder threads, rows committed in order. When the disk cannot
keep up, frames are dropped and counted (meta ``dropped``) rather than delaying
the game; on a full disk the session stops at its last complete frame (see the
sink's failure rule) and ``error`` says so.

Shadow logs are not sessions: they go to their own folder (``data/shadow``
beside ``data/sessions``), so that every entry of the sessions folder is a session.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np

from dataset.sink import SessionSink

SHADOW_DIR = "data/shadow"


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"


def _sink(path: Path, meta: dict) -> SessionSink:
    """A session created at its first frame, off the request path."""
    return SessionSink((path, meta), queue_size=128, encoders=2)


def _close(sink: SessionSink, **extra_meta) -> dict:
    out = sink.close(extra_meta)
    return {"path": out["path"], "frames": out["written"], "dropped": out["dropped"], "error": out["error"]}


class Corrections:
    """Frames of LB overrides, saved with the human's action (driver ``correction``).

    One session per server run, created at the first saved frame under
    ``sessions_dir/correction-<stamp>``.
    """

    def __init__(self, sessions_dir: str | Path, meta: dict, trim_s: float):
        self.sessions_dir = Path(sessions_dir)
        self.meta = {**meta, "source": "correction", "trim_s": trim_s}
        self.sink: SessionSink | None = None
        self._lock = threading.Lock()

    def save(self, frame: np.ndarray, human: np.ndarray, t: float) -> None:
        with self._lock:
            if self.sink is None:
                self.sink = _sink(self.sessions_dir / f"correction-{stamp()}", self.meta)
        self.sink.offer(frame, human, "correction", t)

    def summary(self) -> dict:
        sink = self.sink
        return {"path": str(sink.path) if sink else None, "frames": sink.written if sink else 0,
                "dropped": sink.dropped if sink else 0, "error": sink.error if sink else None}

    def close(self, takeovers: int = 0) -> dict:
        with self._lock:
            sink, self.sink = self.sink, None
        if sink is None:
            return {"path": None, "frames": 0, "dropped": 0, "error": None}
        return _close(sink, takeovers=takeovers)


class PluginRecording:
    """Human-mode recording of the exact frames the plugin posts and the inputs answered."""

    def __init__(self, sessions_dir: str | Path, meta: dict):
        self.sessions_dir = Path(sessions_dir)
        self.meta = {**meta, "source": "plugin"}
        self.sink: SessionSink | None = None
        self._lock = threading.Lock()
        self.finished: list[dict] = []

    @property
    def on(self) -> bool:
        return self.sink is not None

    def start(self) -> str:
        with self._lock:
            if self.sink is None:
                self.sink = _sink(self.sessions_dir / f"plugin-{stamp()}", self.meta)
            return str(self.sink.path)

    def stop(self) -> dict | None:
        with self._lock:
            sink, self.sink = self.sink, None
        if sink is None:
            return None
        out = _close(sink)
        self.finished.append(out)
        return out

    def save(self, frame: np.ndarray, sent: np.ndarray, t: float) -> None:
        sink = self.sink
        if sink is not None:
            sink.offer(frame, sent, "human", t)

    def summary(self) -> dict:
        sink = self.sink
        return {"on": sink is not None, "path": str(sink.path) if sink else None,
                "frames": sink.written if sink else 0, "dropped": sink.dropped if sink else 0,
                "error": sink.error if sink else None}


class ShadowLog:
    """CSV of what the model would have done while the human drove (shadow mode)."""

    FIELDS = ("t", "controller", "frame_index",
              "ai_x", "ai_y", "ai_a", "ai_b", "ai_rb", "human_x", "human_y", "human_a", "human_b", "human_rb")

    def __init__(self, shadow_dir: str | Path = SHADOW_DIR):
        self.path = Path(shadow_dir) / f"shadow-{stamp()}.csv"
        self.rows = 0
        self._lock = threading.Lock()
        self._fh = None
        self._last_flush = 0.0

    def log(self, t: float, controller: int, index: int | None, ai: np.ndarray, human: np.ndarray) -> None:
        row = [f"{t:.6f}", controller, "" if index is None else index,
               *(f"{v:.4f}" for v in ai), *(f"{v:.4f}" for v in human)]
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "w", newline="")
                self._csv = csv.writer(self._fh)
                self._csv.writerow(self.FIELDS)
            self._csv.writerow(row)
            self.rows += 1
            if t - self._last_flush > 1.0:  # flushed about once a second, not per poll
                self._fh.flush()
                self._last_flush = t

    def close(self) -> dict:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        return {"path": str(self.path) if self.rows else None, "rows": self.rows}
