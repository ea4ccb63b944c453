"""The sim source: kartsim frames at 30 Hz with the expert (headless), and keyboard driving."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.session import load_image, load_session, read_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_kartsim = pytest.mark.skipif(importlib.util.find_spec("envs.kartsim") is None, reason="envs.kartsim absent")


@needs_kartsim
@pytest.mark.slow
def test_sim_at_30hz_then_clean_and_prepare(tmp_path):
    out = tmp_path / "sim"
    r = subprocess.run([sys.executable, "-m", "record", "--source", "sim", "--track", "luigi", "--seconds", "3",
                        "--out", str(out), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["captured"] + summary["missed_ticks"] == 90  # 3 s at 30 Hz, real time
    assert summary["frames"] + summary["dropped"] == 90 and not summary["fast"]
    assert "frames" in r.stderr and "Hz" in r.stderr  # the status line
    meta = read_meta(out)
    assert meta["source"] == "sim" and meta["track"] == "luigi" and meta["resolution"] == [240, 320]
    assert meta["rate_hz"] == 30 and meta["driver"] == "expert" and meta["summary"]["frames"] == summary["frames"]
    df = load_session(out, check_images=True)
    assert len(df) == summary["frames"] and (df["driver"] == "expert").all()
    assert df["a"].max() == 1.0  # the expert accelerates
    a, b = load_image(out, df["image"].iat[0]), load_image(out, df["image"].iat[-1])
    assert a.shape == (240, 320, 3) and not np.array_equal(a, b)
    # record -> clean -> prepare, the `make record SOURCE=sim` path
    c = subprocess.run([sys.executable, "-m", "dataset", "clean", str(out), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr
    p = subprocess.run([sys.executable, "-m", "dataset", "prepare", str(out), "--out", str(tmp_path / "prep"),
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    prep = json.loads(p.stdout.strip().splitlines()[-1])
    kept = json.loads(c.stdout.strip().splitlines()[-1])["kept"]
    assert prep["train"] == kept and prep["val"] == 0


def test_keyboard_driver_reads_key_events(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from record.keyboard import KeyboardDriver

    kb = KeyboardDriver()
    pg = kb.pg
    try:
        kb.show(np.zeros((24, 32, 3), np.uint8))
        assert kb.state().tolist() == [0, 0, 0, 0, 0]
        for key in (pg.K_RIGHT, pg.K_x, pg.K_LSHIFT):
            pg.event.post(pg.event.Event(pg.KEYDOWN, key=key))
        assert kb.state().tolist() == [1, 0, 1, 0, 1]
        pg.event.post(pg.event.Event(pg.KEYUP, key=pg.K_RIGHT))
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_LEFT))
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_z))
        assert kb.state().tolist() == [-1, 0, 1, 1, 1]
        assert not kb.quit
        pg.event.post(pg.event.Event(pg.KEYDOWN, key=pg.K_ESCAPE))
        kb.state()
        assert kb.quit
    finally:
        kb.close()


@needs_kartsim
def test_dart_noise_perturbs_the_kart_but_keeps_the_expert_label():
    from record.sim import SimSource

    clean = SimSource("luigi", (66, 200), seed=3)
    noisy = SimSource("luigi", (66, 200), seed=3, noise=0.5)
    try:
        for _ in range(60):
            for src in (clean, noisy):
                src.after(src.expert_action())  # the recorder records expert_action() as the label
        # same seed and the same clean policy, but the noisy kart was pushed off the clean one's line
        assert not np.array_equal(clean.grab(), noisy.grab())
        label = noisy.expert_action()
        assert label.shape == (5,) and -1 <= label[0] <= 1
    finally:
        clean.close()
        noisy.close()
