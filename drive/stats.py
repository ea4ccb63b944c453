"""Request counters, requests/second and the latency histogram the dashboard shows."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque

import numpy as np

# Histogram bucket upper edges in ms; the last bucket is "more than 100 ms".
EDGES_MS = (0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 50, 100)
RATE_WINDOW_S = 2.0


class Stats:
    """Thread-safe; one ``record`` per answered poll, ``error`` per refused one."""

    def __init__(self, recent: int = 4096):
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.counts = [0] * (len(EDGES_MS) + 1)
        self._recent = deque(maxlen=recent)  # latencies (ms) for percentiles
        self._stamps = deque()  # answer times within RATE_WINDOW_S, for req/s
        self.per_controller = [0, 0, 0, 0]

    def record(self, controller: int, latency_s: float, now: float | None = None) -> None:
        ms = latency_s * 1000.0
        now = time.monotonic() if now is None else now
        slot = bisect.bisect_left(EDGES_MS, ms)
        with self._lock:
            self.requests += 1
            self.per_controller[controller] += 1
            self.counts[slot] += 1
            self._recent.append(ms)
            stamps = self._stamps
            stamps.append(now)
            while stamps and now - stamps[0] > RATE_WINDOW_S:
                stamps.popleft()

    def error(self) -> None:
        with self._lock:
            self.errors += 1

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            stamps = self._stamps
            while stamps and now - stamps[0] > RATE_WINDOW_S:
                stamps.popleft()
            recent = np.fromiter(self._recent, float) if self._recent else None
            snap = {
                "requests": self.requests,
                "errors": self.errors,
                "per_controller": list(self.per_controller),
                "req_per_s": len(stamps) / RATE_WINDOW_S,
                "histogram": {"edges_ms": list(EDGES_MS), "counts": list(self.counts)},
            }
        if recent is not None:
            p50, p99 = np.percentile(recent, [50, 99])
            snap["latency_ms"] = {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}
        else:
            snap["latency_ms"] = {"p50": None, "p99": None}
        return snap
