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


def indexed_session(path, n: int, *, rate: float = 30.0, sim_fps: float | None = None):
    """n frames whose rb action is i / n, so every array row names its frame; t = 100 + i / rate."""
    frames = [game_image(90, 120, i) for i in range(n)]
    actions = [np.array([0.1, 0, 1, 0, i / n], np.float32) for i in range(n)]
    write_session(path, frames, actions, rate=rate)
    if sim_fps:  # what record --source sim writes (its t is the wall clock, --fast decouples them)
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, "sim_fps": sim_fps}))
    return path


def frames_of(actions: np.ndarray, n: int) -> list[int]:
    return np.round(actions[:, 4] * n).astype(int).tolist()


def test_one_session_is_split_by_time_with_a_gap(tmp_path):
    # 300 frames at 30 Hz (10 s): the last 20% (60 frames, 8..10 s) is val, the 3 s before it
    # (frames 150..239) are left out, frames 0..149 are train
    s = indexed_session(tmp_path / "only", 300)
    write_exclusions(s, {0: "idle-head", 200: "duplicate"})
    m = prepare([s], tmp_path / "p", progress=False)
    tr = np.load(tmp_path / "p" / "train_actions.npy")
    va = np.load(tmp_path / "p" / "val_actions.npy")
    kept = [i for i in range(300) if i not in (0, 200)]
    assert frames_of(va, 300) == kept[-60:] == list(range(240, 300))
    assert frames_of(tr, 300) == list(range(1, 150))
    assert m["split_by"] == "time" and m["val_gap_s"] == 3.0 and (m["train"], m["val"]) == (149, 60)
    head, tail = m["sessions"]
    assert (head["split"], head["block"], head["rows"], head["frame_range"]) == ("train", "head", [0, 149], [1, 149])
    assert (tail["split"], tail["block"], tail["rows"], tail["frame_range"]) == ("val", "tail", [0, 60], [240, 299])
    assert tail["gap"] == {"frames": 89, "seconds": 3.0, "frame_range": [150, 239]}  # frame 200 was excluded
    assert head["excluded"] == {"idle-head": 1} and tail["excluded"] == {}
    assert head["seconds"] == [0.033, 4.967] and tail["seconds"] == [8.0, 9.967]  # since the first frame
    assert json.loads((tmp_path / "p" / "manifest.json").read_text()) == m
    # the CLI says so, and a 30 fps kartsim session recorded --fast (t at 300 Hz) splits the same:
    # game time is frame / sim_fps, not the wall clock
    fast = indexed_session(tmp_path / "fast", 300, rate=300.0, sim_fps=30)
    r = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(fast), "--out", str(tmp_path / "q"),
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["split_by"] == "time" and (res["train"], res["val"]) == (150, 60)
    assert "split by time" in r.stderr and "last 20% of frames is val" in r.stderr and "3 s before" in r.stderr
    # --val-gap 0: no frame left out; two sessions still split whole (never by time)
    m = prepare([s], tmp_path / "g0", val_gap_s=0, progress=False)
    assert (m["train"], m["val"]) == (238, 60)
    m = prepare([s, fast], tmp_path / "two", progress=False)
    assert m["split_by"] == "session" and sorted(e["split"] for e in m["sessions"]) == ["train", "val"]


def test_too_short_to_split_goes_to_train_with_a_warning(tmp_path):
    s = indexed_session(tmp_path / "short", 120)  # 4 s: a 0.8 s tail after a 3 s gap leaves less head than tail
    r = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(s), "--out", str(tmp_path / "p"),
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert (res["train"], res["val"], res["split_by"]) == (120, 0, "session")
    assert "warning: the val split is empty" in r.stderr and "record longer" in r.stderr
    m = prepare([s], tmp_path / "g1", val_gap_s=1.0, progress=False)  # a shorter gap fits
    assert m["split_by"] == "time" and (m["train"], m["val"]) == (66, 24)


