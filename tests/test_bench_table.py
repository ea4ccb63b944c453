"""The machine line (common/machine.py) and `make bench`'s table of ratios (bench/table.py):
the oneDNN probe runs a real TensorFlow child, the table reads real benchmark outputs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from bench import table
from common import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_machine_info_names_cpu_cores_and_the_onednn_isa():
    import tensorflow as tf

    info = machine.machine_info()
    assert info["cpu"] and info["cores"] >= 1 and info["cores"] <= info["cpus_online"]
    assert info["tensorflow"] == tf.__version__  # the probe child ran this TensorFlow
    if platform.machine() == "x86_64" and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0":
        assert info["onednn_isa"], info  # e.g. "Intel AVX2" or "Intel AVX-512 ..."
        assert info["onednn"].startswith("v")
    if "avx512f" in info["cpu_isa"] and info.get("onednn_isa"):
        assert "AVX-512" in info["onednn_isa"] or "AMX" in info["onednn_isa"]
    line = machine.machine_line(info)
    assert line.startswith(f"machine: {info['cpu']}, {info['cores']} cores")
    assert f"TensorFlow {tf.__version__}" in line and "TF_ENABLE_ONEDNN_OPTS=" in line


def test_machine_line_without_tensorflow_and_a_failed_probe(monkeypatch):
    info = machine.machine_info.__wrapped__(tensorflow=False)
    assert "tensorflow" not in info and "TensorFlow" not in machine.machine_line(info)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    out = machine.probe_onednn(timeout=10)
    assert out["tensorflow"] is None and "probe failed" in out["onednn_note"]


def write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_table_reads_the_last_json_line_and_checks_each_goal(tmp_path):
    m = machine.machine_info.__wrapped__(tensorflow=False)
    drive = write(tmp_path, "drive.log", [
        "machine: ...", "POST 640x480 keep-alive: p50 1 ms", '{"not": "the last"}',
        json.dumps({"bench": "drive", "machine": m, "post_of_model": 1.2, "speedup": 40.0, "load_errors": 0}),
    ])
    envs = write(tmp_path, "envs.log", [json.dumps({"bench": "envs", "emu_of_alone": 0.5})])
    ft = write(tmp_path, "finetune.log", ["repeat 1: ...", json.dumps({"bench": "finetune", "repeats": [
        {"repeat": 1, "of_limit": 0.82, "frames_per_s": 800.0, "limit_frames_per_s": 975.0},
        {"repeat": 2, "of_limit": 0.6, "frames_per_s": 1200.0, "limit_frames_per_s": 2000.0}]})])
    old = write(tmp_path, "train.log", [json.dumps({"pipeline_samples_per_s": 900, "ratio": 0.95})])  # no "bench"
    broken = write(tmp_path, "plugin.log", ["Traceback (most recent call last):", "RuntimeError: boom"])
    proc = subprocess.run([sys.executable, "-m", "bench.table", "--json", str(drive), str(envs), str(ft), str(old),
                           str(broken)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["machine"].startswith(f"machine: {m['cpu']}")
    got = {(r["bench"], r["figure"].split(" (")[0]): (r["value"], r["met"]) for r in out["rows"]}
    assert got[("drive", "POST p99 / model p99")] == (1.2, True)
    assert got[("drive", "TensorKart's p99 / POST p99")] == (40.0, True)
    assert got[("drive", "load test errors")] == (0, True)
    assert got[("envs", "emulator env / mupen64plus alone")] == (0.5, False)
    assert got[("finetune", "end-to-end / limit, repeat 1")] == (0.82, True)
    assert got[("finetune", "end-to-end / limit, repeat 2")] == (0.6, None)  # the goal is set at repeat 1
    assert got[("train", "input pipeline / in-memory samples/s")] == (0.95, True)
    assert any(r["bench"] == "plugin" and "no JSON result" in r["figure"] and r["met"] is False for r in out["rows"])
    # the human table: one line per row under the machine line, misses marked
    text = subprocess.run([sys.executable, "-m", "bench.table", str(drive), str(envs)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120).stdout.splitlines()
    assert text[0].startswith("machine:") and text[1].split()[0] == "bench"
    assert any("emulator env / mupen64plus alone" in line and "MISSED" in line for line in text)
    assert sum(" ok" in line for line in text) == 3


def test_table_refuses_a_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.table", str(tmp_path / "nope.log")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "python -m bench.table: error:" in proc.stderr and "nope.log" in proc.stderr


@pytest.mark.parametrize("value,met", [(0.8, True), (0.79, False)])
def test_envs_goal_boundary(value, met):
    rows = table.rows_for({"bench": "envs", "emu_of_alone": value})
    assert rows == [{"bench": "envs", "figure": "emulator env / mupen64plus alone", "value": value, "goal": ">= 0.8",
                     "met": met}]
