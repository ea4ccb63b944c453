"""The real-ROM walkthrough of envs/mupen/README.md, command by command, on the GPL test ROM.

Each step runs the walkthrough's own command with the test ROM (and its profile, ``--env
mupen-test``) in place of Mario Kart 64, headless, for a few seconds of emulation each:
savestate, live telemetry, a plugin recording, prepare + train, ``make drive``, fine-tune.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.mupen.env import LOADED
from envs.mupen.rom import read_big_endian

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.emulator


def _run(cmd, timeout=300, said: list | None = None, **kw) -> dict:
    """Run ``cmd`` headless; its JSON result (``said`` gets its whole stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}  # headless: the commands use Xvfb
    res = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    if said is not None:
        said.append(res.stdout + res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_walkthrough_commands_run_on_the_test_rom(emulator_rom, tmp_path):
    from train.model import build_pilotnet, save_model

    rom, py = str(emulator_rom), sys.executable
    mupen_args = ["--mupen-arg=--configdir", f"--mupen-arg={tmp_path / 'mupen'}", "--mupen-arg=--audio",
                  "--mupen-arg=dummy"]

    # 1. the reset savestate (MK64: interactive; the test ROM has nothing to choose: headless)
    state = tmp_path / "state.st"
    out = _run([py, "-m", "envs.mupen", "savestate", "--rom", rom, "--out", state, "--after-frames", "30", "--json"])
    assert state.is_file() and out["bytes"] > 0

    # 2. live telemetry from that state: the plugin's telemetry path, decoded by the profile
    out = _run([py, "-m", "envs.mupen", "telemetry", "--rom", rom, "--state", state, "--driver", "throttle",
                "--steps", "60", "--every", "20", "--json"])
    assert out["profile"] == "test" and out["polls"] == 60 and out["lines"] == 3 and out["restarts"] == 0
    entry = int.from_bytes(read_big_endian(rom, 0x1000, 4), "big")
    assert out["last"]["words"][0] == entry  # RDRAM at the entry point, as the ROM has it at 0x1000

    # 3. record with the plugin as the source (human mode; nobody at the pad here): two sessions,
    #    one of them for validation
    starter = save_model(build_pilotnet(), tmp_path / "starter.keras")
    sessions = tmp_path / "sessions"
    said: list[str] = []
    for _ in range(2):
        _run([py, "-m", "drive", "--model", starter, "--rom", rom, "--mode", "human", "--record",
              "--gamepad", "none", "--port", "0", "--sessions", sessions, "--seconds", "6",
              "--state", state, *mupen_args, "--json"], said=said)
    for text in said:  # the plugin loaded the state at its first poll, and the core took it
        assert "load state" in text and f"{LOADED}: state.st" in text, text[-3000:]
    recorded = sorted(p for p in sessions.iterdir() if (p / "meta.json").is_file())
    assert len(recorded) == 2
    for rec in recorded:
        meta = json.loads((rec / "meta.json").read_text())
        assert meta["source"] == "plugin" and meta["frames"] > 20, meta

    # 4. train: prepare the sessions, fit a model (one epoch here)
    prepared = tmp_path / "prepared"
    _run([py, "-m", "dataset", "prepare", *recorded, "--val", recorded[1], "--out", prepared, "--force", "--json"])
    model = tmp_path / "mk.keras"
    _run([py, "-m", "train", "--data", prepared, "--out", model, "--epochs", "1", "--json"], timeout=600)
    assert model.is_file()

    # 5. make drive ROM=... STATE=...: the model drives the emulator from the savestate
    stamp = tmp_path / "stamp"  # stands for the Makefile's venv stamp: this interpreter is set up
    stamp.touch()
    out = _run(["make", "-s", "drive", f"ROM={rom}", f"STATE={state}", f"MODEL={model}", f"PY={py}",
                f"STAMP={stamp}", "DRIVE_ARGS=" + " ".join(["--seconds 6 --gamepad none --port 0 --json",
                                                           f"--sessions {tmp_path / 's2'}", *mupen_args])])
    assert out["ok"] and out["server"]["per_controller"][0] > 10 and out["ports"]["0"]["driver"] == "model"

    # 6. fine-tune on emulators (2 here, 24 in the walkthrough), as `make finetune ENV=...` runs it
    out = _run([py, "-m", "train.finetune", "--rom", rom, "--state", state,
                "--model", model, "--env", "mupen-test", "--track", "mupen-test", "--eval-tracks", "mupen-test",
                "--frames", "32", "--envs", "2", "--rollout", "8", "--warmup-frames", "0", "--eval-max-s", "1",
                "--eval-envs", "1", "--out", tmp_path / "ft", "--no-tensorboard", "--quiet", "--json"],
               timeout=600)
    assert out["frames"] >= 32 and (tmp_path / "ft" / "eval.csv").is_file()
