"""The emulator behind the learner's VecEnvBackend: PPO updates on 2 real mupen64plus instances."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.emulator


@pytest.fixture
def emu_ready(emulator_rom):
    return emulator_rom


def test_backend_interface(emu_ready):
    from envs.vecenv import VecEnvBackend
    from train.finetune.envs import make_backend

    env = make_backend("mupen-test", track="test", num_envs=2, action_repeat=3, seed=0, shaping=None,
                       rom=str(emu_ready))
    try:
        assert isinstance(env, VecEnvBackend)
        obs = env.reset()
        assert obs.shape == (2, 66, 200, 3) and obs.dtype == np.uint8
        idx0 = [e._held.index for e in env.vec.envs]
        for _ in range(4):
            res = env.step(np.tile([0.5, 0, 1, 0, 0], (2, 1)).astype(np.float32))
        assert res.obs.shape == (2, 66, 200, 3) and res.reward.dtype == np.float32
        assert set(res.info) >= {"progress", "lap", "speed", "falls", "new_laps"}
        # 4 decisions x 3 polls each: the emulators advanced, at most one rendered frame per poll
        for e, i in zip(env.vec.envs, idx0, strict=True):
            assert 0 < e._held.index - i <= 12
    finally:
        env.close()


def test_mk64_backend_refuses_the_wrong_rom(emu_ready, monkeypatch):
    from envs.mupen.rom import RomError
    from train.finetune.envs import make_backend

    with pytest.raises(RomError, match="MARIOKART64"):
        make_backend("mk64", track="luigi", num_envs=1, action_repeat=4, seed=0, shaping=None,
                     rom=str(emu_ready))
    monkeypatch.delenv("KARTPILOT_ROM", raising=False)
    with pytest.raises(ValueError, match="ROM"):
        make_backend("mk64", track="luigi", num_envs=1, action_repeat=4, seed=0, shaping=None, rom="")


def test_ppo_updates_on_emulators(emu_ready, tmp_path, monkeypatch):
    from testing.models import tiny_pilotnet
    from train.finetune.ppo import PPOConfig
    from train.finetune.trainer import Config, Trainer
    from train.model import save_model

    monkeypatch.setenv("KARTPILOT_TEST_ROM", str(emu_ready))
    model = save_model(tiny_pilotnet(seed=1), str(tmp_path / "tiny.keras"))
    cfg = Config(model=model, env="mupen-test", track="test", eval_tracks=(), envs=2, action_repeat=2,
                 rollout=8, warmup_frames=0, out=str(tmp_path / "run"), tensorboard=False, seed=0,
                 frames=10**6, ppo=PPOConfig(epochs=1, minibatch=16))
    trainer = Trainer(cfg)
    try:
        for _ in range(2):
            row = trainer.train_update()
        assert trainer.frames == 2 * 8 * 2 * 2 and row["phase"] == "ppo"
        assert np.isfinite(row.get("reward_per_s", 0.0))
    finally:
        trainer.close()


def test_cli_finetunes_on_the_test_rom(emu_ready, tmp_path):
    """``python -m train.finetune --env mupen-test`` end to end: 2 emulators train, a third evaluates."""
    import json
    import subprocess
    import sys

    from testing.models import tiny_pilotnet
    from train.model import save_model

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = save_model(tiny_pilotnet(seed=1), str(tmp_path / "tiny.keras"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "train.finetune", "--env", "mupen-test", "--rom", str(emu_ready),
           "--model", model, "--track", "test", "--envs", "2", "--action-repeat", "2", "--rollout", "8",
           "--frames", "64", "--warmup-frames", "0", "--epochs", "1", "--minibatch", "16", "--eval-laps", "1",
           "--eval-max-s", "1", "--out", str(out), "--no-tensorboard", "--quiet", "--json"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 64 and summary["updates"] == 2  # 2 updates x 8 decisions x 2 envs x 2 frames
    assert summary["envs"] == 2 and summary["action_repeat"] == 2 and summary["track"] == "test"
    assert summary["expert_best_lap_s"] is None and summary["lower_bound_s"] is None  # no expert, no bound
    assert summary["evals"] == 1  # the final evaluation ran on its own emulator
    for name in ("ckpt/state.npz", "ckpt/actor.keras", "train.csv", "eval.csv", "summary.json"):
        assert (out / name).exists(), name
