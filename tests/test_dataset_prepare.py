"""dataset prepare: split by session, memory-mappable arrays, manifest, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common import frames as fr
from dataset.prepare import PrepareError, prepare, split_sessions
from dataset.session import SessionError, write_exclusions
from testing.sessions import game_image, write_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tagged_session(path, tag: int, n: int):
    """Frames whose x action is the session's tag, so every array row can be traced back."""
    frames = [game_image(90, 120, 7 * tag + i) for i in range(n)]
    actions = [np.array([tag / 10, 0, 1, 0, i / n], np.float32) for i in range(n)]
    return write_session(path, frames, actions)


@pytest.fixture
def sessions(tmp_path):
    return [tagged_session(tmp_path / f"s{t}", t, 10 + t) for t in range(5)]


def test_split_by_session_never_mixes(sessions, tmp_path):
    write_exclusions(sessions[0], {0: "black", 1: "idle-head", 2: "idle-head"})
    out = tmp_path / "prep"
    m = prepare(sessions, out, val_fraction=0.4, progress=False)
    tr_x = np.load(out / "train_frames.npy", mmap_mode="r")
    tr_a = np.load(out / "train_actions.npy", mmap_mode="r")
    va_x = np.load(out / "val_frames.npy", mmap_mode="r")
    va_a = np.load(out / "val_actions.npy", mmap_mode="r")
    assert isinstance(tr_x, np.memmap) and tr_x.dtype == np.uint8 and tr_x.shape[1:] == fr.MODEL_SHAPE
    assert tr_a.dtype == np.float32 and tr_a.shape[1] == 5
    train_tags = set(np.round(tr_a[:, 0] * 10).astype(int).tolist())
    val_tags = set(np.round(va_a[:, 0] * 10).astype(int).tolist())
    assert train_tags and val_tags and not train_tags & val_tags  # no session on both sides
    assert len(val_tags) == 2  # 40% of 5 sessions
    assert m["train"] == len(tr_x) and m["val"] == len(va_x) == len(va_a)
    assert m["train"] + m["val"] == sum(10 + t for t in range(5)) - 3  # exclusions left out
    assert m["transform"] == fr.TRANSFORM and m["action_fields"] == ["x", "y", "a", "b", "rb"]
    for e in m["sessions"]:
        tag = int(os.path.basename(e["path"])[1:])
        arr_a = tr_a if e["split"] == "train" else va_a
        arr_x = tr_x if e["split"] == "train" else va_x
        lo, hi = e["rows"]
        assert np.allclose(arr_a[lo:hi, 0], tag / 10) and hi - lo == e["frames"]
        assert e["source"] == "sim" and e["drivers"] == {"expert": e["frames"]}
        if tag == 0:
            assert e["excluded"] == {"black": 1, "idle-head": 2} and e["total"] == 10
            first = 3  # the first kept frame
        else:
            first = 0
        np.testing.assert_array_equal(arr_x[lo], fr.to_model_input(game_image(90, 120, 7 * tag + first)))
    assert json.loads((out / "manifest.json").read_text()) == m
    # deterministic for a seed; --val picks the sessions explicitly
    assert split_sessions([str(s) for s in sessions], 0.4) == split_sessions([str(s) for s in sessions], 0.4)
    m2 = prepare(sessions, tmp_path / "p2", val=[str(sessions[1])], progress=False)
    assert [e["split"] for e in m2["sessions"]] == ["train", "val", "train", "train", "train"]


def test_bad_image_stops_before_writing_anything(sessions, tmp_path):
    (sessions[2] / "frames" / "0000004.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "prep"
    with pytest.raises(SessionError, match=r"s2/frames/0000004\.png: cannot read image.*row 6"):
        prepare(sessions, out, progress=False)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".prep")]
    m = prepare(sessions, out, skip_bad=True, progress=False)
    e = next(e for e in m["sessions"] if e["path"].endswith("s2"))
    assert e["skipped_bad"] == [4] and e["frames"] == 11
    n = m["train"] + m["val"]
    assert n == sum(10 + t for t in range(5)) - 1
    assert len(np.load(out / "train_frames.npy", mmap_mode="r")) == m["train"]
    with pytest.raises(PrepareError, match="already exists"):
        prepare(sessions, out, skip_bad=True, progress=False)


def test_one_session_and_cli(tmp_path):
    s = tagged_session(tmp_path / "only", 3, 12)
    out = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(s), "--out", str(tmp_path / "p"),
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["train"] == 12 and res["val"] == 0  # a session is never split, even alone
    out = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "q")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "nope/meta.json: missing session metadata" in out.stderr
    assert not (tmp_path / "q").exists()
