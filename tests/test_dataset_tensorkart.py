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


def test_export_refuses_a_non_empty_target_and_the_session_itself(tmp_path):
    s = game_session(tmp_path / "s", n=5)
    session_files = sorted(p.relative_to(s) for p in s.rglob("*"))
    for target in (s, s / "frames", s / "tk"):  # never into the session's own folder
        with pytest.raises(SessionError, match="inside the session"):
            export_tensorkart(s, target)
    with pytest.raises(SessionError, match="holds the session"):
        export_tensorkart(s, tmp_path, force=True)
    assert sorted(p.relative_to(s) for p in s.rglob("*")) == session_files
    big = game_session(tmp_path / "big", n=8)
    export_tensorkart(big, tmp_path / "tk")
    out = subprocess.run([sys.executable, "-m", "dataset", "export-tensorkart", str(s), "--out", str(tmp_path / "tk")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "dataset export-tensorkart: error:" in out.stderr and "--force" in out.stderr
    assert len(list(csv.reader(open(tmp_path / "tk" / "data.csv")))) == 8  # untouched
    out = subprocess.run([sys.executable, "-m", "dataset", "export-tensorkart", str(s), "--out", str(tmp_path / "tk"),
                          "--force", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["frames"] == 5
    assert sorted(p.name for p in (tmp_path / "tk").iterdir()) == ["data.csv"] + [f"img_{k}.png" for k in range(5)]
    # --force replaces a TensorKart export, nothing else
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "img_0.png").write_bytes(b"x")
    (tmp_path / "mine" / "thesis.pdf").write_bytes(b"y")
    with pytest.raises(SessionError, match=r"more than a TensorKart export \(thesis.pdf\)"):
        export_tensorkart(s, tmp_path / "mine", force=True)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["img_0.png", "thesis.pdf"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def rewrite_image_column(session, row: int, image: str) -> None:
    """Point frames.csv data row ``row`` (0-based) at ``image``."""
    lines = (session / "frames.csv").read_text().splitlines()
    cells = lines[row + 1].split(",")
    cells[2] = image
    lines[row + 1] = ",".join(cells)
    (session / "frames.csv").write_text("\n".join(lines) + "\n")


def test_session_image_paths_stay_inside_the_session(tmp_path):
    from dataset.prepare import prepare

    secret = tmp_path / "secret.png"
    Image.fromarray(game_image(120, 160, 99)).save(secret)
    for k, evil in enumerate((str(secret), "../secret.png", "frames/../../secret.png", "link.png")):
        s = game_session(tmp_path / f"s{k}", n=4)
        if evil == "link.png":
            (s / "link.png").symlink_to(secret)
        rewrite_image_column(s, 2, evil)
        df = load_session(s)
        with pytest.raises(SessionError, match="not relative to the session folder|leads outside the session"):
            load_image(s, df["image"][2])
        with pytest.raises(SessionError, match=r"row 4"):
            load_session(s, check_images=True)
        with pytest.raises(SessionError, match=r"(outside|not relative).*row 4"):
            prepare([s], tmp_path / f"p{k}", progress=False)
        with pytest.raises(SessionError, match=r"(outside|not relative).*row 4"):
            export_tensorkart(s, tmp_path / f"tk{k}")
        assert not (tmp_path / f"tk{k}").exists() and not (tmp_path / f"p{k}").exists()
        m = prepare([s], tmp_path / f"p{k}", skip_bad=True, val_fraction=0, progress=False)
        assert m["train"] == 3 and m["sessions"][0]["skipped_bad"] == [2]  # skipped, never read


def test_tensorkart_import_reads_only_inside_its_folder(tmp_path):
    rows = tensorkart_folder(tmp_path / "tk", n=4)
    private = tmp_path / "private"
    private.mkdir()
    Image.fromarray(game_image(120, 160, 77)).save(private / "photo.png")
    Image.fromarray(game_image(120, 160, 55)).save(private / "img_1.png")
    lines = (tmp_path / "tk" / "data.csv").read_text().splitlines()
    lines[1] = lines[1].replace(rows[1][0], str(private / "img_1.png"))  # absolute, and img_1.png is inside too
    (tmp_path / "tk" / "data.csv").write_text("\n".join(lines) + "\n")
    import_tensorkart(tmp_path / "tk", tmp_path / "s", progress=False)
    df = load_session(tmp_path / "s")
    np.testing.assert_array_equal(load_image(tmp_path / "s", df["image"][1]), game_image(120, 160, 1))  # the inside one
    for k, evil in enumerate((str(private / "photo.png"), "../private/photo.png")):
        bad = lines.copy()
        bad[2] = bad[2].replace(rows[2][0], evil)
        (tmp_path / "tk" / "data.csv").write_text("\n".join(bad) + "\n")
        with pytest.raises(SessionError, match=r"data\.csv, row 3: image .*photo.png.* not found in .*never read"):
            import_tensorkart(tmp_path / "tk", tmp_path / f"e{k}", progress=False)
        import_tensorkart(tmp_path / "tk", tmp_path / f"e{k}", skip_bad=True, progress=False)
        got = load_session(tmp_path / f"e{k}")
        assert len(got) == 3 and all(not np.array_equal(load_image(tmp_path / f"e{k}", im), game_image(120, 160, 77))
                                     for im in got["image"])


def test_view_skip_bad_survives_a_bad_first_frame(tmp_path):
    p = game_session(tmp_path / "s", n=10)
    (p / "frames" / "0000000.png").write_bytes(b"\x89PNG broken")
    out = subprocess.run([sys.executable, "-m", "dataset", "view", str(p), "--out", str(tmp_path / "v"),
                          "--count", "10"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "0000000.png: cannot read image" in out.stderr and "row 2" in out.stderr
    out = subprocess.run([sys.executable, "-m", "dataset", "view", str(p), "--out", str(tmp_path / "v"),
                          "--count", "10", "--skip-bad", "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["unreadable"] == [0] and res["frames_shown"] == 10
    thumb_h = round(160 * 120 / 160)  # the aspect of the frames that do read
    assert Image.open(res["contact_sheet"]).size == (8 * 164, 2 * (thumb_h + 14 + 4))
