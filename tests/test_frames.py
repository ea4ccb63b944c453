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


def test_posted_half_size_frames_give_the_same_model_input():
    """drive's plugin posts the 640x480 window box-downscaled 2x2 in C (common.defaults.POST_FRAME_HW):
    on real kartsim frames along a lap the model input differs from the full-size frame's by under
    one gray level on average, so a model trained on 640x480 recordings sees the same picture."""
    from common.defaults import POST_FRAME_HW
    from envs import kartsim

    h, w = POST_FRAME_HW
    vec = kartsim.VecKartSim(1, size=(2 * h, 2 * w), seed=0, track="luigi")
    vec.reset()
    diffs = []
    for t in range(300):
        obs, *_ = vec.step(vec.expert_actions())
        if t % 30 == 0:
            full = obs[0]
            posted = (full.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3)) + 2) // 4  # kp_frame_convert
            a = frames.to_model_input(full).astype(np.int16)
            b = frames.to_model_input(posted.astype(np.uint8)).astype(np.int16)
            diffs.append(np.abs(a - b).mean())
    vec.close()
    assert max(diffs) < 1.0, diffs
    # and it is a real comparison: a frame shifted by a few columns is not "the same"
    shifted = frames.to_model_input(np.roll(full, 8, axis=1)).astype(np.int16)
    assert np.abs(shifted - a).mean() > 2 * max(diffs)
