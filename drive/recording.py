"""Sessions written while driving: corrections (source ``correction``) and
plugin recordings (source ``plugin``), plus the shadow-mode log.

PNG encoding takes milliseconds, far too long for a poll, so each session is
written by background threads fed through a bounded queue: one thread owns the
SessionWriter's rows, encoder threads only write images. When the disk cannot
keep up, frames are dropped and counted (meta ``dropped``) rather than
delaying the game.
"""

from __future__ import annotations

import csv
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dataset.session import SessionWriter

_STOP = object()


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"


class SessionSink:
    """A session folder written off the request path. ``put`` never blocks.

    One thread owns the SessionWriter and appends rows in poll order; PNG
    encoding (the slow part, zlib releases the GIL) runs on ``encoders``
    threads through ``SessionWriter.write_image``, so a 60 Hz recording keeps up.
    """

    def __init__(self, path: Path, meta: dict, queue_size: int = 128, encoders: int = 2):
        self.path = Path(path)
        self.meta = dict(meta)
        self.frames = 0
        self.dropped = 0
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._writer: SessionWriter | None = None
        self._pool = ThreadPoolExecutor(encoders, thread_name_prefix=f"png-{self.path.name}")
        self._pending: deque = deque()  # (future, index, action, driver, t) in poll order
        self._encoders = encoders
        self._thread = threading.Thread(target=self._run, name=f"session-{self.path.name}", daemon=True)
        self._thread.start()

    def put(self, frame: np.ndarray, action: np.ndarray, driver: str, t: float) -> bool:
        try:
            self._queue.put_nowait((frame, action, driver, t))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _rows(self, all_: bool = False) -> None:
        """Append the rows of encoded images, oldest first (all of them when ``all_``)."""
        while self._pending and (all_ or self._pending[0][0].done() or len(self._pending) > 2 * self._encoders):
            fut, index, action, driver, t = self._pending.popleft()
            try:
                self._writer.add_row(index, fut.result(), action, driver, t=t)
                self.frames += 1
            except Exception as exc:  # a full disk must not take the server down
                self.error = f"{self.path}: {exc}"
                self.dropped += 1

    def _run(self) -> None:
        index = 0
        while True:
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._rows()
                continue
            if item is _STOP:
                break
            frame, action, driver, t = item
            try:
                if self._writer is None:  # created on the first frame: its size is the resolution
                    self._writer = SessionWriter(self.path, {**self.meta, "resolution": list(frame.shape[:2])})
                self._pending.append((self._pool.submit(self._writer.write_image, frame, index),
                                      index, action, driver, t))
                index += 1
            except Exception as exc:
                self.error = f"{self.path}: {exc}"
                self.dropped += 1
            self._rows()
        self._rows(all_=True)
        self._pool.shutdown()

    def close(self, timeout: float = 60.0, **extra_meta) -> dict:
        """Drain the queue, finish the session, return a summary."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._writer is not None:
            self._writer.update_meta(frames=self.frames, dropped=self.dropped, **extra_meta)
            self._writer.close()
        return {"path": str(self.path) if self._writer else None, "frames": self.frames,
                "dropped": self.dropped, "error": self.error}


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
                self.sink = SessionSink(self.sessions_dir / f"correction-{stamp()}", self.meta)
        self.sink.put(frame, human, "correction", t)

    def summary(self) -> dict:
        sink = self.sink
        return {"path": str(sink.path) if sink else None, "frames": sink.frames if sink else 0,
                "dropped": sink.dropped if sink else 0}

    def close(self, takeovers: int = 0) -> dict:
        with self._lock:
            sink, self.sink = self.sink, None
        if sink is None:
            return {"path": None, "frames": 0, "dropped": 0, "error": None}
        return sink.close(takeovers=takeovers)


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
                self.sink = SessionSink(self.sessions_dir / f"plugin-{stamp()}", self.meta)
            return str(self.sink.path)

    def stop(self) -> dict | None:
        with self._lock:
            sink, self.sink = self.sink, None
        if sink is None:
            return None
        out = sink.close()
        self.finished.append(out)
        return out

    def save(self, frame: np.ndarray, sent: np.ndarray, t: float) -> None:
        sink = self.sink
        if sink is not None:
            sink.put(frame, sent, "human", t)

    def summary(self) -> dict:
        sink = self.sink
        return {"on": sink is not None, "path": str(sink.path) if sink else None,
                "frames": sink.frames if sink else 0, "dropped": sink.dropped if sink else 0}


class ShadowLog:
    """CSV of what the model would have done while the human drove (shadow mode)."""

    FIELDS = ("t", "controller", "frame_index",
              "ai_x", "ai_y", "ai_a", "ai_b", "ai_rb", "human_x", "human_y", "human_a", "human_b", "human_rb")

    def __init__(self, sessions_dir: str | Path):
        self.path = Path(sessions_dir) / f"shadow-{stamp()}.csv"
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
