"""The fault-injection suite (bench.faults): its checker catches real damage, and a short run
(kill -9 and a full disk, a couple of trials per command) leaves none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bench import faults
from dataset.session import SessionWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = {"source": "sim", "track": "luigi", "resolution": [4, 6], "rate_hz": 30}


def _session(path, n=3):
    with SessionWriter(path, META) as sw:
        for i in range(n):
            sw.append(np.full((4, 6, 3), i, np.uint8), [0, 0, 1, 0, 0], "expert", t=float(i))


def _report():
    return {"problems": [], "leftover_after_kill": []}


def test_checker_flags_a_torn_keras_file(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "m.keras"
    model.save(path)
    assert faults.check_file(path) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a kill or a full disk mid-save leaves
    assert "load" in faults.check_file(path) or "torn" in faults.check_file(path)
    (tmp_path / "a.npy").write_bytes(b"")
    np.save(tmp_path / "b.npy", np.zeros((10, 4), np.float32))
    with open(tmp_path / "b.npy", "r+b") as fh:
        fh.truncate(100)
    (tmp_path / "c.csv").write_text("a,b\n1,2\n3,")
    assert all(faults.check_file(tmp_path / n) for n in ("a.npy", "b.npy", "c.csv"))


def test_checker_flags_an_orphan_row_and_a_stray_image(tmp_path):
    _session(tmp_path / "s")
    rep = _report()
    faults.check_session(tmp_path / "s", "full", rep)
    assert rep == _report()  # a complete session is fine
    (tmp_path / "s" / "frames" / "0000001.png").rename(tmp_path / "s" / "frames" / "0000009.png")
    faults.check_session(tmp_path / "s", "full", rep)
    assert any("orphan row" in p and "0000001.png" in p for p in rep["problems"])
    assert any("0000009.png (no row)" in p for p in rep["problems"])  # after a full disk: damage
    rep = _report()
    faults.check_session(tmp_path / "s", "kill", rep)
    assert rep["leftover_after_kill"] == ["s/frames/0000009.png (no row)"]  # after kill -9: a leftover
    assert any("orphan row" in p for p in rep["problems"])  # an orphan row is damage either way


def test_checker_flags_a_lost_or_changed_previous_version(tmp_path):
    _session(tmp_path / "prev")
    before = faults.snapshot(tmp_path / "prev")
    rep = _report()
    faults.check_tree(tmp_path / "prev", before, "kill", rep)
    assert rep["problems"] == []
    shutil.rmtree(tmp_path / "prev")
    faults.check_tree(tmp_path / "prev", before, "kill", rep)
    assert len(rep["problems"]) == len(before) and all(p.startswith("lost:") for p in rep["problems"])


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    flags = "-m" if os.geteuid() == 0 else "-rm"
    return subprocess.run(["unshare", flags, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="cannot mount a tmpfs in a private namespace (root or userns)")
def test_short_fault_run_leaves_no_damage(tmp_path):
    """Two trials per command (one kill -9, one full disk) on tiny inputs; any damage fails."""
    proc = subprocess.run([sys.executable, "-m", "bench.faults", "--trials", "2", "--seed", "1",
                           "--keep", str(tmp_path / "damaged"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(result["commands"]) == list(faults.COMMANDS)
    for name, c in result["commands"].items():
        assert c["trials"] == 2 and c["kill"]["trials"] == 1 and c["full"]["trials"] == 1, name
    assert result["total"]["injected"] >= 4  # the faults did hit (a kill may land after the end)
    damage = {name: c["problems"] for name, c in result["commands"].items() if c["damaged"]}
    assert result["total"]["damaged"] == 0, json.dumps(damage, indent=1)[:6000]
