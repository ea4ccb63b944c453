"""Under CI (or KARTPILOT_REQUIRE_SYSTEM=1) a test skipped for a missing system part fails the run.

Each case is a real pytest run in a subprocess with tests/conftest.py loaded: once on
test files written here (every kind of skip), once on a real test module with Xvfb
taken off PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SKIPS = {
    "test_item_skips.py": """
        import pytest

        @pytest.fixture
        def display():
            pytest.skip("Xvfb is not installed (apt-get install xvfb)")

        def test_fixture_skip(display):
            pass

        @pytest.mark.skipif(True, reason="Debian's chromium is not installed")
        def test_mark_skip():
            pass

        @pytest.mark.xfail(reason="a known bug, not a missing part", strict=True)
        def test_expected_failure():
            assert False

        def test_passes():
            assert True
    """,
    "test_module_skip.py": """
        import pytest
        pytest.importorskip("kartpilot_no_such_system_module", reason="libmupen64plus-dev is not installed")

        def test_never_runs():
            pass
    """,
    "test_extra_skip.py": """
        import pytest
        pytest.importorskip("kartpilot_no_such_extra", reason="optional extra ray: make setup EXTRAS=ray")

        def test_never_runs():
            pass
    """,
}


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "KARTPILOT_REQUIRE_SYSTEM", "KARTPILOT_EXTRAS", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


def run_synthetic(tmp_path: Path, *args: str, **env) -> subprocess.CompletedProcess:
    """pytest on the SKIPS files in tmp_path, with the project's conftest loaded as a plugin."""
    for name, body in SKIPS.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-rA", *args,
                           str(tmp_path)],
                          cwd=tmp_path, env=_env(**env), capture_output=True, text=True, timeout=300)


def test_without_ci_missing_parts_skip(tmp_path):
    r = run_synthetic(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 passed, 4 skipped, 1 xfailed" in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("env", [{"KARTPILOT_REQUIRE_SYSTEM": "1"}, {"CI": "true"}])
def test_under_ci_a_skip_for_a_missing_part_fails(tmp_path, env):
    r = run_synthetic(tmp_path, **env)
    out = r.stdout
    assert r.returncode == 1, out[-3000:]
    # the item skips become failures naming what is missing; the xfail and the pass are untouched
    assert "ERROR test_item_skips.py::test_fixture_skip" in out and "ERROR test_item_skips.py::test_mark_skip" in out
    assert "Xvfb is not installed" in out and "Debian's chromium is not installed" in out
    assert "test_mark_skip" in out and "1 passed" in out and "1 xfailed" in out
    # the module skipped at import fails the session, named in its own section
    assert "modules skipped for a missing system part" in out
    assert "test_module_skip.py" in out and "libmupen64plus-dev is not installed" in out
    # an optional extra that was not asked for stays a skip
    assert "SKIPPED" in out and "optional extra ray" in out
    assert "FAILED test_extra_skip.py" not in out


def test_under_ci_a_skipped_module_fails_the_run_with_workers_too(tmp_path):
    """`make test` shares the modules out between pytest-xdist workers: a module skipped at import in
    a worker must still fail the run the controller reports."""
    r = run_synthetic(tmp_path, "-n", "2", "--dist", "loadfile", KARTPILOT_REQUIRE_SYSTEM="1")
    out = r.stdout
    assert r.returncode == 1, out[-3000:]
    assert "modules skipped for a missing system part" in out
    assert "test_module_skip.py" in out and "libmupen64plus-dev is not installed" in out
    assert "FAILED test_extra_skip.py" not in out  # the extra was not asked for
    assert "Xvfb is not installed" in out  # the item skips fail in the workers as without them
    r = run_synthetic(tmp_path, "-n", "2", "--dist", "loadfile")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 passed, 4 skipped, 1 xfailed" in r.stdout, r.stdout[-3000:]


def test_an_optional_extra_asked_for_must_be_there(tmp_path):
    r = run_synthetic(tmp_path, KARTPILOT_REQUIRE_SYSTEM="1", KARTPILOT_EXTRAS="ray")
    assert r.returncode == 1
    assert "FAILED test_extra_skip.py" in r.stdout, r.stdout[-3000:]


def test_it_can_be_turned_off_under_ci(tmp_path):
    r = run_synthetic(tmp_path, CI="true", KARTPILOT_REQUIRE_SYSTEM="0")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "1 passed, 4 skipped, 1 xfailed" in r.stdout
    r = run_synthetic(tmp_path, CI="false")
    assert r.returncode == 0, r.stdout[-3000:]


def test_a_real_module_fails_under_ci_when_xvfb_is_not_on_path(tmp_path):
    """tests/test_record_screen.py skips without Xvfb; with the variable set, the run fails."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_record_screen.py"]
    plain = subprocess.run(cmd, cwd=ROOT, env=_env(PATH=str(empty_bin)), capture_output=True, text=True,
                           timeout=300)
    assert plain.returncode == 0 and " skipped" in plain.stdout and "failed" not in plain.stdout, plain.stdout[-3000:]
    strict = subprocess.run(cmd, cwd=ROOT, env=_env(PATH=str(empty_bin), KARTPILOT_REQUIRE_SYSTEM="1"),
                            capture_output=True, text=True, timeout=300)
    assert strict.returncode == 1, strict.stdout[-3000:]
    assert "needs Xvfb and xwininfo" in strict.stdout and "KARTPILOT_REQUIRE_SYSTEM=1" in strict.stdout
    assert " skipped" not in strict.stdout.splitlines()[-1]
