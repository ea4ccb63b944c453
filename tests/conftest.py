"""Shared pytest fixtures: a real Xvfb display, the GPL test ROM, and the emulator ready to run it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.xvfb import Xvfb
from testing.emulator import build_plugin, emulator_missing, find_test_rom


@pytest.fixture(scope="session")
def test_rom() -> Path:
    path = find_test_rom()
    if path is None:
        pytest.skip("GPL test ROM not found (set KARTPILOT_TEST_ROM or provide ../shared/roms/m64p_test_rom.v64)")
    return path


@pytest.fixture(scope="session")
def emulator_rom(test_rom) -> Path:
    """The GPL test ROM once Xvfb, mupen64plus and our plugin (built here, `make -C plugin_c`) are there."""
    why = emulator_missing(plugin=False)
    if why:
        pytest.skip(why)
    build_plugin()  # a compile error fails the tests that need it, loudly
    why = emulator_missing()
    if why:
        pytest.skip(why)
    return test_rom


@pytest.fixture
def xvfb():
    """Function-scoped real X display (common.xvfb.Xvfb); sets nothing globally: pass .name as DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    with Xvfb() as disp:
        yield disp
