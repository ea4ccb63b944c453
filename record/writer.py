"""Capture decoupled from encoding: a bounded queue in front of writer threads.

The capture loop calls :meth:`FrameWriter.offer`, which never blocks: a frame
that does not fit in the queue is counted as dropped. Encoder threads write the
PNGs (several may run at once); rows are committed in frame order, each after
its image is on disk, so a kill -9 leaves every row with its image.
A full disk (ENOSPC) stops the writer cleanly: what was written stays loadable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from pathlib import Path

from dataset.session import SessionWriter

_STOP = object()


def _set_nice(nice: int) -> None:
    """This thread's nice value (Linux threads have their own)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class FrameWriter:
    def __init__(self, session: SessionWriter, *, queue_size: int = 128, threads: int = 2, nice: int = 0):
        """``nice`` > 0 lowers the encoder threads' priority. The recorder leaves it at 0: it
        raises the capture thread instead, and starved encoders would only drop frames."""
        self._init_counts(session)
        self._nice = nice
        self.q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._threads = [
            threading.Thread(target=self._run, name=f"frame-writer-{i}", daemon=True)
            for i in range(max(1, threads))
        ]
        for th in self._threads:
            th.start()

    def _init_counts(self, session: SessionWriter) -> None:
        self.session = session
        self.dropped_full = 0  # offered while the queue was full (capture thread only)
        self.lost = 0  # accepted but never written: disk full, error (under _lock)
        self.written = 0  # rows committed
        self.error: str | None = None  # why the writer stopped early (disk full, ...)
        self._next_index = 0  # index given to the next kept frame
        self._next_row = 0  # index of the next row to commit
        self._done: dict[int, tuple] = {}  # encoded frames waiting for their turn
        self._failed_from: int | None = None  # first index that could not be written
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Frames captured but not kept, for any reason."""
        return self.dropped_full + self.lost

    @property
    def failed(self) -> bool:
        return self.error is not None

    def pending(self) -> int:
        return self.q.qsize()

    def offer(self, frame, action, driver: str, t: float, *, block: bool = False) -> bool:
        """Queue one captured frame; False (and counted as dropped) if it cannot be kept.

        ``block=False`` (real-time capture) never waits; ``block=True`` (--fast
        sim recording) waits for room instead of dropping, unless the writer failed.
        """
        while True:
            if self.error is not None:
                self.dropped_full += 1
                return False
            try:
                self.q.put((self._next_index, frame, action, driver, t), block=block, timeout=0.2)
                break
            except queue.Full:
                if not block:
                    self.dropped_full += 1
                    return False
        self._next_index += 1
        return True

    def _run(self) -> None:
        if self._nice:
            _set_nice(self._nice)
        while True:
            item = self.q.get()
            if item is _STOP:
                return
            idx, frame, action, driver, t = item
            if self._failed_from is not None and idx > self._failed_from:
                with self._lock:
                    self.lost += 1  # behind a failed frame: its row could never follow in order
                continue
            try:
                name = self.session.write_image(frame, idx)
            except OSError as exc:
                self._fail(idx, exc)
                continue
            self._commit(idx, (name, action, driver, t))

    def _fail(self, idx: int, exc: OSError) -> None:
        with self._lock:
            if self._failed_from is None or idx < self._failed_from:
                self._failed_from = idx
            self.lost += 1
            if self.error is None:
                self.error = ("disk full (ENOSPC)" if exc.errno == errno.ENOSPC else str(exc)) + \
                    f" while writing frame {idx} in {self.session.path}"

    def _commit(self, idx: int, row: tuple) -> None:
        with self._lock:  # one thread at a time appends rows, in frame order
            self._done[idx] = row
            while self._next_row in self._done:
                if self._failed_from is not None and self._next_row >= self._failed_from:
                    break  # left in _done: close() counts them and removes their images
                name, action, driver, t = self._done[self._next_row]
                try:
                    self.session.add_row(self._next_row, name, action, driver, t=t)
                except OSError as exc:
                    self._failed_from = self._next_row
                    self.error = self.error or f"{exc} while writing {self.session.path}/frames.csv"
                    break
                del self._done[self._next_row]
                self._next_row += 1
                self.written += 1

    def close(self) -> dict:
        """Drain the queue, stop the threads, close the session; returns counts."""
        for _ in self._threads:
            self.q.put(_STOP)
        for th in self._threads:
            th.join()
        return self._finish()

    def _finish(self) -> dict:
        with self._lock:
            orphans = list(self._done)
            self.lost += len(orphans)
            self._done.clear()
        for idx in orphans:  # images whose row could not follow (after a failed frame)
            (Path(self.session.path) / self.session.image_name(idx)).unlink(missing_ok=True)
        try:
            self.session.close()
        except OSError as exc:
            self.error = self.error or f"{exc} while closing {self.session.path}"
        return {"written": self.written, "dropped": self.dropped, "error": self.error}
