"""The session: what a recording is, and the one way every stage loads one.

A session is a folder::

    meta.json         source, game/track, capture region or resolution, rate,
                      controller mapping, tool version, ...
    frames.csv        one row per frame: frame, t, image, x, y, a, b, rb, driver
    frames/           the images (PNG), named in the ``image`` column
    exclusions.csv    optional, written by ``dataset clean``: frame, reason

The image is written (and renamed into place) before its CSV row, and each row
reaches the file in one write, so after a crash, Ctrl-C or kill -9 every row has
its image; at most the frames in flight are lost. On a full disk a row is either
written whole or cut back out of the file, never kept to appear later. Cleaning never deletes frames:
it writes exclusions, which ``dataset restore`` removes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from common import action as act
from common.atomic import write_bytes

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
    """Appends frames to a session folder; safe to kill at any instant, and on a full disk.

    Each row reaches ``frames.csv`` through one unbuffered ``write``: it is in the file
    when :meth:`add_row` returns. When that write fails (ENOSPC, ...) the file is cut back
    to its last complete row before the error is raised, so a row that failed can never
    appear later (no buffer keeps it). If the cut itself fails, the writer refuses any
    further row (the reader drops a trailing partial row).

    Not thread-safe: one writer thread owns the rows (``dataset.sink.SessionSink`` puts a
    bounded queue and encoders in front of it so capture never waits on the disk).
    """

    def __init__(self, path: str | os.PathLike, meta: dict, *, image_ext: str = "png"):
        self.path = Path(path)
        if (self.path / CSV).exists():
            raise SessionError(f"{self.path / CSV}: session already exists; choose a new folder")
        self.image_ext = image_ext
        self.count = 0
        self._broken: str | None = None
        created = _create_session_files(self.path, meta)
        try:
            self._fd: int | None = os.open(self.path / CSV, os.O_WRONLY | os.O_APPEND)
        except OSError:
            _remove_created(created)
            raise
        self._size = os.fstat(self._fd).st_size  # the end of the last complete row

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
        """Append the row of an image already written: in the file when this returns, absent
        when it raises (OSError from the disk; SessionError after a failure it could not undo)."""
        if driver not in DRIVERS:
            raise SessionError(f"driver must be one of {DRIVERS}, got {driver!r}")
        if self._broken:
            raise SessionError(f"{self.path / CSV}: no rows after a failed write ({self._broken})")
        vec = act.as_action(action)
        ts = time.monotonic() if t is None else t
        line = ",".join((str(int(index)), f"{ts:.6f}", image, *(f"{v:.5f}" for v in vec), driver))
        data = memoryview((line + "\n").encode())
        try:
            while data:  # a nearly full disk can take part of a row, then refuse the rest
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            self._cut_back(exc)
            raise
        self._size += len(line) + 1
        self.count += 1

    def _cut_back(self, exc: OSError) -> None:
        """Remove what reached the file of a row that failed (shrinking a file needs no space)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as cut:
            self._broken = f"{exc}; then could not remove the partial row: {cut}"

    def update_meta(self, **extra) -> None:
        """Add keys to meta.json (replaced atomically: on failure the old one stays)."""
        meta = read_meta(self.path)
        meta.update(extra)
        _write_json_atomic(self.path / META, meta)

    def close(self) -> None:
        """Sync the rows to disk and close the table; safe to call again."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _create_session_files(path: Path, meta: dict) -> list[Path]:
    """Make the folder with meta.json and a frames.csv holding only its header. A new folder
    is built under a temporary name and renamed into place, so ``path`` is a complete (empty)
    session or absent, even after a kill -9; into an existing folder each file is complete or
    absent. Returns what it created (outermost first); on failure (a full disk, ...) removes
    that again and raises."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    created = list(reversed(missing))
    build = path.parent / f".{path.name}.tmp-{os.getpid()}" if path in missing else path
    if build != path:
        created[-1] = build  # the folder exists under its temporary name until the rename
    try:
        if not (build / FRAMES_DIR).exists():
            (build / FRAMES_DIR).mkdir(parents=True)
            created.append(build / FRAMES_DIR)
        full_meta = {"tool_version": VERSION, "created": time.time(), "action_fields": list(act.FIELDS)}
        full_meta.update(meta)
        _write_json_atomic(build / META, full_meta)
        created.append(build / META)
        _write_atomic(build / CSV, (",".join(COLUMNS) + "\n").encode())
        created.append(build / CSV)
        if build != path:
            os.rename(build, path)  # fails if something took the name meanwhile
            created = created[: created.index(build)] + [path]  # the files went with it
    except BaseException:
        _remove_created(created)
        raise
    return created


def _remove_created(created: list[Path]) -> None:
    """Undo :func:`_create_session_files`: only what it made (folders only when empty; a
    renamed session folder with the files it made)."""
    for p in reversed(created):
        with contextlib.suppress(OSError):
            if p.is_dir():
                for name in (CSV, META, FRAMES_DIR):
                    if (p / name).is_file():
                        (p / name).unlink()
                    elif (p / name).is_dir():
                        (p / name).rmdir()
                p.rmdir()
            else:
                p.unlink()


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
    _write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (common.atomic: temp file, fsync, rename; on failure the
    temp file is removed and the previous version is left as it was)."""
    write_bytes(path, data)


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
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(("frame", "reason"))
    for frame in sorted(reasons):
        w.writerow((frame, reasons[frame]))
    write_bytes(p, buf.getvalue().encode())


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
