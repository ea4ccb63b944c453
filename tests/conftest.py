"""Shared pytest fixtures: a real Xvfb display and the GPL test ROM."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_rom_path() -> Path | None:
    """The GPL mupen64plus test ROM: $KARTPILOT_TEST_ROM or ../shared/roms/."""
    env = os.environ.get("KARTPILOT_TEST_ROM")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "roms" / "m64p_test_rom.v64")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def test_rom() -> Path:
    path = test_rom_path()
    if path is None:
        pytest.skip("GPL test ROM not found (set KARTPILOT_TEST_ROM or provide ../shared/roms/m64p_test_rom.v64)")
    return path


def _free_display() -> int:
    for n in range(110, 400):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


class XvfbDisplay:
    """A real Xvfb server on a free display; ``.name`` is ':N'."""

    def __init__(self, width: int = 800, height: int = 600):
        if shutil.which("Xvfb") is None:
            pytest.skip("Xvfb is not installed (apt-get install xvfb)")
        self.number = _free_display()
        self.name = f":{self.number}"
        self.proc = subprocess.Popen(
            ["Xvfb", self.name, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{self.number}").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb {self.name} did not start")
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def xvfb():
    """Function-scoped real X display; sets nothing globally (pass .name as DISPLAY)."""
    disp = XvfbDisplay()
    yield disp
    disp.close()
