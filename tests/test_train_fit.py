"""Training on kartsim expert data, the tf.data pipeline, the CLI, and closed-loop evaluation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
# Keras converts tensors with np.array(x) internally; numpy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from common import action as act  # noqa: E402
from common import frames  # noqa: E402
from train import data as tdata  # noqa: E402
from train.simdata import expert_dataset, write_arrays  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    """~10 s of the kartsim expert on luigi, as prepared arrays (80% train / 20% val)."""
    out = str(tmp_path_factory.mktemp("prepared"))
    stats = expert_dataset(out, "luigi", 300, size=(66, 200), seed=1, progress=False)
    assert stats["frames"] == 300
    return out


def test_sim_data_has_prepared_layout(sim_data):
    manifest = tdata.load_manifest(sim_data)
    assert manifest["transform"] == frames.TRANSFORM and manifest["train"] == 240 and manifest["val"] == 60
    tr = tdata.load_split(sim_data, "train")
    assert isinstance(tr.frames, np.memmap) and tr.frames.shape == (240, 66, 200, 3)
    assert (tr.actions >= act.LOW).all() and (tr.actions <= act.HIGH).all()
    assert tr.actions[:, 2].mean() > 0.5  # the expert accelerates


def test_pipeline_batches_shuffles_and_flips_steering(sim_data):
    src = tdata.Source([tdata.load_split(sim_data, "train")])
    ds, steps = tdata.make_dataset(src, 32, training=True, brightness=0.0, flip=True)
    assert steps == 8
    seen, flipped, total = [], 0, 0
    for x, y in ds.take(steps):
        assert x.dtype == tf.uint8 and x.shape[1:] == frames.MODEL_SHAPE and y.shape[1:] == (5,)
        for xi, yi in zip(x.numpy(), y.numpy(), strict=True):
            # find the source row: the frame itself or its mirror image
            hits = np.flatnonzero((src.parts[0].frames[:, 30, :, 0] == xi[30, :, 0]).all(axis=1))
            mirror = np.flatnonzero((src.parts[0].frames[:, 30, ::-1, 0] == xi[30, :, 0]).all(axis=1))
            total += 1
            if len(hits) and np.allclose(src.parts[0].actions[hits[0]], yi):
                seen.append(int(hits[0]))
            else:
                assert len(mirror), "batch frame is neither a source frame nor its mirror"
                want = src.parts[0].actions[mirror[0]].copy()
                want[0] = -want[0]
                np.testing.assert_allclose(yi, want)
                flipped += 1
    assert total == 240 and 0 < flipped < total  # about half are mirrored, steering negated
    assert seen != sorted(seen)  # shuffled


def test_pipeline_brightness_changes_pixels_not_labels():
    x = tf.fill((8, *frames.MODEL_SHAPE), tf.constant(100, tf.uint8))
    y = tf.constant(np.tile([[0.5, 0, 1, 0, 0]], (8, 1)).astype(np.float32))
    xa, ya = tdata.augment(x, y, tf.constant([1, 2]), brightness=0.3, flip=False)
    vals = xa.numpy()[:, 0, 0, 0]
    assert xa.dtype == tf.uint8 and len(set(vals.tolist())) > 1 and (vals >= 70).all() and (vals <= 130).all()
    np.testing.assert_array_equal(ya.numpy(), y.numpy())


def test_augmentation_is_a_function_of_its_seed():
    """The compiled (XLA) augmentation draws from the seed it is given, not from a stream the
    process keeps: the same seed gives the same batch twice, another seed another batch."""
    x = tf.fill((16, *frames.MODEL_SHAPE), tf.constant(100, tf.uint8))
    y = tf.constant(np.tile([[0.5, 0, 1, 0, 0]], (16, 1)).astype(np.float32))
    aug = tdata._compiled_augment(0.3, True)
    a, b, c = (aug(x, y, tf.constant(s, tf.int64)) for s in ([7, 1], [7, 1], [8, 1]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    assert set(np.sign(a[1].numpy()[:, 0]).tolist()) == {-1.0, 1.0}  # some flipped, some not


def test_validation_pipeline_is_ordered_and_unaugmented(sim_data):
    src = tdata.Source([tdata.load_split(sim_data, "val")])
    ds, steps = tdata.make_dataset(src, 16, training=False)
    xs = np.concatenate([x.numpy() for x, _ in ds])
    assert steps == 4
    np.testing.assert_array_equal(xs, src.parts[0].frames[:])


def test_corrections_are_oversampled(sim_data, tmp_path):
    fr = np.zeros((10, *frames.MODEL_SHAPE), np.uint8)
    ac = np.tile(act.NEUTRAL, (10, 1))
    corr = write_arrays(str(tmp_path / "corr"), {"train": (fr, ac), "val": (fr[:2], ac[:2])})
    train, val, _ = tdata.load_sources(sim_data, corr, corrections_weight=3)
    idx = train.epoch_index()
    assert len(idx) == 240 + 30 and (idx >= 240).sum() == 30
    assert len(val) == 62
    x, _ = train.gather(np.array([0, 245, 5]))
    assert x.shape == (3, *frames.MODEL_SHAPE)
    with pytest.raises(ValueError, match="corrections-weight"):
        tdata.load_sources(sim_data, corr, corrections_weight=0)


def test_data_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        tdata.load_manifest(str(tmp_path / "nothere"))
    d = tmp_path / "bad"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"transform": {**frames.TRANSFORM, "height": 64}}))
    with pytest.raises(frames.TransformMismatch, match="height"):
        tdata.load_manifest(str(d))


def test_training_lowers_val_loss_and_resumes(sim_data, tmp_path):
    from train.fit import train

    out = str(tmp_path / "m.keras")
    res = train(sim_data, out, epochs=2, batch_size=32, lr=1e-3, seed=0, progress=False)
    assert os.path.exists(out) and res["epochs"] == 2
    assert res["val_loss"] < res["initial_val_loss"]
    assert set(res["val_mae"]) == set(act.FIELDS)
    assert res["samples_per_s"] > 0 and res["train_samples"] == 240 and res["val_samples"] == 60
    run = res["run_dir"]
    for name in ("last.keras", "log.csv", "learning_curves.png", "steering_val.png", "result.json"):
        assert os.path.exists(os.path.join(run, name)), name
    assert os.listdir(os.path.join(run, "tb"))
    # --resume continues from the last epoch instead of starting again
    res2 = train(sim_data, out, epochs=3, batch_size=32, seed=0, resume=True, progress=False, plots=False)
    with open(os.path.join(run, "log.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert res2["epochs"] == 3 and res2["initial_val_loss"] is None


def test_the_same_seed_trains_the_same_model(sim_data, tmp_path):
    """`python -m train --seed S` fixes the initial weights, the shuffling and the augmentation: two
    runs on the same arrays end at the same val loss (the demo passes a seed for this)."""
    res = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-m", "train", "--data", sim_data, "--out", str(tmp_path / f"m{i}.keras"),
                               "--epochs", "1", "--batch-size", "32", "--seed", "3", "--no-plots", "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        res.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert res[0]["val_loss"] < res[0]["initial_val_loss"]  # it trained
    assert res[0]["initial_val_loss"] == res[1]["initial_val_loss"] and res[0]["val_loss"] == res[1]["val_loss"]


def test_the_same_seed_trains_the_same_model_twice_in_one_process(sim_data, tmp_path):
    """`train dagger` trains its rounds in one process: a seeded fit there must not depend on
    what trained before it (XLA's stateful random ops once carried their stream across fits)."""
    from train.fit import train

    res = [train(sim_data, str(tmp_path / f"p{i}.keras"), epochs=1, batch_size=32, seed=4, progress=False,
                 plots=False) for i in range(2)]
    assert res[0]["initial_val_loss"] == res[1]["initial_val_loss"]
    assert res[0]["val_loss"] == res[1]["val_loss"]


def test_cli_trains_and_prints_json(sim_data, tmp_path):
    out = tmp_path / "cli.keras"
    proc = subprocess.run(
        [sys.executable, "-m", "train", "--data", sim_data, "--out", str(out), "--epochs", "1",
         "--batch-size", "64", "--no-plots", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("train_loss", "val_loss", "val_mae", "epochs", "samples_per_s"):
        assert key in res
    assert res["epochs"] == 1 and out.exists()
    bad = subprocess.run([sys.executable, "-m", "train", "--data", str(tmp_path / "none"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "none" in bad.stderr


def test_evaluate_expert_lap_is_fully_autonomous(tmp_path):
    from train.evaluate import evaluate

    res = evaluate(None, track="luigi", laps=1, out_dir=str(tmp_path), media=True)
    assert res["laps"] == 1 and res["finished"] and res["falls"] == 0
    assert res["autonomy"] == 1.0 and res["interventions"] == 0
    assert res["best_lap_s"] >= res["lower_bound_s"] > 0
    for key in ("gif", "strip", "trace"):
        assert os.path.getsize(res["media"][key]) > 0


def test_evaluate_starts_are_the_seeds_races_and_their_spread():
    from train.evaluate import evaluate, over_starts

    res = evaluate(None, track="luigi", laps=1, seed=4, starts=3, media=False)
    assert [r["seed"] for r in res["starts"]] == [4, 5, 6]
    assert res["lap_times"] == res["starts"][0]["lap_times"]  # the result is the first start's
    for row in res["starts"][1:]:  # each further start is the race a plain run from its seed drives
        alone = evaluate(None, track="luigi", laps=1, seed=row["seed"], media=False)
        assert row["lap_times"] == alone["lap_times"] and row["falls"] == alone["falls"]
    spread = res["over_starts"]
    bests = [r["best_lap_s"] for r in res["starts"]]
    assert spread["starts"] == spread["starts_with_a_lap"] == 3 and spread["falls"] == 0
    assert spread["best_lap_s"] == min(bests) and spread["worst_best_lap_s"] == max(bests)
    # a start without a lap counts as a start but not in the lap spread; falls add up
    rows = [{"best_lap_s": 40.0, "falls": 0}, {"best_lap_s": None, "falls": 3}, {"best_lap_s": 38.0, "falls": 1},
            {"best_lap_s": 39.0, "falls": 0}]
    assert over_starts(rows) == {"starts": 4, "starts_with_a_lap": 3, "falls": 4, "starts_with_a_fall": 2,
                                 "best_lap_s": 38.0, "median_best_lap_s": 39.0, "worst_best_lap_s": 40.0}
    assert "best_lap_s" not in over_starts([{"best_lap_s": None, "falls": 2}])
    with pytest.raises(ValueError, match="starts"):
        evaluate(None, track="luigi", laps=1, starts=0, media=False)


def test_evaluate_perturb_races_the_same_starts_with_noisy_copies_of_the_model(tmp_path):
    """perturbed_weights is relative and seeded; evaluate(perturb=, draws=) races each draw from the
    starts the model raced: with no noise every draw drives those races exactly, with noise they differ,
    and the model's own races are the same either way (the draws drive a copy)."""
    from testing.models import constant_pilotnet
    from train.evaluate import evaluate, perturbed_weights
    from train.model import save_model

    w = [np.array([0.0, 1.0, -2.0], np.float32), np.full((100, 100), 3.0, np.float32)]
    a, b = (perturbed_weights(w, 1e-3, np.random.default_rng(0)) for _ in range(2))
    assert all(np.array_equal(x, y) and x.dtype == np.float32 for x, y in zip(a, b, strict=True))
    assert a[0][0] == 0.0 and a[0][1] != 1.0
    assert 0.8e-3 < float(np.std(a[1] / 3.0 - 1.0)) < 1.2e-3
    assert not np.array_equal(a[1], perturbed_weights(w, 1e-3, np.random.default_rng(1))[1])

    model = constant_pilotnet([0.5, 0, 1, 0, 0])  # circles off-road
    weights = [w.copy() for w in model.get_weights()]
    path = save_model(model, tmp_path / "circle.keras")
    kw = dict(track="luigi", laps=1, max_seconds=8, seed=2, starts=2, media=False, draws=2)
    same, noisy = evaluate(path, perturb=0.0, **kw), evaluate(model, perturb=0.3, **kw)  # a file, a keras model
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))  # left as it was
    assert same["starts"] == noisy["starts"] and [r["seed"] for r in same["starts"]] == [2, 3]
    for res in (same, noisy):
        p = res["perturbed"]
        assert [d["draw"] for d in p["draws"]] == [0, 1] and p["races"] == 4
        assert p["races_with_a_fall"] == sum(d["starts_with_a_fall"] for d in p["draws"])
        assert all([r["seed"] for r in d["per_start"]] == [2, 3] for d in p["draws"])
    assert all(d["per_start"] == same["starts"] for d in same["perturbed"]["draws"])
    autonomy = [[r["autonomy"] for r in d["per_start"]] for d in noisy["perturbed"]["draws"]]
    assert all(a != [r["autonomy"] for r in same["starts"]] for a in autonomy)  # the noise changed the drive
    with pytest.raises(ValueError, match="perturb needs a model"):
        evaluate(None, track="luigi", laps=1, media=False, perturb=1e-6, draws=1)


def test_evaluate_counts_offroad_interventions(tmp_path):
    from train.evaluate import evaluate

    def hard_right(x):  # a bad driver: full right lock, full throttle
        return np.tile(np.array([1.0, 0, 1, 0, 0], np.float32), (len(x), 1))

    res = evaluate(policy=hard_right, track="luigi", laps=1, max_seconds=20, media=False)
    assert res["driver"] == "model" and not res["finished"]
    assert res["interventions"] >= 1 and 0.0 <= res["autonomy"] < 1.0
    assert res["intervention_s"] > 0


def test_evaluate_cli_with_model(tmp_path):
    from train.model import build_pilotnet, save_model

    path = save_model(build_pilotnet(), tmp_path / "untrained.keras")
    proc = subprocess.run(
        [sys.executable, "-m", "train", "evaluate", "--model", path, "--track", "luigi", "--laps", "1",
         "--max-seconds", "2", "--perturb", "1e-6", "--draws", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("laps", "lap_times", "best_lap_s", "falls", "autonomy"):
        assert key in res
    assert res["laps"] == 0 and res["best_lap_s"] is None and res["inference_ms"] > 0
    assert res["perturbed"]["relative_noise"] == 1e-6 and res["perturbed"]["races"] == 1
    assert os.path.exists(res["media"]["trace"]) and os.path.exists(res["media"]["gif"])


def test_dart_noise_perturbs_steering_only():
    from envs.kartsim.dart import DartNoise

    label = np.array([0.2, 0.0, 1.0, 0.0, 1.0], np.float32)
    dart = DartNoise(0.3, seed=0)
    runs = np.array([dart.perturb(label) for _ in range(600)])
    np.testing.assert_array_equal(runs[:, 1:], np.tile(label[1:], (600, 1)))  # buttons untouched
    dev = runs[:, 0] - label[0]
    assert 0.1 < dev.std() < 0.6 and (np.abs(runs[:, 0]) <= 1).all()
    assert np.corrcoef(dev[:-1], dev[1:])[0, 1] > 0.5  # slowly varying, not white noise
    np.testing.assert_array_equal(DartNoise(0.0).perturb(label), label)
    with pytest.raises(ValueError):
        DartNoise(-1)
