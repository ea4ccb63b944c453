"""`python -m drive` end to end: start-up errors, and kartsim driven through the real
server by a cloned model (expert demos -> `python -m train` -> drive --sim)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common import frames

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_missing_model_is_a_clear_error_at_start(tmp_path):
    res = run("-m", "drive", "--model", str(tmp_path / "nope.keras"), "--port", "0", "--gamepad", "none")
    assert res.returncode == 2
    assert f"model file not found: {tmp_path / 'nope.keras'}" in res.stderr
    assert "Traceback" not in res.stderr and "serving" not in res.stderr


def test_mismatched_model_is_refused_at_start(tmp_path):
    from train.model import build_pilotnet, save_model

    model = build_pilotnet()
    layer = model.get_layer("frame_input")
    layer.transform = {**frames.TRANSFORM, "crop_top": 0.25}  # trained under another crop
    path = save_model(model, tmp_path / "other-crop.keras")
    res = run("-m", "drive", "--model", path, "--port", "0", "--gamepad", "none")
    assert res.returncode == 2
    assert "refusing model" in res.stderr and "crop_top" in res.stderr
    assert "Traceback" not in res.stderr and "serving" not in res.stderr


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "garbage.keras"
    bad.write_bytes(b"not a zip")
    res = run("-m", "drive", "--model", str(bad), "--port", "0", "--gamepad", "none")
    assert res.returncode == 2 and "cannot use model" in res.stderr and "Traceback" not in res.stderr


def test_corrupt_weights_are_a_clear_error_naming_the_file(tmp_path):
    import zipfile

    from train.model import build_pilotnet, save_model

    good = save_model(build_pilotnet(), tmp_path / "good.keras")
    bad = tmp_path / "corrupt-weights.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():  # the config is intact, the weights are garbage
            dst.writestr(name, b"\0garbage" * 64 if name.endswith(".h5") else src.read(name))
    res = run("-m", "drive", "--model", str(bad), "--port", "0", "--gamepad", "none")
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"drive: error: cannot use model {bad}: model {bad} is damaged" in res.stderr
    assert "Traceback" not in res.stderr and "serving" not in res.stderr


@pytest.fixture(scope="module")
def cloned_model(tmp_path_factory):
    """A PilotNet cloned from kartsim's expert on luigi (small: ~4000 frames, 2 epochs)."""
    tmp = tmp_path_factory.mktemp("clone")
    res = run("-m", "train", "demos", "--track", "luigi", "--frames", "4000", "--noise", "0.3", "--seed", "0",
              "--out", str(tmp / "data"), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    res = run("-m", "train", "--data", str(tmp / "data"), "--out", str(tmp / "pilotnet.keras"), "--epochs", "2",
              "--seed", "0", "--no-plots", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "pilotnet.keras"


@pytest.mark.slow
def test_simulator_completes_a_lap_through_the_server(cloned_model, tmp_path):
    from envs.kartsim import lower_bound_s

    res = run("-m", "drive", "--model", str(cloned_model), "--sim", "--track", "luigi", "--laps", "1",
              "--max-seconds", "90", "--port", "0", "--headless", "--gamepad", "none",
              "--sessions", str(tmp_path / "sessions"), "--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = last_json(res.stdout)
    assert out["laps_completed"] == 1 and out["ok"]
    assert len(out["lap_times"]) == 1 and out["lap_times"][0] >= lower_bound_s("luigi")
    assert "lap 1:" in res.stdout
    # every step was one poll answered by the real server, none refused
    assert out["server"]["requests"] == out["steps"] and out["server"]["errors"] == 0
    assert out["frame"] == [240, 320]


def test_simulator_window_on_a_display(xvfb, tmp_path):
    """With a DISPLAY the simulator opens its pygame window (its own process: SDL must not
    initialise in the process that loaded TensorFlow)."""
    import os

    from train.model import build_pilotnet, save_model

    model = save_model(build_pilotnet(), tmp_path / "untrained.keras")
    res = subprocess.run(
        [sys.executable, "-m", "drive", "--model", model, "--sim", "--laps", "1", "--max-seconds", "2",
         "--port", "0", "--gamepad", "none", "--sessions", str(tmp_path / "s"), "--json"],
        cwd=ROOT, env={**os.environ, "DISPLAY": xvfb.name}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = last_json(res.stdout)
    assert out["steps"] >= 55 and out["server"]["errors"] == 0 and not out["ok"]  # 2 s of game, no lap


def test_profile_writes_the_request_handling_stats_on_exit(tmp_path):
    """drive --profile: every request is profiled; the stats file and the top rows come out at exit."""
    import pstats

    import numpy as np

    from bench.drive import ServerProcess
    from drive.client import DriveClient
    from train.model import build_pilotnet, save_model

    model = save_model(build_pilotnet(), tmp_path / "m.keras")
    prof = tmp_path / "out" / "drive.prof"
    server = ServerProcess([sys.executable, "-m", "drive", "--model", model, "--port", "0", "--gamepad", "none",
                            "--sessions", str(tmp_path / "sessions"), "--profile", str(prof), "--json"])
    frame = np.zeros((240, 320, 3), np.uint8)
    try:
        with DriveClient("127.0.0.1", server.port) as cli:
            for i in range(5):
                assert cli.post(0, frame, index=i)[0] == 200
            assert cli.post(9, frame)[0] == 404  # a refused request is profiled too
    finally:
        out = server.stop()
    profile = last_json(out)["profile"]
    assert profile["file"] == str(prof) and profile["requests"] == 6
    names = {r["function"] for r in profile["top"]}
    assert any(n.endswith("(answer)") for n in names), names
    stats = pstats.Stats(str(prof))  # a real pstats file
    answers = [v for (path, _line, name), v in stats.stats.items() if name == "answer" and path.endswith("pilot.py")]
    assert answers and answers[0][1] == 5  # pilot.answer ran once per accepted poll
    assert not list(prof.parent.glob(".*tmp*"))  # written through a temp file, renamed
