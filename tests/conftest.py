"""Shared pytest fixtures: a real Xvfb display and the GPL test ROM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.xvfb import Xvfb
from testing.emulator import find_test_rom


@pytest.fixture(scope="session")
def test_rom() -> Path:
    path = find_test_rom()
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
