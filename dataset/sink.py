"""The one background session writer: record and drive both write sessions through it.

Capture (the recorder's clock loop, the drive server's request path) calls
:meth:`SessionSink.offer`, which never waits on the disk: a frame that does not
fit in the bounded queue is counted as dropped. Encoders write the PNGs, several
at once (threads here, or processes in :class:`ProcessSessionSink`); the rows are
committed in frame order by :class:`dataset.session.SessionWriter`, each after
its image is on disk, so a kill -9 leaves every row with its image.

The failure rule, the same for every caller: the first error writing an image
or a row (a full disk, ENOSPC, or any other) stops the sink.

* the row that failed is not in ``frames.csv`` (SessionWriter cuts it back out);
* frames offered afterwards are refused (``dropped_full``), frames accepted but
  never committed are counted (``lost``): ``written + dropped`` is what was offered;
* images that were written but can never get their row (the failed frame's and
  those behind it) are removed at :meth:`SessionSink.close`, so after any failure
  the rows and the images agree: every row has its image, every image its row;
* ``error`` says what happened and names the session.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from dataset.session import SessionError, SessionWriter, save_image

_STOP = object()


def _set_nice(nice: int) -> None:
    """This thread's nice value (Linux threads have their own)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk full (ENOSPC)"
    return str(exc)


class SessionSink:
    """A session written off the capture path by encoder threads.

    ``session`` is an open :class:`SessionWriter` (numbering continues from its
    ``count``), or ``(path, meta)``: the session is then created by the encoders at
    the first frame, with that frame's ``resolution``, so nothing touches the disk
    on the caller's thread. ``nice`` > 0 lowers the encoder threads' priority.
    """

    def __init__(self, session: SessionWriter | tuple[str | os.PathLike, dict], *, queue_size: int = 128,
                 encoders: int = 2, nice: int = 0):
        self._init_state(session)
        self._nice = nice
        self.q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._threads = [
            threading.Thread(target=self._run, name=f"session-encoder-{i}", daemon=True)
            for i in range(max(1, encoders))
        ]
        for th in self._threads:
            th.start()

    def _init_state(self, session) -> None:
        if isinstance(session, SessionWriter):
            self.session: SessionWriter | None = session
            self.path = Path(session.path)
            self._meta: dict | None = None
            start = session.count
        else:
            path, meta = session
            self.session, self.path, self._meta, start = None, Path(path), dict(meta), 0
        self.dropped_full = 0  # offered while the queue was full or after a failure (caller's thread)
        self.lost = 0  # accepted but never committed: disk full, error (under _lock)
        self.written = 0  # rows committed
        self.error: str | None = None  # why the sink stopped early (disk full, ...)
        self._next_index = start  # index given to the next kept frame
        self._next_row = start  # index of the next row to commit
        self._done: dict[int, tuple] = {}  # written images waiting for their turn
        self._failed_from: int | None = None  # first index that could not be committed
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Frames offered but not kept, for any reason."""
        return self.dropped_full + self.lost

    @property
    def failed(self) -> bool:
        return self.error is not None

    def pending(self) -> int:
        return self.q.qsize()

    def offer(self, frame, action, driver: str, t: float, *, block: bool = False) -> bool:
        """Queue one captured frame; False (and counted as dropped) if it cannot be kept.

        ``block=False`` (real time) never waits; ``block=True`` (--fast sim
        recording) waits for room instead of dropping, unless the sink failed.
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

    def _open(self, frame) -> SessionWriter:
        """The session, created at the first frame when it was given as (path, meta)."""
        with self._lock:
            if self.session is None:
                meta = {**self._meta, "resolution": list(np.shape(frame)[:2])}
                self.session = SessionWriter(self.path, meta)
            return self.session

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
                name = self._open(frame).write_image(frame, idx)
            except (OSError, SessionError) as exc:
                self._fail(idx, exc)
                continue
            self._commit(idx, (name, action, driver, t))

    def _fail(self, idx: int, exc: BaseException) -> None:
        """Frame ``idx`` could not be written: stop at it (its image, if any, is not kept)."""
        with self._lock:
            if self._failed_from is None or idx < self._failed_from:
                self._failed_from = idx
            self.lost += 1
            if self.error is None:
                self.error = f"{_describe(exc)} while writing frame {idx} in {self.path}"

    def _commit(self, idx: int, row: tuple) -> None:
        with self._lock:  # one thread at a time appends rows, in frame order
            self._done[idx] = row
            while self._next_row in self._done:
                if self._failed_from is not None and self._next_row >= self._failed_from:
                    break  # left in _done: close() counts them and removes their images
                name, action, driver, t = self._done[self._next_row]
                try:
                    self.session.add_row(self._next_row, name, action, driver, t=t)
                except (OSError, SessionError) as exc:  # the row is not in the file: see SessionWriter
                    self._failed_from = self._next_row
                    if self.error is None:
                        self.error = f"{_describe(exc)} while writing {self.path}/frames.csv (frame {self._next_row})"
                    break
                del self._done[self._next_row]
                self._next_row += 1
                self.written += 1

    def close(self, meta: dict | None = None) -> dict:
        """Drain the queue, stop the encoders, close the session. Its meta.json gets the
        counts ``frames`` (rows written) and ``dropped``, plus ``meta``. Returns ``path``
        (None when no frame ever arrived), ``written``, ``dropped`` and ``error``."""
        for _ in self._threads:
            self.q.put(_STOP)
        for th in self._threads:
            th.join()
        return self._finish(meta)

    def _finish(self, meta: dict | None) -> dict:
        with self._lock:
            orphans = list(self._done)
            self.lost += len(orphans)
            self._done.clear()
        for idx in orphans:  # images whose row could not follow (the failed frame and after)
            (self.path / self.session.image_name(idx)).unlink(missing_ok=True)
        if self.session is not None:
            try:
                self.session.update_meta(frames=self.written, dropped=self.dropped, **(meta or {}))
            except OSError as exc:  # a full disk: meta.json keeps its previous version
                self.error = self.error or f"{_describe(exc)} while updating {self.path}/meta.json"
            try:
                self.session.close()
            except OSError as exc:
                self.error = self.error or f"{_describe(exc)} while closing {self.path}"
        return {"path": str(self.path) if self.session is not None else None, "written": self.written,
                "dropped": self.dropped, "error": self.error}


