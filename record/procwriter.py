"""Encoder processes instead of threads: the capture thread shares no GIL with PNG work.

With encoder *threads*, the capture thread waits for the GIL whenever an encoder
thread holding it is preempted, which on a busy machine costs milliseconds of
jitter. Here frames go through a shared-memory ring (one slot per queued frame)
to encoder processes; the main process keeps one light thread that commits
rows in frame order as images complete. Same interface and guarantees as
:class:`record.writer.FrameWriter` (it reuses its bookkeeping).
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from multiprocessing import shared_memory

import numpy as np

from dataset.session import SessionWriter, save_image
from record.writer import FrameWriter


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


class ProcessFrameWriter(FrameWriter):
    def __init__(self, session: SessionWriter, shape: tuple[int, int, int], *, queue_size: int = 128,
                 processes: int = 2):
        self._init_counts(session)
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
        ctx = mp.get_context("spawn")  # no fork of a process with live threads (gamepad, pygame)
        self._tasks = ctx.Queue()
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(target=_encoder, name=f"frame-encoder-{i}", daemon=True,
                        args=(self._tasks, self._results, self._shm.name, (slots, *self.shape),
                              str(session.path), session.image_ext, os.getpid()))
            for i in range(max(1, processes))
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
        self._collector = threading.Thread(target=self._collect, name="frame-commit", daemon=True)
        self._collector.start()

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

    def close(self) -> dict:
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
        return self._finish()
