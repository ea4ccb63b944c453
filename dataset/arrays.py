"""Prepared arrays: the one writer of ``DIR/{train,val}_{frames,actions}.npy`` + ``manifest.json``.

The layout is the contract in docs/ARCHITECTURE.md ("Prepared arrays"); ``dataset
prepare`` and ``train.simdata`` (expert demos straight to arrays) both write
through :class:`ArraysWriter` (or :func:`write_arrays`, its whole-array form).

Nothing is lost:

- Everything is written into a temporary sibling folder, fsynced, and renamed
  into place at the end, so a crash or a full disk leaves either the previous
  folder or the new complete one.
- An existing ``DIR`` is only ever replaced when it is empty or is a prepared
  folder of ours (a manifest of ours and nothing but the files named in
  :data:`FILES`); anything else is refused with a message naming what is in
  the way. Replacing deletes only those files, never anything else.
- ``DIR`` may not be, hold or lie inside one of the inputs it is made from.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from common import action as act
from common import frames as fr
from common import state as kstate

KIND = "kartpilot-prepared"  # manifest "kind": marks a folder this writer may replace
MANIFEST = "manifest.json"
PARTS = ("train", "val")
FILES = (MANIFEST, *(f"{part}_{what}.npy" for part in PARTS for what in ("frames", "actions")))
STATE_FILES = tuple(f"{part}_state.npy" for part in PARTS)  # only with state features (common.state)
OURS = FILES + STATE_FILES


class ArraysError(ValueError):
    """An output folder that may not be written or replaced; the message says why."""


def is_prepared(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a prepared-data manifest of ours: ``kind`` = KIND, or (written
    before ``kind`` existed) the ``transform``, ``action_fields`` and ``train``/``val`` counts."""
    path = Path(folder) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(m, dict):
        return False
    return m.get("kind") == KIND or all(k in m for k in ("transform", "action_fields", "train", "val"))


