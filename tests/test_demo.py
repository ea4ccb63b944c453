"""`make demo`'s chain on small data: record -> clean -> prepare -> train -> evaluate -> drive -> fine-tune."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "demo", "--quick", "--out", str(tmp_path), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    luigi = res["tracks"]["luigi"]
    assert luigi["expert_falls"] == 0 and luigi["expert_best_lap_s"] >= luigi["lower_bound_s"]
    assert "cloned_best_lap_s" in luigi and "cloned_autonomy" in luigi
    assert res["train"]["epochs"] >= 1 and res["train"]["val_loss"] > 0  # a validation session was kept apart
    assert res["drive"]["steps"] > 0 and res["finetune"]["frames"] > 0
    assert (tmp_path / "models" / "pilotnet.keras").is_file()
    assert "lower bound" in r.stdout  # the table
