"""dataset clean / restore: planted bad frames are found (recall reported), clean sessions untouched."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.clean import analyse, clean, restore
from dataset.session import SessionError, load_image, load_session, read_exclusions, write_exclusions
from testing.sessions import desktop_image, driving_action, game_image, game_session, write_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plant(frames, actions, rng, *, desktops=12, desktop_run=15, black=8, frozen=20):
    """Insert desktop screenshots (isolated and a run), black and frozen frames; returns
    (frames, actions, truth {index: reason})."""
    h, w = frames[0].shape[:2]
    n = len(frames)
    iso = set(rng.choice(np.arange(10, n - 10), desktops, replace=False).tolist())
    out_f, out_a, truth = [], [], {}
    for i in range(n):
        f, a = frames[i], actions[i]
        if i in iso:
            truth[len(out_f)] = "not-the-game"
            f = desktop_image(h, w, rng)
        out_f.append(f)
        out_a.append(a)
        if i == n // 4:  # the emulator lost focus: a run of desktop frames
            shot = desktop_image(h, w, rng)
            for k in range(desktop_run):
                truth[len(out_f)] = "not-the-game"
                out_f.append(shot if k % 4 else desktop_image(h, w, rng))
                out_a.append(a)
        if i == n // 2:
            for _ in range(black):
                truth[len(out_f)] = "black"
                out_f.append(np.zeros_like(f))
                out_a.append(a)
        if i == 3 * n // 4:  # paused emulator
            for _ in range(frozen):
                truth[len(out_f)] = "frozen"
                out_f.append(f.copy())
                out_a.append(a)
    return out_f, out_a, truth


def recall_report(truth, found):
    rep = {}
    for reason in sorted(set(truth.values())):
        want = [i for i, r in truth.items() if r == reason]
        rep[reason] = sum(found.get(i) == reason for i in want) / len(want)
    rep["false_positives"] = sorted(i for i in found if i not in truth)
    return rep


def test_planted_frames_in_a_synthetic_session(tmp_path):
    n = 160
    frames = [game_image(120, 160, i) for i in range(n)]
    actions = [driving_action(i) for i in range(n)]
    frames, actions, truth = plant(frames, actions, np.random.default_rng(3))
    p = write_session(tmp_path / "s", frames, actions)
    rep = recall_report(truth, analyse(p, progress=False)["reasons"])
    print("synthetic recall:", rep)
    assert rep["not-the-game"] == 1.0 and rep["black"] == 1.0 and rep["frozen"] == 1.0
    assert rep["false_positives"] == []


def test_every_reason_and_restore(tmp_path):
    frames = [game_image(120, 160, i) for i in range(60)]
    actions = [driving_action(i) for i in range(60)]
    for i in range(5):  # idle head: nothing pressed before the start
        actions[i] = np.zeros(5, np.float32)
    for i in range(55, 60):  # idle tail
        actions[i] = np.zeros(5, np.float32)
    frames[30] = frames[29].copy()  # one duplicate
    p = write_session(tmp_path / "s", frames, actions)
    rows = list(csv.reader(open(p / "frames.csv")))
    rows[41][3] = "1.5"  # out of range (as written by another tool)
    with open(p / "frames.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    write_exclusions(p, {20: "manual: bad crash"})

    dry = clean(p, dry_run=True, progress=False)
    assert read_exclusions(p) == {20: "manual: bad crash"}  # dry run writes nothing
    rep = clean(p, progress=False)
    assert rep == {**dry, "dry_run": False}
    ex = read_exclusions(p)
    assert [f for f, r in ex.items() if r == "idle-head"] == [0, 1, 2, 3, 4]
    assert [f for f, r in ex.items() if r == "idle-tail"] == [55, 56, 57, 58, 59]
    assert ex[30] == "duplicate" and ex[40] == "out-of-range" and ex[20] == "manual: bad crash"
    assert rep["excluded"] == {"duplicate": 1, "idle-head": 5, "idle-tail": 5, "manual: bad crash": 1,
                               "out-of-range": 1}
    assert len(load_session(p)) == 60 - 13
    assert restore(p, "duplicate")["restored"] == 1 and 30 not in read_exclusions(p)
    assert restore(p)["restored"] == 12
    assert len(load_session(p)) == 60  # nothing was ever deleted


def test_corrupt_image_names_file_and_row(tmp_path):
    p = game_session(tmp_path / "s", n=20)
    (p / "frames" / "0000007.png").write_bytes(b"not a png")
    with pytest.raises(SessionError, match=r"0000007\.png: cannot read image.*row 9"):
        clean(p, progress=False)
    assert not (p / "exclusions.csv").exists()  # stopped before writing anything
    rep = clean(p, skip_bad=True, progress=False)
    assert rep["unreadable"] == [7] and read_exclusions(p)[7] == "unreadable"


def test_cli_json_and_errors(tmp_path):
    p = game_session(tmp_path / "s", n=30)
    out = subprocess.run([sys.executable, "-m", "dataset", "clean", str(p), "--dry-run", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["frames"] == 30 and res["excluded"] == {} and res["dry_run"]
    out = subprocess.run([sys.executable, "-m", "dataset", "clean", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "meta.json: missing session metadata" in out.stderr
    assert "Traceback" not in out.stderr


# ---- on kartsim frames: the real sim session ----

needs_kartsim = pytest.mark.skipif(importlib.util.find_spec("envs.kartsim") is None, reason="envs.kartsim absent")


@pytest.fixture(scope="module")
def sim_session(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "luigi"
    r = subprocess.run([sys.executable, "-m", "record", "--source", "sim", "--track", "luigi", "--seconds", "8",
                        "--fast", "--seed", "1", "--out", str(out), "--quiet", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


@needs_kartsim
@pytest.mark.slow
def test_clean_sim_session_has_no_exclusions(sim_session):
    rep = clean(sim_session, dry_run=True, progress=False)
    assert rep["frames"] == 240 and rep["excluded"] == {}


@needs_kartsim
@pytest.mark.slow
def test_planted_frames_in_a_sim_session(sim_session, tmp_path):
    df = load_session(sim_session)
    frames = [load_image(sim_session, im) for im in df["image"]]
    actions = list(df[["x", "y", "a", "b", "rb"]].to_numpy())
    frames, actions, truth = plant(frames, actions, np.random.default_rng(7))
    p = write_session(tmp_path / "planted", frames, actions)
    rep = recall_report(truth, analyse(p, progress=False)["reasons"])
    print("kartsim recall:", rep)
    assert rep["not-the-game"] >= 0.9 and rep["black"] == 1.0 and rep["frozen"] == 1.0
    assert rep["false_positives"] == []
