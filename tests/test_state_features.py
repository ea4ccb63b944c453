"""Kart state features beside the frame (common.state): kartsim computes them, demos keep them,
a model trained on them takes them, evaluate and fine-tune feed them, drive refuses such a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import frames as fr
from common import state as kstate
from envs import kartsim
from envs.kartsim import physics as P
from envs.kartsim.state import batch_features, features
from testing.models import tiny_pilotnet

ROOT = Path(__file__).resolve().parents[1]


def test_layout_and_values_follow_the_kart():
    env = kartsim.make(track="luigi", size=fr.MODEL_SHAPE[:2], seed=0)
    env.reset(seed=0)
    sim = env.unwrapped.sim
    track = env.unwrapped.track
    row = batch_features(sim)[0]
    assert row.shape == (kstate.SIZE,) and row.dtype == np.float32
    assert len(kstate.FIELDS) == kstate.SIZE == len(set(kstate.FIELDS))
    col = {name: row[i] for i, name in enumerate(kstate.FIELDS)}
    assert col["speed"] == 0.0 and col["drift"] == 0.0 and col["airborne"] == 0.0
    assert abs(col["offset"]) < 0.4 and col["heading_cos"] > 0.99  # on the grid, facing along the track
    frac = (sim.fs[0, P.PROG] % track.length) / track.length
    for k in kstate.LAP_FREQS:
        assert col[f"lap_sin{k}"] == pytest.approx(np.sin(2 * np.pi * k * frac), abs=1e-5)
        assert col[f"lap_cos{k}"] == pytest.approx(np.cos(2 * np.pi * k * frac), abs=1e-5)
    for _ in range(60):  # full throttle: the speed feature is the speed over the top speed
        _, _, _, _, info = env.step([0, 0, 1, 0, 0])
    row = batch_features(sim)[0]
    assert row[0] == pytest.approx(info["speed"] / kartsim.kart.VMAX, rel=1e-5) and row[0] > 0.3
    # moved sideways by a quarter of the road to the left (the normal's side): offset +0.5 more
    i = sim.ist[0, P.IDX]
    fs, ist = sim.fs.copy(), sim.ist.copy()
    fs[0, P.X] += 0.25 * track.width[i] * track.nrm[i, 0]
    fs[0, P.Y] += 0.25 * track.width[i] * track.nrm[i, 1]
    ist[0, P.DDIR] = -1
    moved = features(track, fs, ist)[0]
    assert moved[1] - row[1] == pytest.approx(0.5, abs=1e-4)
    assert moved[4] == -1.0
    env.close()


def test_arrays_model_evaluate_and_drive_with_state(tmp_path):
    from drive.runner import DriveError, load_policy
    from train.model import load_model, state_fields
    from train.policy import Policy

    data = tmp_path / "demos"
    cmd = [sys.executable, "-m", "train", "demos", "--track", "luigi", "--frames", "200", "--state",
           "--out", str(data), "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["state_fields"] == list(kstate.FIELDS)
    st = np.load(data / "train_state.npy")
    assert st.shape == (160, kstate.SIZE) and np.load(data / "val_state.npy").shape == (40, kstate.SIZE)
    assert st[:, 0].max() > 0.3  # the expert drove off: speeds are in the rows
    model = tmp_path / "state.keras"
    proc = subprocess.run([sys.executable, "-m", "train", "--data", str(data), "--out", str(model), "--epochs", "1",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert state_fields(load_model(model)) == list(kstate.FIELDS)
    policy = Policy(str(model))
    assert policy.needs_state
    frame = np.zeros((2, *fr.MODEL_SHAPE), np.uint8)
    with pytest.raises(kstate.StateMismatch, match="state features"):
        policy(frame)
    with pytest.raises(kstate.StateMismatch, match="rows"):
        policy(frame, np.zeros((3, kstate.SIZE), np.float32))
    assert policy(frame, np.zeros((2, kstate.SIZE), np.float32)).shape == (2, 5)
    # closed-loop evaluation feeds the state rows
    proc = subprocess.run([sys.executable, "-m", "train", "evaluate", "--model", str(model), "--track", "luigi",
                           "--laps", "1", "--max-seconds", "3", "--no-media", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["race_time_s"] == pytest.approx(3.0, abs=0.05)
    # drive's polls carry frames only: such a model is refused, naming why
    with pytest.raises(DriveError, match="state features"):
        load_policy(model)


def test_state_decides_the_action():
    from train.policy import Policy

    policy = Policy(tiny_pilotnet(3, state=True))
    frames = np.full((2, *fr.MODEL_SHAPE), 90, np.uint8)
    rows = np.random.default_rng(0).normal(size=(2, kstate.SIZE)).astype(np.float32) * 3
    out = policy(frames, rows)
    assert not np.allclose(out[0], out[1])  # same frame, other state: another action


def test_arrays_writer_keeps_state_or_refuses(tmp_path):
    from dataset.arrays import ArraysWriter, write_arrays
    from train.data import load_sources, make_dataset

    n = 12
    f = np.random.default_rng(0).integers(0, 256, (n, *fr.MODEL_SHAPE), dtype=np.uint8)
    a = np.zeros((n, 5), np.float32)
    s = np.arange(n * kstate.SIZE, dtype=np.float32).reshape(n, kstate.SIZE)
    with pytest.raises(ValueError, match="every split"):
        write_arrays(tmp_path / "mixed", {"train": (f, a, s), "val": (f, a)})
    out = tmp_path / "arrays"
    write_arrays(out, {"train": (f[:8], a[:8], s[:8]), "val": (f[8:], a[8:], s[8:])})
    write_arrays(out, {"train": (f[:8], a[:8], s[:8]), "val": (f[8:], a[8:], s[8:])})  # replaces its own
    train, val, manifest = load_sources(str(out))
    assert train.has_state and manifest["state_fields"] == list(kstate.FIELDS)
    ds, _ = make_dataset(val, 4, training=False)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x["state"].numpy(), s[8:12])
    with ArraysWriter(tmp_path / "w", {"train": 1}, state=True) as w, \
            pytest.raises(kstate.StateMismatch, match="state features"):
        w.add("train", f[0], a[0])
    with ArraysWriter(tmp_path / "w2", {"train": 1}) as w, pytest.raises(ValueError, match="without state"):
        w.add("train", f[0], a[0], s[0])
    bad = json.loads((out / "manifest.json").read_text())
    bad["state_fields"] = ["speed"]
    (out / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(kstate.StateMismatch, match="state fields"):
        load_sources(str(out))


def test_finetune_feeds_state_rows_and_exports():
    from train.finetune.agent import ActorCritic
    from train.finetune.envs import KartSimBackend
    from train.finetune.rollout import Collector, evaluate

    env = KartSimBackend(track="luigi", num_envs=3, action_repeat=4, seed=0)
    net = ActorCritic(tiny_pilotnet(1, state=True))
    col = Collector(net, env, 0.99, seed=0)
    np.testing.assert_array_equal(col.state, batch_features(env.vec.sim))
    buf = col.collect(6)
    # the collector keeps the rows of the observation it holds; the trunk's features end with them
    np.testing.assert_array_equal(col.state, batch_features(env.vec.sim))
    np.testing.assert_allclose(net.features(col.obs, col.state)[:, -kstate.SIZE:], col.state, rtol=1e-6)
    np.testing.assert_allclose(buf["feats"][-1, :, -kstate.SIZE:], col.stack.buf[:, 0, -kstate.SIZE:])
    assert buf["feats"].shape == (6, 3, net.feature_dim)
    assert "state" in col.get_state()
    res = evaluate(env, laps=1, max_frames=40, net=net)
    assert res["frames"] == 40
    with pytest.raises(kstate.StateMismatch, match="none were given"):
        net.features(np.zeros((1, *fr.MODEL_SHAPE), np.uint8))
    env.has_state = False  # a backend without state rows (the emulator) is refused up front
    with pytest.raises(kstate.StateMismatch, match="KartSimBackend backend gives none"):
        Collector(net, env, 0.99, seed=0)
    env.close()


def test_an_ended_env_gives_the_rows_of_its_last_frame():
    from train.finetune.envs import KartSimBackend

    # truncated after 6 game frames: with a repeat of 4 it ends inside the second step, and the rows
    # it shows with the ending flag are those of that frame, as one frame at a time shows them
    throttle = np.tile(np.array([[0, 0, 1, 0, 0]], np.float32), (2, 1))
    a = KartSimBackend(track="luigi", num_envs=2, action_repeat=4, seed=0, max_time_s=0.2)
    b = KartSimBackend(track="luigi", num_envs=2, action_repeat=1, seed=0, max_time_s=0.2)
    a.reset(), b.reset()
    np.testing.assert_array_equal(a.state(), b.state())
    a.step(throttle)
    res = a.step(throttle)
    assert res.truncated.all()
    for _ in range(6):
        rb = b.step(throttle)
    assert rb.truncated.all()
    np.testing.assert_allclose(a.state(), b.state(), rtol=1e-6)
    assert a.state()[0, 0] > 0  # moving: the last frame's rows, not the next episode's standstill
    assert not np.allclose(a.state(), batch_features(a.vec.sim))
    a.close(), b.close()


def test_bench_finetune_measures_a_state_model():
    """bench.finetune's forward limit feeds a --state clone the collector's state rows beside
    its frames (it used to call the acting graph with frames alone: StateMismatch)."""
    from bench.finetune import bench_repeat

    out = bench_repeat(tiny_pilotnet(1, state=True), envs=2, repeat=1, updates=1, rollout=4)
    assert out["frames_per_update"] == 8
    for key in ("frames_per_s", "forward_limit_frames_per_s", "learn_limit_frames_per_s", "sim_only_frames_per_s"):
        assert np.isfinite(out[key]) and out[key] > 0, (key, out)
