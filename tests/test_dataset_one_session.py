"""One recording is enough: the `make record` -> `make dataset` -> `make train` chain on ONE
session (a recorded kartsim session, and one imported TensorKart folder) writes a model.

`prepare` cannot fill a validation split with whole sessions here, so it splits the session
by time (last 20% val, 3 s before it left out); train then runs one real epoch on it."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from testing.sessions import game_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300) -> dict:
    r = subprocess.run([sys.executable, "-m", *map(str, args), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, f"{args[:2]}: {r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]) | {"stderr": r.stderr}


def dataset_then_train(session, tmp_path, *prepare_args) -> tuple[dict, dict]:
    """`make dataset` (clean, prepare --force) and `make train` (one epoch) on one session."""
    run("dataset", "clean", session)
    prep = run("dataset", "prepare", session, "--out", tmp_path / "prepared", "--force", *prepare_args)
    assert prep["split_by"] == "time" and "split by time" in prep["stderr"]
    assert prep["train"] > prep["val"] > 0
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    head, tail = manifest["sessions"]
    assert (head["split"], tail["split"]) == ("train", "val") and tail["gap"]["frames"] > 0
    assert head["frame_range"][1] < tail["gap"]["frame_range"][0] <= tail["gap"]["frame_range"][1] \
        < tail["frame_range"][0]  # train, then the gap, then val: no frame on both sides
    model = tmp_path / "models" / "pilotnet.keras"
    fit = run("train", "--data", tmp_path / "prepared", "--out", model, "--epochs", 1, "--batch-size", 32,
              "--no-plots", "--seed", 0, timeout=600)
    assert zipfile.is_zipfile(model) and fit["epochs"] == 1 and math.isfinite(fit["val_loss"])
    return prep, fit


@pytest.mark.slow
def test_one_recorded_sim_session_trains_a_model(tmp_path):
    session = tmp_path / "sessions" / "sim-luigi"
    rec = run("record", "--source", "sim", "--track", "luigi", "--seconds", 10, "--quiet", "--out", session)
    assert rec["frames"] >= 250  # 10 s at 30 Hz, a few dropped at most
    prep, _ = dataset_then_train(session, tmp_path)
    assert prep["val"] >= 40


@pytest.mark.slow
def test_one_tensorkart_folder_trains_a_model(tmp_path):
    tk = tmp_path / "tk"
    tk.mkdir()
    with open(tk / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        for i in range(200):  # 40 s at TensorKart's 5 Hz
            Image.fromarray(game_image(120, 160, 3 * i)).save(tk / f"img_{i}.png")
            w.writerow([f"samples/run1/img_{i}.png", round(0.5 * np.sin(i / 9), 4), 0.0, 1, 0, 0])
    session = tmp_path / "sessions" / "tk"
    assert run("dataset", "import-tensorkart", tk, "--out", session)["frames"] == 200
    prep, _ = dataset_then_train(session, tmp_path, "--val-fraction", 0.2)
    assert prep["val"] == 40  # the last 20% of 200 frames; 3 s = 15 frames before it left out
