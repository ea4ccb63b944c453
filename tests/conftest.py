"""Shared pytest fixtures: a real Xvfb display, the GPL test ROM, the emulator ready to run it, and a small
void kartsim track with a quick planner setting.

Also the CI rule: under ``CI`` (or ``KARTPILOT_REQUIRE_SYSTEM=1``) a test skipped
because a system part is missing (Xvfb, mupen64plus, the test ROM, Chromium,
json-c headers, ...) fails the run instead; see ``require_system``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from common.xvfb import Xvfb
from testing.emulator import build_plugin, emulator_missing, find_test_rom


@pytest.fixture(scope="session", autouse=True)
def plan_cache_of_the_tests(tmp_path_factory) -> Path:
    """Planned laps cached by the tests (``envs.kartsim plan`` in-process or as a subprocess, which
    inherits the variable) go to a folder of their own, never into the user's ``data/kartsim_plans``;
    a test that wants another cache sets ``KARTSIM_PLAN_CACHE`` itself."""
    from envs.kartsim.movie import CACHE_ENV

    path = tmp_path_factory.mktemp("plan-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


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


# A small void track (a lap of ~10-14 s): hairpins where leaving the road means falling.
SMALL_VOID_TRACK = {"name": "small", "points": [[0, 0, 9], [50, 0, 9], [75, 12, 9], [70, 35, 9], [45, 40, 9],
                                                [20, 30, 9], [-5, 38, 9], [-25, 20, 9]],
                    "surface": {"offroad": "void", "kerb": 0.5}, "theme": "space"}


@pytest.fixture(scope="session")
def small_void_spec() -> dict:
    return json.loads(json.dumps(SMALL_VOID_TRACK))  # a copy: a test may edit it


@pytest.fixture(scope="session")
def small_void_track(tmp_path_factory) -> str:
    """SMALL_VOID_TRACK written as a track file (its path)."""
    path = tmp_path_factory.mktemp("tracks") / "small.json"
    path.write_text(json.dumps(SMALL_VOID_TRACK))
    return str(path)


@pytest.fixture(scope="session")
def fast_planner():
    """A quick planner setting for tests (the CLI's default searches 4x as many candidates)."""
    from envs.kartsim.planner import PlannerConfig

    return PlannerConfig(samples=24, rounds=2, horizon=36, replan_every=3)


@pytest.fixture
def xvfb():
    """Function-scoped real X display (common.xvfb.Xvfb); sets nothing globally: pass .name as DISPLAY."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    with Xvfb() as disp:
        yield disp


# -- Under CI, a skip for a missing system part is a failure ---------------------------------------
# `make test` installs the system packages (make system-deps) and the test ROM (make test-rom); a test
# that still skips there hides a broken install step, so CI must not go green with it.
REQUIRE_ENV = "KARTPILOT_REQUIRE_SYSTEM"
EXTRAS_ENV = "KARTPILOT_EXTRAS"  # the pyproject extras installed on purpose (`make test EXTRAS=ray` sets it)
# A skip whose reason starts "optional extra NAME:" is an optional Python extra left out: it fails
# only when NAME was installed on purpose (named in $KARTPILOT_EXTRAS), never otherwise.
OPTIONAL_EXTRA = re.compile(r"optional extra ([\w-]+):")
_FALSE = ("", "0", "false", "no", "off")
_collection_skips: list[tuple[str, str]] = []


def require_system() -> str | None:
    """Why skips fail in this run ('CI' or the variable), or None when skips stay skips.

    ``KARTPILOT_REQUIRE_SYSTEM=1`` turns it on, ``=0`` off; unset, a ``CI`` variable that is set
    and not 0/false turns it on (CI services set ``CI=true``).
    """
    own = os.environ.get(REQUIRE_ENV)
    if own is not None and own.strip():
        return f"{REQUIRE_ENV}={own.strip()}" if own.strip().lower() not in _FALSE else None
    ci = os.environ.get("CI", "").strip()
    return f"CI={ci}" if ci.lower() not in _FALSE else None


def _skip_reason(longrepr) -> str:
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _must_not_skip(reason: str) -> bool:
    extra = OPTIONAL_EXTRA.match(reason)
    if extra is None:
        return True
    wanted = {e.strip() for e in re.split(r"[,\s]+", os.environ.get(EXTRAS_ENV, "")) if e.strip()}
    return extra.group(1) in wanted


def _failure_text(reason: str, why: str) -> str:
    return (f"skipped for a missing system part, which fails the run under {why}: {reason}\n"
            "`make test` installs the system packages (make system-deps) and the test ROM (make test-rom); "
            f"{REQUIRE_ENV}=0 lets such tests skip again")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    why = require_system()
    if why and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report.longrepr)
        if _must_not_skip(reason):
            report.outcome = "failed"
            report.longrepr = _failure_text(reason, why)
    return report


def pytest_collectreport(report):
    """A whole module skipped (importorskip, module-level skip): fails the session at the end."""
    if report.skipped and require_system():
        reason = _skip_reason(report.longrepr)
        if _must_not_skip(reason):
            _collection_skips.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _collection_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _collection_skips:
        why = require_system() or REQUIRE_ENV
        terminalreporter.section("modules skipped for a missing system part", red=True)
        for nodeid, reason in _collection_skips:
            terminalreporter.line(f"FAILED {nodeid}: {_failure_text(reason, why)}", red=True)
