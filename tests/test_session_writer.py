"""The session format: writer split (image, then row), crash tolerance, errors naming file and row."""

from __future__ import annotations

import numpy as np
import pytest

from dataset.session import (
    SessionError,
    SessionWriter,
    load_image,
    load_session,
    read_exclusions,
    write_exclusions,
)

META = {"source": "sim", "track": "luigi", "resolution": [4, 6], "rate_hz": 30}


def _frame(v):
    return np.full((4, 6, 3), v, np.uint8)


def test_write_image_then_row_and_load(tmp_path):
    with SessionWriter(tmp_path / "s", META) as sw:
        name = sw.write_image(_frame(10), 0)
        assert (tmp_path / "s" / name).is_file()
        assert load_session(tmp_path / "s").empty  # image alone: no row yet
        sw.add_row(0, name, [0.5, -0.5, 1, 0, 0], "human", t=1.0)
        sw.append(_frame(20), [2.0, 0, 0, 0, 1], "expert", t=2.0)  # clamped into range
    df = load_session(tmp_path / "s", check_images=True)
    assert list(df["frame"]) == [0, 1]
    assert df["x"].tolist() == [0.5, 1.0] and df["driver"].tolist() == ["human", "expert"]
    assert load_image(tmp_path / "s", df["image"][1])[0, 0, 0] == 20
    assert df["reason"].tolist() == ["", ""] and not df["excluded"].any()


def test_partial_last_row_is_dropped(tmp_path):
    with SessionWriter(tmp_path / "s", META) as sw:
        sw.append(_frame(1), [0, 0, 1, 0, 0], "human")
    with open(tmp_path / "s" / "frames.csv", "a") as fh:
        fh.write("1,5.0,frames/0000001.png,0.1")  # a row cut by kill -9
    assert len(load_session(tmp_path / "s")) == 1


def test_bad_row_names_file_and_row(tmp_path):
    with SessionWriter(tmp_path / "s", META) as sw:
        sw.append(_frame(1), [0, 0, 1, 0, 0], "human")
        sw.append(_frame(2), [0, 0, 1, 0, 0], "human")
    csv = tmp_path / "s" / "frames.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace("human", "robot")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionError, match=r"frames\.csv, row 3: unknown driver 'robot'"):
        load_session(tmp_path / "s")


def test_missing_meta_and_missing_image(tmp_path):
    with pytest.raises(SessionError, match="meta.json: missing session metadata"):
        load_session(tmp_path)
    with SessionWriter(tmp_path / "s", META) as sw:
        sw.append(_frame(1), [0, 0, 1, 0, 0], "human")
    (tmp_path / "s" / "frames" / "0000000.png").unlink()
    with pytest.raises(SessionError, match=r"row 2: image .*0000000.png is missing"):
        load_session(tmp_path / "s", check_images=True)


def test_exclusions_round_trip(tmp_path):
    with SessionWriter(tmp_path / "s", META) as sw:
        for i in range(3):
            sw.append(_frame(i), [0, 0, 1, 0, 0], "human")
    write_exclusions(tmp_path / "s", {1: "black"})
    assert read_exclusions(tmp_path / "s") == {1: "black"}
    assert load_session(tmp_path / "s")["frame"].tolist() == [0, 2]
    full = load_session(tmp_path / "s", include_excluded=True)
    assert full["reason"].tolist() == ["", "black", ""]
    write_exclusions(tmp_path / "s", {})
    assert len(load_session(tmp_path / "s")) == 3


def test_existing_session_is_not_overwritten(tmp_path):
    SessionWriter(tmp_path / "s", META).close()
    with pytest.raises(SessionError, match="already exists"):
        SessionWriter(tmp_path / "s", META)
