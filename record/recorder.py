"""The capture loop: clock -> grab -> controller -> queue, plus the summary.

Everything slow (PNG encoding, disk) happens in record.writer's threads; this
loop only grabs, reads the controller and enqueues, so the capture instants
stay on the clock's schedule.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time

import numpy as np

from record.clock import Ticker
from record.status import StatusLine
from record.writer import FrameWriter

SWITCH_INTERVAL_S = 0.0005


class _Stop(Exception):
    pass


def _on_term(signum, frame):  # SIGTERM: stop like Ctrl-C, keeping what was written
    raise _Stop("SIGTERM")


def record(source, controller, writer: FrameWriter, *, rate: float, seconds: float | None,
           fast: bool = False, status: StatusLine | None = None, realtime: bool = True,
           preview=None) -> dict:
    """Record until ``seconds`` of schedule have passed (None: until Ctrl-C).

    Returns counts and timing: frames, dropped (queue full + missed ticks + not
    written), rate_hz, jitter_p50_ms / jitter_p99_ms, stopped (why it ended).
    """
    ticker = Ticker(rate)
    status = status or StatusLine(quiet=True)
    total = None if seconds is None else int(round(seconds * rate))
    stopped = "duration"
    old_term = signal.signal(signal.SIGTERM, _on_term) if _main_thread() else None
    # The capture loop must get the GIL back quickly from the encoder threads (default 5 ms),
    # and a GC pass must not land on a tick: restore both afterwards.
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    priority = boost_this_thread(realtime) if not fast else "normal"
    action = np.zeros(5, np.float32)
    n = 0
    busy: list[float] = []
    rate_now = 0.0
    t_start = time.monotonic()
    try:
        while True:
            if fast:
                if total is not None and n >= total:
                    break
                deadline = t = time.monotonic()
            else:
                k, deadline = ticker.wait()
                if total is not None and k >= total:
                    break
                t = time.monotonic()
            frame = source.grab()
            action = controller.state()
            writer.offer(frame, action, controller.driver, t, block=fast)
            if not fast:
                ticker.mark(deadline, t)
                busy.append(time.monotonic() - t)  # grab + controller + enqueue
            n += 1
            if preview is not None:
                preview.publish(frame, action, frames=writer.written, rate_hz=rate_now,
                                dropped=writer.dropped + ticker.missed)
            if hasattr(controller, "show"):
                controller.show(frame)
            if hasattr(source, "after"):
                source.after(action)
            if writer.failed:
                stopped = "error: " + writer.error
                break
            if getattr(controller, "quit", False):
                stopped = "user quit"
                break
            if getattr(source, "finished", False):
                stopped = "race finished"
                break
            if status.due() or (preview is not None and n % max(1, int(rate)) == 0):
                if fast:
                    rate_now, p50, p99 = n / max(time.monotonic() - t_start, 1e-9), 0.0, 0.0
                else:
                    rate_now, p50, p99 = ticker.recent()
                status.update(frames=writer.written, rate_hz=rate_now, p50_ms=p50, p99_ms=p99,
                              dropped=writer.dropped + ticker.missed, queued=writer.pending(), action=action,
                              extra=source.status() if hasattr(source, "status") else "")
    except (KeyboardInterrupt, _Stop) as exc:
        stopped = "SIGTERM" if isinstance(exc, _Stop) else "Ctrl-C"
    finally:
        unboost_this_thread(priority)
        sys.setswitchinterval(old_switch)
        if gc_was_enabled:
            gc.enable()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    captured = n
    result = writer.close()
    st = ticker.stats()
    if fast:
        el = time.monotonic() - t_start
        st.update(rate_hz=captured / el if el > 0 else 0.0, jitter_p50_ms=0.0, jitter_p99_ms=0.0,
                  jitter_max_ms=0.0)
    if result["error"] and not stopped.startswith("error"):
        stopped = "error: " + result["error"]
    status.update(frames=result["written"], rate_hz=st["rate_hz"], p50_ms=st["jitter_p50_ms"],
                  p99_ms=st["jitter_p99_ms"], dropped=result["dropped"] + ticker.missed, queued=0,
                  action=action, force=True)
    status.done()
    return {
        "frames": result["written"],
        "captured": captured,
        "dropped": result["dropped"] + ticker.missed,
        "dropped_queue_full": writer.dropped_full,
        "missed_ticks": ticker.missed,
        "not_written": writer.lost,
        "rate_hz": round(st["rate_hz"], 3),
        "target_rate_hz": rate,
        "jitter_p50_ms": round(st["jitter_p50_ms"], 3),
        "jitter_p99_ms": round(st["jitter_p99_ms"], 3),
        "jitter_max_ms": round(st["jitter_max_ms"], 3),
        "fast": fast,
        "priority": priority,
        "capture_p99_ms": round(float(np.percentile(busy, 99)) * 1000, 3) if busy else 0.0,
        "stopped": stopped,
    }


def boost_this_thread(realtime: bool = True) -> str:
    """Give the capture thread the CPU first on a busy machine: SCHED_FIFO where permitted
    (it sleeps between ticks, so it takes little), else a higher nice, else nothing.
    Returns what it got: 'fifo', 'nice' or 'normal'."""
    if realtime and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))  # 0: this thread (Linux)
            return "fifo"
        except (OSError, PermissionError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -5)
        return "nice"
    except (OSError, PermissionError):
        return "normal"


def unboost_this_thread(got: str) -> None:
    with contextlib.suppress(OSError, PermissionError):
        if got == "fifo":
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        elif got == "nice":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
