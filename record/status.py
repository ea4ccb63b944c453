"""The live terminal status line: frames, achieved rate, jitter, dropped, stick."""

from __future__ import annotations

import sys
import time

from common import action as act


class StatusLine:
    def __init__(self, stream=None, every_s: float = 0.5, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every_s if self.tty else 5.0  # logs get a line every few seconds, not a flood
        self.quiet = quiet
        self._next = 0.0
        self._shown = False

    def due(self) -> bool:
        return not self.quiet and time.monotonic() >= self._next

    def update(self, *, frames: int, rate_hz: float, p50_ms: float, p99_ms: float, dropped: int,
               queued: int, action, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (now < self._next and not force):
            return
        self._next = now + self.every
        line = (f"{frames:6d} frames  {rate_hz:5.1f} Hz  jitter p50 {p50_ms:4.2f} p99 {p99_ms:5.2f} ms  "
                f"dropped {dropped}  queue {queued:3d}  {act.describe(action)}  {extra}")
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown and self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
