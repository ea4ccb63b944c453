"""A fixed-rate capture clock on time.monotonic with absolute deadlines.

Tick k is due at ``t0 + k / rate``: a late tick never shifts the ones after it
(no drift). A tick more than one period late is skipped and counted as missed,
so the schedule stays aligned with wall time.
"""

from __future__ import annotations

import time
from array import array

import numpy as np

SPIN_S = 0.0008  # sleep until this close to the deadline, then spin: sleep() alone overshoots


class Ticker:
    def __init__(self, rate_hz: float, *, spin_s: float = SPIN_S):
        if not 0 < rate_hz <= 1000:
            raise ValueError(f"rate must be in (0, 1000] Hz, got {rate_hz}")
        self.rate = float(rate_hz)
        self.period = 1.0 / self.rate
        self.spin_s = spin_s
        self.t0: float | None = None
        self.k = 0  # index of the next tick
        self.ticks = 0
        self.missed = 0
        self._late = array("d")  # capture instant - deadline, seconds (8 bytes a tick: keep them all)
        self._inst = array("d")  # capture instants
        self._first = self._last = None

    def wait(self) -> tuple[int, float]:
        """Block until the next tick is due; returns (tick index, deadline)."""
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        deadline = self.t0 + self.k * self.period
        if now - deadline > self.period:  # fell a whole period behind: skip, don't burst
            skip = int((now - deadline) / self.period)
            self.missed += skip
            self.k += skip
            deadline = self.t0 + self.k * self.period
        remaining = deadline - now
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.monotonic() < deadline:
            pass
        return self.k, deadline

    def mark(self, deadline: float, instant: float | None = None) -> None:
        """Record when the tick's capture actually started; advance the schedule."""
        instant = time.monotonic() if instant is None else instant
        late = instant - deadline
        if self._first is None:
            self._first = instant
        self._last = instant
        self._late.append(late)
        self._inst.append(instant)
        self.k += 1
        self.ticks += 1

    def recent(self, window_s: float = 2.0) -> tuple[float, float, float]:
        """(rate Hz, jitter p50 ms, jitter p99 ms) over the last ``window_s``: the status line."""
        n = max(2, int(window_s * self.rate))
        late = np.abs(np.array(self._late[-n:], dtype=np.float64)) * 1000.0
        if late.size < 2:
            return 0.0, 0.0, 0.0
        span = self._inst[-1] - self._inst[-late.size]
        rate = (late.size - 1) / span if span > 0 else 0.0
        return rate, float(np.percentile(late, 50)), float(np.percentile(late, 99))

    def stats(self) -> dict:
        """Achieved rate and jitter (|capture instant - deadline|) so far."""
        n = self.ticks
        elapsed = (self._last - self._first) if n > 1 else 0.0
        jit = np.abs(np.array(self._late, dtype=np.float64)) * 1000.0 if self._late else np.zeros(1)
        return {
            "ticks": n,
            "missed": self.missed,
            "elapsed_s": elapsed,
            "rate_hz": ((n - 1) / elapsed) if elapsed > 0 else 0.0,
            "jitter_p50_ms": float(np.percentile(jit, 50)),
            "jitter_p99_ms": float(np.percentile(jit, 99)),
            "jitter_max_ms": float(jit.max()),
        }
