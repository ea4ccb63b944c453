"""Shared pytest fixtures: a real Xvfb display and the GPL test ROM."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from common.xvfb import Xvfb

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


@pytest.fixture
def xvfb():
    """Function-scoped real X display (common.xvfb.Xvfb); sets nothing globally: pass .name as DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    with Xvfb() as disp:
        yield disp
