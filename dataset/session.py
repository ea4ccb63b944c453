"""The session: what a recording is, and the one way every stage loads one.

A session is a folder::

    meta.json         source, game/track, capture region or resolution, rate,
                      controller mapping, tool version, ...
    frames.csv        one row per frame: frame, t, image, x, y, a, b, rb, driver
    frames/           the images (PNG), named in the ``image`` column
    exclusions.csv    optional, written by ``dataset clean``: frame, reason

The image is written (and renamed into place) before its CSV row, and each row
is flushed as it is written, so after a crash, Ctrl-C or kill -9 every row has
its image; at most the frame in flight is lost. Cleaning never deletes frames:
it writes exclusions, which ``dataset restore`` removes.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from common import action as act

VERSION = "0.1.0"
META = "meta.json"
CSV = "frames.csv"
FRAMES_DIR = "frames"
EXCLUSIONS = "exclusions.csv"
COLUMNS = ("frame", "t", "image", *act.FIELDS, "driver")
DRIVERS = ("human", "model", "correction", "expert")


class SessionError(ValueError):
    """A session that cannot be read; the message names the file and row."""


class SessionWriter:
    """Appends frames to a session folder; safe to kill at any instant.

    Not thread-safe: one writer thread owns it (record/ puts a bounded queue in
    front of it so capture never waits on the disk).
    """

    def __init__(self, path: str | os.PathLike, meta: dict, *, image_ext: str = "png"):
        self.path = Path(path)
        if (self.path / CSV).exists():
            raise SessionError(f"{self.path / CSV}: session already exists; choose a new folder")
        (self.path / FRAMES_DIR).mkdir(parents=True, exist_ok=True)
        self.image_ext = image_ext
        full_meta = {"tool_version": VERSION, "created": time.time(), "action_fields": list(act.FIELDS)}
        full_meta.update(meta)
        _write_json_atomic(self.path / META, full_meta)
        self._csv = open(self.path / CSV, "w", newline="", buffering=1)
        self._rows = csv.writer(self._csv)
        self._rows.writerow(COLUMNS)
        self._csv.flush()
        self.count = 0

    def append(self, frame: np.ndarray, action, driver: str, *, t: float | None = None,
               index: int | None = None) -> int:
        """Write one frame image, then its row. Returns the frame index."""
        idx = self.count if index is None else int(index)
        name = self.write_image(frame, idx)
        self.add_row(idx, name, action, driver, t=t)
        return idx

    def image_name(self, index: int) -> str:
        return image_name(index, self.image_ext)

    def write_image(self, frame: np.ndarray, index: int) -> str:
        """Encode and write one frame image (see :func:`save_image`); safe to call from
        several encoder threads at once. Returns the image name relative to the session."""
        return save_image(self.path, index, frame, self.image_ext)

    def add_row(self, index: int, image: str, action, driver: str, *, t: float | None = None) -> None:
        """Append (and flush) the row of an image already written."""
        if driver not in DRIVERS:
            raise SessionError(f"driver must be one of {DRIVERS}, got {driver!r}")
        vec = act.as_action(action)
        ts = time.monotonic() if t is None else t
        self._rows.writerow([int(index), f"{ts:.6f}", image, *(f"{v:.5f}" for v in vec), driver])
        self._csv.flush()
        self.count += 1

    def update_meta(self, **extra) -> None:
        meta = read_meta(self.path)
        meta.update(extra)
        _write_json_atomic(self.path / META, meta)

    def close(self) -> None:
        if not self._csv.closed:
            self._csv.flush()
            os.fsync(self._csv.fileno())
            self._csv.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def image_name(index: int, ext: str = "png") -> str:
    """The image file of frame ``index``, relative to the session folder."""
    return f"{FRAMES_DIR}/{int(index):07d}.{ext}"


def save_image(session_path: str | os.PathLike, index: int, frame: np.ndarray, ext: str = "png") -> str:
    """Write frame ``index``'s image: tmp file, then rename into place, so the name only
    ever holds a complete image. Touches nothing else (encoder threads and processes
    call it in parallel; the row comes later, from the one writer of frames.csv)."""
    name = image_name(index, ext)
    final = Path(session_path) / name
    tmp = final.with_name(final.name + ".tmp")
    try:
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(
            tmp, format="PNG" if ext == "png" else ext.upper(), compress_level=1
        )
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. ENOSPC: leave no partial file behind
        raise
    os.replace(tmp, final)  # image complete before its row exists
    return name


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_meta(path: str | os.PathLike) -> dict:
    meta_path = Path(path) / META
    if not meta_path.exists():
        raise SessionError(f"{meta_path}: missing session metadata (is {path} a session folder?)")
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise SessionError(f"{meta_path}: invalid JSON: {exc}") from exc


def load_session(path: str | os.PathLike, *, include_excluded: bool = False,
                 check_images: bool = False) -> pd.DataFrame:
    """Read a session as a DataFrame (columns COLUMNS plus ``excluded`` and
    ``reason``); ``df.attrs['meta']`` holds meta.json, ``df.attrs['path']`` the folder.

    Rows are validated (field count, types, driver); a bad row raises
    SessionError naming the file and the row. Action ranges are not enforced
    here, so that ``dataset clean`` can mark out-of-range rows (and prepare
    refuses them). A trailing partial row (the
    line in flight at a crash) is dropped. Excluded frames are left out unless
    ``include_excluded``.
    """
    path = Path(path)
    meta = read_meta(path)
    csv_path = path / CSV
    if not csv_path.exists():
        raise SessionError(f"{csv_path}: missing frame table")
    text = csv_path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop the row in flight at a crash
    lines = text.splitlines()
    if not lines or tuple(lines[0].split(",")) != COLUMNS:
        raise SessionError(f"{csv_path}: header must be {','.join(COLUMNS)}")
    records = []
    for lineno, row in enumerate(csv.reader(lines[1:]), start=2):
        if len(row) != len(COLUMNS):
            raise SessionError(f"{csv_path}, row {lineno}: expected {len(COLUMNS)} fields, got {len(row)}")
        try:
            frame, t = int(row[0]), float(row[1])
            vec = [float(v) for v in row[3:8]]
        except ValueError as exc:
            raise SessionError(f"{csv_path}, row {lineno}: {exc}") from exc
        if row[8] not in DRIVERS:
            raise SessionError(f"{csv_path}, row {lineno}: unknown driver {row[8]!r}")
        records.append((frame, t, row[2], *vec, row[8]))
    df = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    df = df.astype({"frame": "int64", "t": "float64", **{f: "float32" for f in act.FIELDS}})
    if check_images:
        for lineno, image in enumerate(df["image"], start=2):
            try:
                p = image_path(path, image)
            except SessionError as exc:
                raise SessionError(f"{exc} (row {lineno})") from exc
            if not p.is_file():
                raise SessionError(f"{csv_path}, row {lineno}: image {p} is missing")
    excl = read_exclusions(path)
    df["reason"] = pd.Series([excl.get(int(f), "") for f in df["frame"]], index=df.index, dtype=object)
    df["excluded"] = df["reason"] != ""
    if not include_excluded:
        df = df[~df["excluded"]].reset_index(drop=True)
    df.attrs["meta"] = meta
    df.attrs["path"] = str(path)
    return df


def read_exclusions(path: str | os.PathLike) -> dict[int, str]:
    """frame -> reason, from exclusions.csv (empty when the session is clean)."""
    p = Path(path) / EXCLUSIONS
    if not p.exists():
        return {}
    out = {}
    with open(p, newline="") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            try:
                out[int(row["frame"])] = row["reason"]
            except (KeyError, TypeError, ValueError) as exc:
                raise SessionError(f"{p}, row {lineno}: bad exclusion row {row}") from exc
    return out


def write_exclusions(path: str | os.PathLike, reasons: dict[int, str]) -> None:
    """Replace the session's exclusions (frame -> reason); empty removes the file."""
    p = Path(path) / EXCLUSIONS
    if not reasons:
        p.unlink(missing_ok=True)
        return
    tmp = p.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("frame", "reason"))
        for frame in sorted(reasons):
            w.writerow((frame, reasons[frame]))
    os.replace(tmp, p)