def test_a_session_given_twice_with_a_slash_is_one_session(sessions, tmp_path):
    with pytest.raises(PrepareError, match="the same session is given twice"):
        prepare([sessions[0], str(sessions[0]) + "/"], tmp_path / "p", progress=False)
    with pytest.raises(PrepareError, match="given twice"):
        prepare([sessions[0], tmp_path / "x" / ".." / "s0"], tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_force_replaces_only_a_prepared_folder(sessions, tmp_path):
    # the reported loss: `prepare data/sessions/s1 data/sessions/s2 --out data --force`
    data = tmp_path / "data"
    (data / "sessions").mkdir(parents=True)
    s1, s2 = (data / "sessions" / "s1", data / "sessions" / "s2")
    sessions[1].rename(s1)
    sessions[2].rename(s2)
    (data / "models").mkdir()
    (data / "models" / "pilotnet.keras").write_bytes(b"a model")
    before = sorted(p.relative_to(tmp_path) for p in data.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(s1), str(s2), "--out", str(data), "--force"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "dataset prepare: error:" in r.stderr and "holds the input" in r.stderr
    assert sorted(p.relative_to(tmp_path) for p in data.rglob("*")) == before
    with pytest.raises(PrepareError, match="holds the input"):  # --out is the session itself
        prepare([s1], s1, force=True, progress=False)
    with pytest.raises(PrepareError, match="lies inside the input"):
        prepare([s1], s1 / "prepared", force=True, progress=False)
    with pytest.raises(PrepareError, match="not a prepared-data folder of ours.*pilotnet.keras"):
        prepare([s1], data / "models", force=True, progress=False)
    assert (data / "models" / "pilotnet.keras").read_bytes() == b"a model"
    assert sorted(p.relative_to(tmp_path) for p in data.rglob("*")) == before
    # a prepared folder of ours is replaced with --force, and only with it
    out = tmp_path / "prep"
    prepare([s1, s2], out, progress=False)
    with pytest.raises(PrepareError, match="already exists"):
        prepare([s1], out, progress=False)
    m = prepare([s1], out, force=True, val_fraction=0, progress=False)
    assert m["train"] == len(np.load(out / "train_actions.npy")) == 11 and m["kind"] == "kartpilot-prepared"
    # ... but not when something else was put in it, which replacing would delete
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PrepareError, match=r"holds files that are not prepared arrays \(notes.txt\)"):
        prepare([s1], out, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "manifest.json").read_text()) == m
    # a manifest written before "kind" existed is still ours; an empty folder is fine without --force
    (out / "notes.txt").unlink()
    legacy = {k: v for k, v in m.items() if k != "kind"}
    (out / "manifest.json").write_text(json.dumps(legacy))
    assert prepare([s2], out, force=True, val_fraction=0, progress=False)["train"] == 12
    (tmp_path / "empty").mkdir()
    assert prepare([s2], tmp_path / "empty", val_fraction=0, progress=False)["train"] == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_one_writer_for_prepared_arrays(tmp_path):
    from dataset.arrays import ArraysError, write_arrays

    x = np.zeros((4, *fr.MODEL_SHAPE), np.uint8)
    a = np.full((4, 5), 0.5, np.float32)
    out = tmp_path / "arr"
    write_arrays(out, {"train": (x, a), "val": (x[:1], a[:1])}, rate_hz=30)
    m = json.loads((out / "manifest.json").read_text())
    assert (m["train"], m["val"], m["rate_hz"], m["kind"]) == (4, 1, 30, "kartpilot-prepared")
    write_arrays(out, {"train": (x[:2], a[:2]), "val": (x[:1], a[:1])})  # its own folder: replaced
    assert len(np.load(out / "train_frames.npy", mmap_mode="r")) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("not ours")
    with pytest.raises(ArraysError, match="not a prepared-data folder of ours"):
        write_arrays(other, {"train": (x, a), "val": (x, a)})
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


def test_a_full_disk_is_a_clean_error_not_a_crash(sessions, tmp_path):
    """The arrays are memory-mapped: without reserving their blocks first, a full disk is a
    SIGBUS mid-write (seen as exit -7 with a temp folder left behind)."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = (f"mount -t tmpfs -o size=256k tmpfs {mnt} && cd {root} && "
           f"{sys.executable} -m dataset prepare {' '.join(map(str, sessions))} --out {mnt}/prep; "
           f"echo rc=$?; ls -a {mnt}")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    rc = int(out.stdout.split("rc=")[1].split()[0])
    assert rc == 2, (out.stdout, out.stderr)  # an error message, not a signal
    assert "no room" in out.stderr or "No space" in out.stderr, out.stderr
    assert out.stdout.split()[1:] == [".", ".."], out.stdout  # nothing left behind
