"""The front door: `make system-deps` (system_deps.sh), `make test-rom` and `make dataset`.

system_deps.sh runs for real against this machine's dpkg database; the "no root" cases run
it as an unprivileged user (setpriv), so nothing is ever installed by these tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "system_deps.sh"
NO_SUCH_PACKAGE = "kartpilot-no-such-package"


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` as a user that is not root and has no sudo (nobody), whoever runs the tests."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return cmd  # already unprivileged, and without password-less sudo


def run_script(*args: str, env: dict | None = None, as_nobody: bool = True) -> subprocess.CompletedProcess:
    cmd = ["bash", str(SCRIPT), *args]
    return subprocess.run(unprivileged(cmd) if as_nobody else cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_list_covers_every_system_part_the_tests_use():
    r = run_script("--list", as_nobody=False)
    assert r.returncode == 0
    names = {line.split(":")[0] for line in r.stdout.splitlines()}
    # Xvfb + xwininfo, the emulator and its plugins, the plugin's headers, Chromium, venv for make setup
    assert {"xvfb", "x11-utils", "mupen64plus-ui-console", "mupen64plus-video-rice", "mupen64plus-rsp-hle",
            "libmupen64plus-dev", "libjson-c-dev", "gcc", "libc6-dev", "chromium", "python3-venv"} <= names
    assert all(": " in line for line in r.stdout.splitlines())  # each says what needs it


def test_nothing_missing_needs_no_root_and_no_apt():
    """Installed packages: one dpkg-query, exit 0, silent; as nobody, so apt-get could not have run."""
    r = run_script("bash", "coreutils")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr


def test_missing_package_without_root_or_sudo_prints_the_exact_command():
    r = run_script("bash", NO_SUCH_PACKAGE)
    assert r.returncode == 2
    assert f"missing Debian packages: {NO_SUCH_PACKAGE}\n" in r.stderr  # bash is installed: not listed
    assert (f"  sudo apt-get update && sudo apt-get install -y --no-install-recommends {NO_SUCH_PACKAGE}\n"
            in r.stderr), r.stderr


def test_without_apt_it_names_what_the_tests_need(tmp_path):
    bare = tmp_path / "bin"  # a PATH without apt-get and dpkg-query
    bare.mkdir()
    r = subprocess.run(["/bin/bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={"PATH": str(bare)})
    assert r.returncode == 0, r.stderr  # goes on: the tests skip (or fail under CI) what is missing
    assert "not Debian/Ubuntu" in r.stderr
    assert "xvfb: virtual X displays" in r.stderr and "libjson-c-dev: plugin_c (json.h)" in r.stderr


def test_a_file_that_is_not_the_test_rom_is_named_and_left_alone(tmp_path):
    fake = tmp_path / "m64p_test_rom.v64"
    fake.write_bytes(b"not a rom")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "KARTPILOT_REQUIRE_SYSTEM")}
    r = run_script("--test-rom", str(fake), env=env, as_nobody=False)
    assert r.returncode == 0 and str(fake) in r.stderr and "not the mupen64plus test ROM" in r.stderr
    assert fake.read_bytes() == b"not a rom"
    strict = run_script("--test-rom", str(fake), env={**env, "KARTPILOT_REQUIRE_SYSTEM": "1"}, as_nobody=False)
    assert strict.returncode == 1 and fake.read_bytes() == b"not a rom"


def test_the_test_rom_in_place_is_accepted_without_fetching(test_rom, tmp_path):
    copy = tmp_path / "rom.v64"
    shutil.copyfile(test_rom, copy)
    r = run_script("--test-rom", str(copy), env={**os.environ, "KARTPILOT_REQUIRE_SYSTEM": "1"}, as_nobody=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == hashlib.sha256(test_rom.read_bytes()).hexdigest()


def test_make_dataset_passes_only_session_folders(tmp_path):
    """A shadow-mode log (data/sessions/shadow-*.csv) or a stray folder must not reach `dataset clean`."""
    sessions = tmp_path / "data" / "sessions"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rec = subprocess.run([sys.executable, "-m", "record", "--source", "sim", "--track", "luigi", "--seconds", "4",
                          "--fast", "--quiet", "--out", str(sessions / "s1"), "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stderr[-2000:]
    (sessions / "shadow-1700000000.csv").write_text("t,ai_x\n0,0.1\n")
    (sessions / "notes").mkdir()
    (sessions / "notes" / "todo.txt").write_text("not a session\n")
    # -o setup: use this interpreter instead of building .venv in tmp_path
    r = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-o", "setup", f"PY={sys.executable}", "dataset"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    commands = [line for line in r.stdout.splitlines() if " -m dataset " in line]
    assert len(commands) == 2 and all(line.split(" -m dataset ")[1].split()[1] == "data/sessions/s1"
                                      for line in commands), commands
    assert "shadow" not in r.stdout + r.stderr and "notes" not in "".join(commands)
    assert (tmp_path / "data" / "prepared").is_dir()
    assert (sessions / "shadow-1700000000.csv").read_text() == "t,ai_x\n0,0.1\n"  # untouched


def test_make_dataset_without_sessions_says_so(tmp_path):
    (tmp_path / "data" / "sessions").mkdir(parents=True)
    (tmp_path / "data" / "sessions" / "shadow-1.csv").write_text("t\n")
    r = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-o", "setup", f"PY={sys.executable}", "dataset"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no sessions" in r.stderr and "make record" in r.stderr, r.stderr
