"""The one frame -> model input transform."""

import numpy as np
import pytest

from common import frames


def test_any_size_becomes_model_shape():
    for shape in [(240, 320, 3), (480, 640, 3), (100, 100, 3)]:
        out = frames.to_model_input(np.zeros(shape, np.uint8))
        assert out.shape == frames.MODEL_SHAPE and out.dtype == np.uint8


def test_crop_drops_the_top_rows():
    img = np.zeros((240, 320, 3), np.uint8)
    top, _ = frames.crop_rows(240)
    img[: top - 2] = 255  # sky: white, must vanish
    img[top + 2 :, :, 1] = 200  # road area: green
    out = frames.to_model_input(img)
    assert out[..., 0].max() < 60 and out[5:, :, 1].min() > 150


def test_model_size_frame_passes_through():
    img = np.random.default_rng(0).integers(0, 255, frames.MODEL_SHAPE, dtype=np.uint8)
    assert frames.to_model_input(img) is img


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        frames.to_model_input(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        frames.to_model_input(np.zeros((10, 10, 3), np.float32))


def test_transform_check_names_the_difference():
    frames.check_transform(dict(frames.TRANSFORM))
    bad = dict(frames.TRANSFORM, crop_top=0.1)
    with pytest.raises(frames.TransformMismatch, match="crop_top"):
        frames.check_transform(bad, "model.keras")
    with pytest.raises(frames.TransformMismatch, match="records no frame transform"):
        frames.check_transform(None)