def _encoder(task_q, result_q, shm_name: str, shape: tuple, session_path: str, ext: str, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the recorder decides
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray(shape, np.uint8, buffer=shm.buf)
    result_q.put("ready")
    try:
        while True:
            try:
                task = task_q.get(timeout=0.5)
            except queue.Empty:
                if os.getppid() != parent:  # the recorder died (kill -9): stop, write nothing more
                    return
                continue
            if task is None or os.getppid() != parent:
                return
            idx, slot = task
            try:
                name = save_image(session_path, idx, ring[slot], ext)
                result_q.put((idx, slot, name, None, None))
            except OSError as exc:
                result_q.put((idx, slot, None, exc.errno, str(exc)))
    finally:
        del ring
        shm.close()
        result_q.put("bye")


def shm_slots_available(frame_bytes: int, share: float = 0.5) -> int:
    """How many frames fit in half of /dev/shm's free space (containers often give it 64 MiB;
    overfilling it would kill the recorder with SIGBUS rather than raise)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 1 << 30
    return int(st.f_bavail * st.f_frsize * share) // max(1, frame_bytes)


class ProcessSessionSink(SessionSink):
    """The same sink with encoder processes instead of threads: the capture thread shares
    no GIL with PNG work.

    With encoder *threads*, the capture thread waits for the GIL whenever an encoder
    thread holding it is preempted, which on a busy machine costs milliseconds of
    jitter. Here frames go through a shared-memory ring (one slot per queued frame)
    to encoder processes; this process keeps one light thread that commits rows in
    frame order as images complete. Same interface, counts and failure rule; the
    session must already be open and every frame has ``shape``.
    """

    def __init__(self, session: SessionWriter, shape: tuple[int, int, int], *, queue_size: int = 128,
                 encoders: int = 2):
        if not isinstance(session, SessionWriter):
            raise TypeError("ProcessSessionSink needs an open SessionWriter")
        self._init_state(session)
        self.shape = tuple(int(v) for v in shape)
        nbytes = int(np.prod(self.shape))
        slots = min(max(2, queue_size), shm_slots_available(nbytes))
        if slots < 2:
            raise MemoryError(f"/dev/shm has no room for 2 frames of {self.shape}")
        self.slots = slots
        self._shm = shared_memory.SharedMemory(create=True, size=slots * nbytes)
        self._ring = np.ndarray((slots, *self.shape), np.uint8, buffer=self._shm.buf)
        self._free = collections.deque(range(slots))  # deque append/popleft are thread-safe
        self._rows: dict[int, tuple] = {}  # idx -> (action, driver, t) until its image is written
        self._closing = False
        self._start_encoders(session, max(1, encoders))
        self._collector = threading.Thread(target=self._collect, name="session-commit", daemon=True)
        self._collector.start()

    def _start_encoders(self, session: SessionWriter, n: int) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process with live threads (gamepad, pygame)
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(target=_encoder, name=f"frame-encoder-{i}", daemon=True,
                        args=(self._tasks, self._results, self._shm.name, (self.slots, *self.shape),
                              str(session.path), session.image_ext, os.getpid()))
            for i in range(n)
        ]
        for p in self._procs:
            p.start()
        ready, deadline = 0, time.monotonic() + 120
        while ready < len(self._procs):  # the clock starts only once every encoder can take frames
            try:
                msg = self._results.get(timeout=0.25)
                ready += msg == "ready"
                continue
            except queue.Empty:
                pass
            dead = [p.name for p in self._procs if p.exitcode is not None]
            if dead or time.monotonic() > deadline:
                self._abort()
                raise RuntimeError(f"frame encoder processes failed to start: {dead or 'timeout'}")

    def pending(self) -> int:
        return len(self._rows)

    def offer(self, frame, action, driver: str, t: float, *, block: bool = False) -> bool:
        frame = np.asarray(frame)
        if frame.shape != self.shape:
            raise ValueError(f"frame shape {frame.shape} differs from the session's {self.shape}")
        while True:
            if self.error is not None:
                self.dropped_full += 1
                return False
            try:
                slot = self._free.popleft()
                break
            except IndexError:
                if not block:
                    self.dropped_full += 1
                    return False
                time.sleep(0.002)
        self._ring[slot] = frame
        idx = self._next_index
        self._rows[idx] = (action, driver, t)
        self._tasks.put((idx, slot))
        self._next_index += 1
        return True

    def _collect(self) -> None:
        alive = len(self._procs)
        next_check = time.monotonic() + 0.5
        all_gone = False
        while alive:
            try:
                msg = self._results.get(timeout=0.2 if all_gone else 0.5)
            except queue.Empty:
                if all_gone:
                    return  # every encoder exited and nothing more is coming
                msg = None
            if msg is not None:
                alive -= self._handle(msg)
            if time.monotonic() >= next_check or msg is None:
                next_check = time.monotonic() + 0.5
                dead = [p for p in self._procs if p.exitcode not in (None, 0)]
                if dead and self.error is None and not self._closing:
                    # an encoder was killed (OOM, ...): stop the recording cleanly rather than
                    # fill the ring with frames nobody will write
                    self.error = f"frame encoder {dead[0].name} died (exit code {dead[0].exitcode})"
                all_gone = all(p.exitcode is not None for p in self._procs)  # then drain what is left

    def _handle(self, msg) -> int:
        """Apply one encoder message; returns 1 when it is an encoder's goodbye."""
        if msg == "bye":
            return 1
        idx, slot, name, err_no, err = msg
        self._free.append(slot)
        action, driver, t = self._rows.pop(idx)
        if name is None:
            self._fail(idx, OSError(err_no, err))
        elif self._failed_from is not None and idx > self._failed_from:
            with self._lock:
                self._done[idx] = (name, action, driver, t)  # close() removes it: no row can follow
        else:
            self._commit(idx, (name, action, driver, t))
        return 0

    def _abort(self) -> None:
        for p in self._procs:
            p.kill()
        self._shm.close()
        self._shm.unlink()

    def close(self, meta: dict | None = None) -> dict:
        self._closing = True
        for _ in self._procs:
            self._tasks.put(None)
        for p in self._procs:
            p.join(timeout=30)
            if p.exitcode is None:  # wedged (a killed sibling can leave a queue lock held)
                p.kill()
                p.join()
        self._collector.join()
        with self._lock:
            self.lost += len(self._rows)  # taken but never reported back (an encoder died)
            self._rows.clear()
        self._tasks.close()
        self._results.close()
        del self._ring
        self._shm.close()
        with contextlib.suppress(FileNotFoundError):
            self._shm.unlink()
        return self._finish(meta)
