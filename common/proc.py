"""Child processes: the one way the project stops one.

Long-lived children (Xvfb, mupen64plus, the test window) are started in a
session of their own (``start_new_session=True``), so Ctrl-C in the terminal
reaches only us and stopping the child also stops whatever it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to the child's whole group when it leads one, else to the child alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop(proc: subprocess.Popen | None, grace: float = 3.0) -> int | None:
    """SIGTERM ``proc`` (and its process group if it leads one), SIGKILL after ``grace`` s; reap it.

    Returns the exit status (None for no process). Safe to call on a process that already exited."""
    if proc is None:
        return None
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            proc.wait(grace)
    return proc.returncode
