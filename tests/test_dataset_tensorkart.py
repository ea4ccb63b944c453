"""TensorKart samples folder -> session -> TensorKart folder, and the viewer."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dataset.session import SessionError, load_image, load_session, read_meta
from dataset.tensorkart import export_tensorkart, import_tensorkart
from testing.sessions import game_image, game_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensorkart_folder(path, n=12):
    """What TensorKart's record.py leaves: img_N.png and data.csv rows 'path,x,y,a,b,rb', the
    path as it was on the recording machine, y as evdev reports it (down positive)."""
    path.mkdir()
    rows = []
    for i in range(n):
        Image.fromarray(game_image(120, 160, i)).save(path / f"img_{i}.png")
        x, y_down = round(np.sin(i / 3), 4), round(0.25 - i / 40, 4)
        rows.append([f"samples/2017-01-07_10:00:00/img_{i}.png", x, y_down, i % 2, 0, int(i == 5)])
    with open(path / "data.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return rows


def test_round_trip(tmp_path):
    rows = tensorkart_folder(tmp_path / "tk")
    rep = import_tensorkart(tmp_path / "tk", tmp_path / "s", track="luigi", progress=False)
    assert rep == {"session": str(tmp_path / "s"), "frames": 12, "skipped_rows": []}
    df = load_session(tmp_path / "s", check_images=True)
    meta = read_meta(tmp_path / "s")
    assert meta["source"] == "tensorkart" and meta["resolution"] == [120, 160] and meta["track"] == "luigi"
    np.testing.assert_allclose(df["x"], [r[1] for r in rows], atol=1e-5)
    np.testing.assert_allclose(df["y"], [-r[2] for r in rows], atol=1e-5)  # stick up is positive here
    np.testing.assert_allclose(df[["a", "b", "rb"]], [r[3:] for r in rows])
    np.testing.assert_array_equal(load_image(tmp_path / "s", df["image"][3]), game_image(120, 160, 3))
    export_tensorkart(tmp_path / "s", tmp_path / "tk2")
    back = list(csv.reader(open(tmp_path / "tk2" / "data.csv")))
    np.testing.assert_allclose([[float(v) for v in r[1:]] for r in back], [r[1:] for r in rows], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(Image.open(back[7][0])), game_image(120, 160, 7))
    import_tensorkart(tmp_path / "tk2", tmp_path / "s2", progress=False)
    df2 = load_session(tmp_path / "s2")
    np.testing.assert_allclose(df2[["x", "y", "a", "b", "rb"]], df[["x", "y", "a", "b", "rb"]])


def test_bad_rows_name_file_and_row(tmp_path):
    tensorkart_folder(tmp_path / "tk", n=6)
    lines = (tmp_path / "tk" / "data.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]  # row 3: a field short
    lines[4] = lines[4].replace("img_4.png", "img_44.png")  # row 5: missing image
    (tmp_path / "tk" / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionError, match=r"data\.csv, row 3: expected 6 fields"):
        import_tensorkart(tmp_path / "tk", tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists() and len(list(tmp_path.iterdir())) == 1  # nothing half-written
    out = subprocess.run([sys.executable, "-m", "dataset", "import-tensorkart", str(tmp_path / "tk"), "--out",
                          str(tmp_path / "s"), "--skip-bad", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["skipped_rows"] == [3, 5]
    assert len(load_session(tmp_path / "s", check_images=True)) == 4


def test_view_writes_contact_sheet_and_plot(tmp_path):
    p = game_session(tmp_path / "s", n=40)
    (tmp_path / "s" / "exclusions.csv").write_text("frame,reason\n0,black\n")
    out = subprocess.run([sys.executable, "-m", "dataset", "view", str(p), "--out", str(tmp_path / "v"),
                          "--count", "12", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    sheet = np.asarray(Image.open(res["contact_sheet"]))
    plot = Image.open(res["actions_plot"])
    assert res["frames_shown"] == 12 and sheet.shape[0] > 100 and plot.size[0] > 500
    assert (sheet == [220, 30, 30]).all(axis=2).any()  # the excluded frame is framed in red
