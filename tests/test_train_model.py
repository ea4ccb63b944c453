"""PilotNet, its loss, save/load with the transform check, and Policy."""

from __future__ import annotations

import threading
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
# Keras converts tensors with np.array(x) internally; numpy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

from common import action as act  # noqa: E402
from common import frames  # noqa: E402
from train.model import (  # noqa: E402
    ActionRange,
    build_pilotnet,
    euclidean_loss,
    load_model,
    read_model_config,
    save_model,
)
from train.policy import Policy  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_pilotnet(dropout=0.1)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("m") / "pilotnet.keras")


def _frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *frames.MODEL_SHAPE), dtype=np.uint8)


def _grad(y_true, y_pred):
    p = tf.Variable(np.asarray(y_pred, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(euclidean_loss(tf.constant(y_true, tf.float32), p))
    return float(loss), tape.gradient(loss, p).numpy()


def test_loss_is_euclidean_distance():
    y = np.array([[0.5, -0.2, 1.0, 0.0, 0.0]], np.float32)
    p = np.array([[0.2, 0.2, 1.0, 0.0, 0.0]], np.float32)
    loss, grad = _grad(y, p)
    assert loss == pytest.approx(0.5, abs=1e-3)  # 3-4-5 triangle scaled by 0.1
    # d/dp |p - y| = (p - y) / |p - y|: a unit vector
    np.testing.assert_allclose(grad[0], (p - y)[0] / 0.5, atol=1e-3)


def test_loss_gradient_finite_at_exactly_zero_distance():
    y = np.array([[0.3, 0.0, 1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0, 0.0]], np.float32)
    loss, grad = _grad(y, y.copy())
    assert loss == pytest.approx(0.0, abs=1e-7)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad, 0.0)


def test_loss_gradient_finite_near_zero_distance():
    y = np.zeros((1, 5), np.float32)
    _, grad = _grad(y, y + 1e-7)
    assert np.isfinite(grad).all() and np.abs(grad).max() <= 1.0


def test_pilotnet_shapes_and_ranges(model):
    assert model.input_shape == (None, 66, 200, 3)
    assert model.output_shape == (None, 5)
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [24, 36, 48, 64, 64]
    dense = [layer.units for layer in model.layers if hasattr(layer, "units")]
    assert dense == [1164, 100, 50, 10, 5]
    assert sum(1 for layer in model.layers if "drop" in layer.name) == 3
    assert not any("drop" in layer.name for layer in build_pilotnet(0.0).layers)
    out = np.asarray(model(_frames(3)))
    assert out.shape == (3, 5) and out.dtype == np.float32
    assert (out >= act.LOW).all() and (out <= act.HIGH).all()


def test_action_range_maps_softsign_onto_fields():
    s = np.array([[-1.0, 1.0, -1.0, 0.0, 1.0]], np.float32)
    out = np.asarray(ActionRange()(s))
    np.testing.assert_allclose(out, [[-1.0, 1.0, 0.0, 0.5, 1.0]])


def test_save_load_round_trip_keeps_weights_and_transform(model, saved):
    cfg = read_model_config(saved)
    assert cfg["transform"] == frames.TRANSFORM
    assert cfg["action_layout"]["fields"] == list(act.FIELDS)
    loaded = load_model(saved)
    x = _frames(4, seed=1)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_load_refuses_other_transform(tmp_path):
    other = build_pilotnet()
    other.get_layer("frame_input").transform = {**frames.TRANSFORM, "crop_top": 0.5}
    path = save_model(other, tmp_path / "other.keras")
    with pytest.raises(frames.TransformMismatch, match=r"crop_top.*0\.5"):
        load_model(path)
    with pytest.raises(frames.TransformMismatch):
        Policy(path)


def test_load_refuses_other_action_layout(tmp_path):
    other = build_pilotnet()
    other.get_layer("frame_input").action_layout = {"fields": ["steer", "gas"], "low": [-1, 0], "high": [1, 1]}
    path = save_model(other, tmp_path / "layout.keras")
    with pytest.raises(frames.TransformMismatch, match="action layout"):
        load_model(path)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        load_model(missing)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.keras"):
        load_model(junk)
    bare = tmp_path / "bare.keras"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("config.json", '{"class_name": "Functional", "config": {"layers": []}}')
    with pytest.raises(frames.TransformMismatch, match="records no frame transform"):
        load_model(bare)


def test_policy_batches_in_range_and_matches_model(model, saved):
    policy = Policy(saved)
    x = _frames(7, seed=2)
    out = policy(x)
    assert out.shape == (7, 5) and out.dtype == np.float32
    assert (out >= act.LOW).all() and (out <= act.HIGH).all()
    np.testing.assert_allclose(out, np.asarray(model(x)), atol=1e-5)
    assert policy(x[0]).shape == (5,)
    assert policy(x[:0]).shape == (0, 5)
    assert policy.act(np.zeros((240, 320, 3), np.uint8)).shape == (5,)
    with pytest.raises(ValueError, match="uint8"):
        policy(x.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        policy(np.zeros((2, 64, 64, 3), np.uint8))


def test_policy_is_thread_safe(model):
    policy = Policy(model)
    batches = [_frames(1 + i % 3, seed=i) for i in range(8)]
    expected = [policy(b) for b in batches]
    results: dict[int, np.ndarray] = {}

    def worker(i):
        for _ in range(5):
            results[i] = policy(batches[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, exp in enumerate(expected):
        np.testing.assert_allclose(results[i], exp, atol=1e-6)


@pytest.mark.parametrize("damage", ["garbage", "half-zeroed"])
def test_load_reports_damaged_weights_naming_the_file(saved, tmp_path, damage):
    bad = tmp_path / f"{damage}.keras"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(".h5"):  # h5py raises OSError for the first, RuntimeError for the second
                data = b"garbage" * 100 if damage == "garbage" else data[: len(data) // 2] + bytes(len(data) // 2 + 1)
            dst.writestr(name, data)
    with pytest.raises(ValueError, match=f"model {bad} is damaged: its weights cannot be read"):
        load_model(bad)
