"""`python -m drive --rom`: the real mupen64plus with plugin_c's plugin polls the server.

Runs the GPL test ROM headless (the CLI starts its own Xvfb when DISPLAY is
unset); the plugin posts frames of the ``--frame-size`` asked for (HxW, like every size option:
240x320 here, downscaled by the plugin from the 640-wide window), the model answers every poll.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.emulator


def test_emulator_drives_through_the_server(emulator_rom, tmp_path):
    from train.model import build_pilotnet, save_model

    model = save_model(build_pilotnet(), tmp_path / "pilotnet.keras")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    res = subprocess.run(
        [sys.executable, "-m", "drive", "--model", model, "--rom", str(emulator_rom), "--seconds", "10", "--port", "0",
         "--frame-size", "240x320", "--gamepad", "none", "--sessions", str(tmp_path / "sessions"), "--mupen-arg=--configdir",
         f"--mupen-arg={tmp_path / 'mupen'}", "--mupen-arg=--audio", "--mupen-arg=dummy", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["stopped"], out
    assert out["server"]["per_controller"][0] > 10 and out["server"]["errors"] == 0
    port0 = out["ports"]["0"]
    assert port0["frame_shape"] == [240, 320, 3] and port0["driver"] == "model"  # frames were POSTed, HxW
    assert port0["frame_index"] is not None
