"""The capture loop: clock -> grab -> controller -> queue, plus the summary.

Everything slow (PNG encoding, disk) happens behind ``dataset.sink.SessionSink``;
this loop only grabs, reads the controller and enqueues, so the capture instants
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
from dataclasses import dataclass, field

import numpy as np

from dataset.sink import SessionSink
from record.clock import Ticker
from record.status import StatusLine

SWITCH_INTERVAL_S = 0.0005


class _Stop(Exception):
    pass


def _on_term(signum, frame):  # SIGTERM: stop like Ctrl-C, keeping what was written
    raise _Stop("SIGTERM")


@dataclass
class _Run:
    """What one recording has counted so far."""

    total: int | None  # ticks to record (None: until stopped)
    fast: bool
    n: int = 0  # frames captured
    busy: list[float] = field(default_factory=list)  # grab + controller + enqueue, per tick
    rate_now: float = 0.0
    action: np.ndarray = field(default_factory=lambda: np.zeros(5, np.float32))
    stopped: str = "duration"
    t_start: float = field(default_factory=time.monotonic)


def record(source, controller, writer: SessionSink, *, rate: float, seconds: float | None,
           fast: bool = False, status: StatusLine | None = None, realtime: bool = True,
           preview=None) -> dict:
    """Record until ``seconds`` of schedule have passed (None: until Ctrl-C).

    Returns counts and timing: frames, dropped (queue full + missed ticks + not
    written), rate_hz, jitter_p50_ms / jitter_p99_ms, stopped (why it ended).
    """
    ticker = Ticker(rate)
    status = status or StatusLine(quiet=True)
    run = _Run(total=None if seconds is None else int(round(seconds * rate)), fast=fast)
    with _sigterm_stops(), _capture_priority(not fast, realtime) as priority:
        try:
            _capture(source, controller, writer, ticker, run, status, preview, rate)
        except (KeyboardInterrupt, _Stop) as exc:
            run.stopped = "SIGTERM" if isinstance(exc, _Stop) else "Ctrl-C"
    result = writer.close()
    return _summary(run, ticker, writer, result, status, rate, priority)


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM ends the recording like Ctrl-C (main thread only: signals go there). Ctrl-C
    (SIGINT) stops it even when the recorder was started with SIGINT ignored (a background job of
    a non-interactive shell inherits that, and Python then never raises KeyboardInterrupt)."""
    if not _main_thread():
        yield
        return
    old_term = signal.signal(signal.SIGTERM, _on_term)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


@contextlib.contextmanager
def _capture_priority(boost: bool, realtime: bool):
    """The capture loop gets the GIL back quickly from encoder threads (default 5 ms), no GC
    pass lands on a tick, and (``boost``) the thread runs first where permitted (SCHED_FIFO
    only with ``realtime``); all restored after."""
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    priority = boost_this_thread(realtime) if boost else "normal"
    try:
        yield priority
    finally:
        unboost_this_thread(priority)
        sys.setswitchinterval(old_switch)
        if gc_was_enabled:
            gc.enable()


def _capture(source, controller, writer: SessionSink, ticker: Ticker, run: _Run, status: StatusLine,
             preview, rate: float) -> None:
    """The loop itself: one frame per tick (or as fast as the sink takes them with --fast)."""
    while True:
        instant = _next_instant(ticker, run)
        if instant is None:
            return
        deadline, t = instant
        frame = source.grab()
        run.action = controller.state()
        writer.offer(frame, run.action, controller.driver, t, block=run.fast)
        if not run.fast:
            ticker.mark(deadline, t)
            run.busy.append(time.monotonic() - t)
        run.n += 1
        _after_frame(frame, source, controller, writer, ticker, run, preview)
        reason = _reason_to_stop(source, controller, writer)
        if reason:
            run.stopped = reason
            return
        if status.due() or (preview is not None and run.n % max(1, int(rate)) == 0):
            _show_status(source, writer, ticker, run, status)


def _next_instant(ticker: Ticker, run: _Run) -> tuple[float, float] | None:
    """(deadline, capture instant) of the next frame, or None when the duration is reached."""
    if run.fast:
        if run.total is not None and run.n >= run.total:
            return None
        t = time.monotonic()
        return t, t
    k, deadline = ticker.wait()
    if run.total is not None and k >= run.total:
        return None
    return deadline, time.monotonic()


def _after_frame(frame, source, controller, writer: SessionSink, ticker: Ticker, run: _Run, preview) -> None:
    """Show the frame (preview page, play window) and let the source advance with the action."""
    if preview is not None:
        preview.publish(frame, run.action, frames=writer.written, rate_hz=run.rate_now,
                        dropped=writer.dropped + ticker.missed)
    if hasattr(controller, "show"):
        controller.show(frame)
    if hasattr(source, "after"):
        source.after(run.action)


def _reason_to_stop(source, controller, writer: SessionSink) -> str | None:
    if writer.failed:
        return "error: " + writer.error
    if getattr(controller, "quit", False):
        return "user quit"
    if getattr(source, "finished", False):
        return "race finished"
    return None


def _show_status(source, writer: SessionSink, ticker: Ticker, run: _Run, status: StatusLine) -> None:
    if run.fast:
        run.rate_now, p50, p99 = run.n / max(time.monotonic() - run.t_start, 1e-9), 0.0, 0.0
    else:
        run.rate_now, p50, p99 = ticker.recent()
    status.update(frames=writer.written, rate_hz=run.rate_now, p50_ms=p50, p99_ms=p99,
                  dropped=writer.dropped + ticker.missed, queued=writer.pending(), action=run.action,
                  extra=source.status() if hasattr(source, "status") else "")


def _summary(run: _Run, ticker: Ticker, writer: SessionSink, result: dict, status: StatusLine,
             rate: float, priority: str) -> dict:
    """The final status line and the figures ``record`` returns."""
    st = ticker.stats()
    if run.fast:
        el = time.monotonic() - run.t_start
        st.update(rate_hz=run.n / el if el > 0 else 0.0, jitter_p50_ms=0.0, jitter_p99_ms=0.0,
                  jitter_max_ms=0.0)
    stopped = run.stopped
    if result["error"] and not stopped.startswith("error"):
        stopped = "error: " + result["error"]
    status.update(frames=result["written"], rate_hz=st["rate_hz"], p50_ms=st["jitter_p50_ms"],
                  p99_ms=st["jitter_p99_ms"], dropped=result["dropped"] + ticker.missed, queued=0,
                  action=run.action, force=True)
    status.done()
    return {
        "frames": result["written"],
        "captured": run.n,
        "dropped": result["dropped"] + ticker.missed,
        "dropped_queue_full": writer.dropped_full,
        "missed_ticks": ticker.missed,
        "not_written": writer.lost,
        "rate_hz": round(st["rate_hz"], 3),
        "target_rate_hz": rate,
        "jitter_p50_ms": round(st["jitter_p50_ms"], 3),
        "jitter_p99_ms": round(st["jitter_p99_ms"], 3),
        "jitter_max_ms": round(st["jitter_max_ms"], 3),
        "fast": run.fast,
        "priority": priority,
        "capture_p99_ms": round(float(np.percentile(run.busy, 99)) * 1000, 3) if run.busy else 0.0,
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
