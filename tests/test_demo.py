"""`make demo`'s chain on small data: record -> clean -> prepare -> train -> evaluate -> drive -> fine-tune."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bare_env(tmp_path) -> dict:
    """No X display and a PATH with nothing on it: the demo must need no system package (no
    Xvfb, emulator, xwininfo, Chromium, compiler); every stage is the running interpreter."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PATH"] = str(empty)
    return env


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "demo", "--quick", "--out", str(out), "--json"], cwd=ROOT,
                       env=bare_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[-1])
    luigi = res["tracks"]["luigi"]
    assert luigi["expert_falls"] == 0 and luigi["expert_best_lap_s"] >= luigi["lower_bound_s"]
    assert "cloned_best_lap_s" in luigi and "cloned_autonomy" in luigi
    assert res["train"]["epochs"] >= 1 and res["train"]["val_loss"] > 0  # a validation session was kept apart
    assert res["drive"]["steps"] > 0 and res["finetune"]["frames"] > 0
    assert (out / "models" / "pilotnet.keras").is_file()
    assert "lower bound" in r.stdout  # the table
    # one progress line per stage, each with its elapsed seconds; no stage's raw JSON on screen
    progress = [ln for ln in lines if re.match(r"\[\s*\d+/11\] ", ln)]
    assert len(progress) == 11 and all(re.search(r" \d+ s ", ln) for ln in progress), progress
    assert "1,200 frames" in r.stdout and "train 1,200 frames, val 600" in r.stdout
    assert not any(ln.lstrip().startswith("{") for ln in lines[:-1]), r.stdout[-3000:]
    assert r.stderr == ""  # the stages' progress bars and TF start-up lines went to the log
    log = (out / "demo.log").read_text()
    assert str(out / "demo.log") in r.stdout
    g = res["generalise"]  # the clone on 2 generated tracks it never saw, and twisty
    assert g["tracks"] == 3 and 0 <= g["finished"] <= 3 and (out / "generalise" / "worst.png").is_file()
    assert "unseen tracks: finished" in r.stdout
    assert log.count("\n=== [") == 11 and '"captured": 1200' in log and '"val_loss"' in log
    # seeded: the clone's training and the fine-tune start from the same weights in every demo
    assert re.search(r"python -m train --data .* --seed 0 ", log) and re.search(r"python -m train.finetune .* --seed 0 ", log)


def test_a_failing_stage_is_named_with_its_log(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "demo", "--quick", "--track", "nosuch", "--out", str(out)], cwd=ROOT,
                       env=bare_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "scripted expert on nosuch" in r.stdout and "FAILED" in r.stdout
    assert f"python -m demo: error: stage 'scripted expert on nosuch' failed (exit 2); its whole output is in {out / 'demo.log'}" in r.stderr
    assert "unknown track 'nosuch'" in r.stderr  # the log's tail is shown
    assert "unknown track 'nosuch'" in (out / "demo.log").read_text()