def check_target(out: str | os.PathLike, *, replace: bool, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Raise ArraysError unless arrays may be written to ``out``: it does not exist, is an empty
    folder, or (``replace``) is a prepared folder of ours holding only our files; and it is
    none of ``inputs``, nor inside one, nor holding one."""
    out = Path(out)
    target = out.resolve()
    for src in inputs:
        s = Path(src).resolve()
        if target == s or s.is_relative_to(target):
            raise ArraysError(f"--out {out} holds the input {src}; choose another folder")
        if target.is_relative_to(s):
            raise ArraysError(f"--out {out} lies inside the input {src}; choose a folder outside it")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise ArraysError(f"{out} exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not replace:
        raise ArraysError(f"{out} already exists (use --force to replace it)")
    if not is_prepared(out):
        raise ArraysError(f"{out} is not a prepared-data folder of ours (no manifest.json of `dataset "
                          f"prepare`); refusing to replace it: it holds {_names(entries)}")
    foreign = [e for e in entries if e not in OURS or not (out / e).is_file() or (out / e).is_symlink()]
    if foreign:
        raise ArraysError(f"{out} holds files that are not prepared arrays ({_names(foreign)}); refusing to "
                          f"replace it: move them away or choose another --out")


def _names(entries: list[str], limit: int = 5) -> str:
    shown = ", ".join(entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArraysWriter:
    """Fill pre-sized train/val arrays row by row, then :meth:`commit` them with a manifest.

    ``counts``: the most rows each split may get (the arrays shrink to what was
    written). Use as a context manager: leaving it without ``commit`` (an
    error, Ctrl-C) removes the temporary folder and leaves ``out`` untouched.
    ``state``: also keep each row's kart state features (``{part}_state.npy``,
    ``common.state`` layout, named in the manifest's ``state_fields``).
    """

    def __init__(self, out: str | os.PathLike, counts: dict[str, int], *, replace: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), state: bool = False):
        self.out = Path(out)
        check_target(self.out, replace=replace, inputs=inputs)
        unknown = set(counts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {PARTS}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        if self.tmp.exists():  # left by a killed run of this very pid number: ours by name
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self.rows = dict.fromkeys(PARTS, 0)
        self.state = bool(state)
        self._arrays: dict[str, tuple[np.ndarray, ...]] = {}
        try:
            for part in PARTS:
                n = int(counts.get(part, 0))
                self._arrays[part] = (
                    _reserved_memmap(self.tmp / f"{part}_frames.npy", np.uint8, (n, *fr.MODEL_SHAPE)),
                    _reserved_memmap(self.tmp / f"{part}_actions.npy", np.float32, (n, act.SIZE)),
                ) + ((_reserved_memmap(self.tmp / f"{part}_state.npy", np.float32, (n, kstate.SIZE)),)
                     if self.state else ())
        except BaseException:
            self.abort()
            raise

    def _check_state(self, state, rows: int) -> np.ndarray | None:
        if not self.state:
            if state is not None:
                raise ValueError("state rows given to an ArraysWriter made without state=True")
            return None
        return kstate.as_rows(state, rows, source=f"the arrays writer of {self.out}")

    def add(self, part: str, frame: np.ndarray, action, state=None) -> int:
        """One model-input frame (66x200x3 uint8), its action (and its state row, with
        ``state=True``); returns its row in ``part``."""
        srow = self._check_state(state, 1)
        arrays = self._arrays[part]
        i = self.rows[part]
        arrays[0][i] = frame
        arrays[1][i] = act.clip_batch(np.asarray(action, np.float32))
        if srow is not None:
            arrays[2][i] = srow[0]
        self.rows[part] = i + 1
        return i

    def add_many(self, part: str, frames: np.ndarray, actions: np.ndarray, state=None) -> tuple[int, int]:
        """A block of rows at once; returns their (start, end) in ``part``."""
        srows = self._check_state(state, len(frames))
        arrays = self._arrays[part]
        start, end = self.rows[part], self.rows[part] + len(frames)
        for c in range(0, len(frames), 4096):  # bounded copies: frames may be memory-mapped
            arrays[0][start + c:min(end, start + c + 4096)] = frames[c:c + 4096]
        arrays[1][start:end] = act.clip_batch(np.asarray(actions, np.float32))
        if srows is not None:
            arrays[2][start:end] = srows
        self.rows[part] = end
        return start, end

    def commit(self, sessions: list | None = None, **meta) -> dict:
        """Shrink to the rows written, write the manifest, fsync, and rename into place.
        Returns the manifest: kind, transform, action_fields, train/val counts, ``meta``, sessions."""
        try:
            for part in PARTS:
                for a in self._arrays[part]:
                    a.flush()
            sizes = {part: len(self._arrays[part][0]) for part in PARTS}
            self._arrays.clear()
            for part in PARTS:
                if self.rows[part] < sizes[part]:
                    _shrink(self.tmp, part, self.rows[part], self.state)
            manifest = {
                "kind": KIND,
                "transform": fr.TRANSFORM,
                "action_fields": list(act.FIELDS),
                "train": self.rows["train"],
                "val": self.rows["val"],
                **({"state_fields": list(kstate.FIELDS)} if self.state else {}),
                **meta,
                "sessions": sessions or [],
            }
            (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            for name in FILES + (STATE_FILES if self.state else ()):
                _fsync(self.tmp / name)
            _fsync(self.tmp)
            self._swap()
        except BaseException:
            self.abort()
            raise
        return manifest

    def _swap(self) -> None:
        out = self.out
        old = None
        if out.exists():
            check_target(out, replace=True)  # still ours (or empty) at the last moment
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        self.tmp.rename(out)
        _fsync(out.parent)
        if old is not None:  # only our own files, then the folder
            for name in OURS:
                (old / name).unlink(missing_ok=True)
            old.rmdir()

    def abort(self) -> None:
        self._arrays.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            self.abort()


def write_arrays(out_dir: str | os.PathLike, splits: dict[str, tuple[np.ndarray, ...]],
                 sessions: list | None = None, *, replace: bool = True, **meta) -> str:
    """Whole arrays -> a prepared folder (``splits``: part -> (frames, actions) or
    (frames, actions, state)), with a manifest like prepare's. ``replace``: an existing prepared
    folder of ours is replaced (never anything else). Returns ``out_dir``."""
    counts = {part: len(v[0]) for part, v in splits.items()}
    with_state = {len(v) == 3 for v in splits.values()}
    if len(with_state) > 1:
        raise ValueError("every split needs state rows, or none")
    with ArraysWriter(out_dir, counts, replace=replace, state=with_state == {True}) as w:
        for part, (f, a, *st) in splits.items():
            w.add_many(part, np.asarray(f, np.uint8), np.asarray(a, np.float32), st[0] if st else None)
        w.commit(sessions, **meta)
    return str(out_dir)


def _reserved_memmap(path: Path, dtype, shape) -> np.memmap:
    """A new ``.npy`` memory map whose disk blocks are reserved up front: a full disk is then
    an OSError (ENOSPC) here, not a SIGBUS on some later write into a page with no block."""
    arr = np.lib.format.open_memmap(path, "w+", dtype, shape)
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # no fallocate here: as before
            return arr
        del arr
        raise OSError(exc.errno, f"no room for {path.name} ({exc.strerror})", str(path)) from exc
    return arr


def _shrink(folder: Path, part: str, n: int, state: bool = False) -> None:
    for name in (f"{part}_frames.npy", f"{part}_actions.npy", *((f"{part}_state.npy",) if state else ())):
        src = np.load(folder / name, mmap_mode="r")
        dst = _reserved_memmap(folder / (name + ".tmp"), src.dtype, (n, *src.shape[1:]))
        for c in range(0, n, 4096):
            end = min(n, c + 4096)
            dst[c:end] = src[c:end]
        dst.flush()
        del dst, src
        os.replace(folder / (name + ".tmp"), folder / name)