def image_path(session_path: str | os.PathLike, image: str) -> Path:
    """Where a session's ``image`` column points, confined to the session folder.

    Image names are relative to the session (``frames/0000042.png``). An absolute
    path, a ``..`` that climbs out, or a symlink whose target lies outside the
    folder raises SessionError: a received session never reaches other files.
    Callers add the row (``frames.csv row N``) to the message."""
    base = Path(session_path)
    rel = Path(image)
    if not image or rel.is_absolute() or rel.drive:
        raise SessionError(f"{base / CSV}: image path {image!r} is not relative to the session folder {base}")
    p = base / rel
    root = base.resolve()
    if not p.resolve().is_relative_to(root):
        raise SessionError(f"{base / CSV}: image path {image!r} leads outside the session folder {base}")
    return p


def load_image(session_path: str | os.PathLike, image: str) -> np.ndarray:
    """One frame of a session as RGB uint8; the path is confined to the session
    folder (:func:`image_path`); errors name the file."""
    p = image_path(session_path, image)
    try:
        with Image.open(p) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SessionError(f"{p}: cannot read image: {exc}") from exc


def actions(df: pd.DataFrame) -> np.ndarray:
    """The (N, 5) float32 action array of a loaded session."""
    return df[list(act.FIELDS)].to_numpy(dtype=np.float32)
