"""A private virtual X display (Xvfb): the one way the project starts one.

Xvfb picks a free display number itself (``-displayfd``) and reports it once
it accepts connections, so parallel tests, benchmarks and emulator instances
never race for a number and never poll for lock files.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time

from common.proc import stop


class XvfbError(RuntimeError):
    """Xvfb is missing or did not start (the message says which)."""


class Xvfb:
    """Start Xvfb; ``.display`` (and ``.name``) is ':N'. Stop it with ``close()``
    or use it as a context manager.

    ``size``: the screen's (height, width), the project's one order (common.cli); Xvfb's
    own ``-screen 0 WxHxD`` spelling stays inside this class.

    ``boost``: run the X server under SCHED_FIFO where permitted (benchmarks use it
    to measure a recorder apart from a crowded machine's scheduling of the X server).
    """

    def __init__(self, size: tuple[int, int] = (600, 800), depth: int = 24, *, timeout: float = 15.0,
                 boost: bool = False):
        height, width = size
        if shutil.which("Xvfb") is None:
            raise XvfbError("Xvfb is not installed (apt-get install xvfb)")
        rfd, wfd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["Xvfb", "-displayfd", str(wfd), "-screen", "0", f"{width}x{height}x{depth}",
                 "-nolisten", "tcp", "-noreset"],
                pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            os.close(wfd)
        if boost:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setscheduler(self.proc.pid, os.SCHED_FIFO, os.sched_param(5))
        try:
            number = b""
            deadline = time.monotonic() + timeout
            while not number.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([rfd], [], [], left)[0]:
                    raise XvfbError(f"Xvfb did not report a display within {timeout:.0f} s")
                chunk = os.read(rfd, 16)
                if not chunk:
                    raise XvfbError(f"Xvfb exited with status {self.proc.wait()} before reporting a display")
                number += chunk
        except BaseException:
            self.close()
            raise
        finally:
            os.close(rfd)
        self.display = self.name = f":{int(number)}"

    def close(self, grace: float = 3.0) -> None:
        stop(self.proc, grace)

    def __enter__(self) -> Xvfb:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

