"""TensorKart samples folders <-> sessions.

A TensorKart folder holds ``data.csv`` (no header; per row: image path, x, y,
a, b, rb) and ``img_N.png``. TensorKart stored the stick as evdev reports it,
y pointing down; our y points up, so y changes sign both ways. Its paths were
written relative to where record.py ran (or absolute), so they rarely hold on
another machine: an image is looked up inside the folder only, first by the
path as written relative to the folder, then by its file name. Nothing outside
the folder is ever read; a row whose image is not in the folder is refused,
naming the row.

Export writes a new folder (or, with ``force``, replaces one that holds only a
TensorKart export: data.csv and img_N.png) through a temporary sibling folder,
and never writes into or over the session it exports.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from common import action as act
from dataset.session import SessionError, SessionWriter, image_path, load_image, load_session

TK_RATE_HZ = 5.0  # TensorKart's 200 ms timer
TK_CSV = "data.csv"


def _resolve(folder: Path, image: str, where: str) -> Path:
    """The image a data.csv row names, found inside ``folder`` (see the module doc)."""
    p = Path(image)
    root = folder.resolve()
    cands = [] if p.is_absolute() else [folder / p]
    cands.append(folder / p.name)
    for cand in cands:
        if p.name and cand.resolve().is_relative_to(root) and cand.is_file():
            return cand
    outside = p.is_absolute() or not (folder / p).resolve().is_relative_to(root)
    raise SessionError(f"{where}: image {image!r} not found in {folder}"
                       + (" (a path outside the folder is never read; looked for its file name inside)"
                          if outside else ""))


def import_tensorkart(folder, out, *, track: str = "unknown", rate_hz: float = TK_RATE_HZ,
                      skip_bad: bool = False, progress: bool = True) -> dict:
    folder, out = Path(folder), Path(out)
    csv_path = folder / TK_CSV
    if not csv_path.is_file():
        raise SessionError(f"{csv_path}: missing (is {folder} a TensorKart samples folder?)")
    if out.exists():
        raise SessionError(f"{out} already exists; choose a new session folder")
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    skipped: list[int] = []
    writer = None
    try:
        for lineno, row in enumerate(tqdm(rows, desc="import", unit="frame", disable=not progress), start=1):
            where = f"{csv_path}, row {lineno}"
            try:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 6:
                    raise SessionError(f"{where}: expected 6 fields (image,x,y,a,b,rb), got {len(row)}")
                try:
                    x, y, a, b, rb = (float(v) for v in row[1:])
                except ValueError as exc:
                    raise SessionError(f"{where}: {exc}") from exc
                if not all(math.isfinite(v) for v in (x, y, a, b, rb)):
                    raise SessionError(f"{where}: non-finite value in {row[1:]}")
                img_path = _resolve(folder, row[0].strip(), where)
                img = load_image(folder, str(img_path.relative_to(folder)))
            except SessionError:
                if not skip_bad:
                    raise
                skipped.append(lineno)
                continue
            if writer is None:
                writer = SessionWriter(tmp, {"source": "tensorkart", "game": "mk64", "track": track,
                                             "resolution": list(img.shape[:2]), "rate_hz": rate_hz,
                                             "imported_from": str(folder.resolve()),
                                             "controller": {"device": "tensorkart",
                                                            "note": "y sign flipped (evdev down -> up)"}})
            vec = act.as_action([x, -y, a, b, rb])  # TensorKart's y points down, ours up
            writer.append(img, vec, "human", t=writer.count / rate_hz)
        if writer is None:
            raise SessionError(f"{csv_path}: no usable rows")
        writer.update_meta(skipped_rows=skipped)
        writer.close()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"session": str(out), "frames": writer.count, "skipped_rows": skipped}


def export_tensorkart(session, out, *, include_excluded: bool = False, force: bool = False) -> dict:
    """A session as a TensorKart folder (data.csv + img_N.png): the way back, for round trips.

    ``out`` must be new or empty; ``force`` replaces a folder holding only a TensorKart export
    (data.csv, img_N.png). It may not be, hold or lie inside the session."""
    df = load_session(session, include_excluded=include_excluded)
    out = Path(out)
    _check_export_target(Path(session), out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left by a killed run of this very pid number: ours by name
        shutil.rmtree(tmp)
    tmp.mkdir()
    names = []
    try:
        with open(tmp / TK_CSV, "w", newline="") as fh:
            w = csv.writer(fh)
            for k, (i, row) in enumerate(df.iterrows()):
                name = f"img_{k}.png"
                try:
                    src = image_path(session, row["image"])
                except SessionError as exc:
                    raise SessionError(f"{exc} (row {int(i) + 2})") from exc
                shutil.copyfile(src, tmp / name)
                names.append(name)
                x, y, a, b, rb = (float(row[f]) for f in act.FIELDS)
                w.writerow([str(out / name), repr(x), repr(-y), repr(a), repr(b), repr(rb)])
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if out.exists():
            _check_export_target(Path(session), out, force)  # still replaceable at the last moment
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:  # only what a TensorKart export holds, then the folder
            for p in old.iterdir():
                p.unlink()
            old.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"folder": str(out), "frames": len(df)}


def _is_export_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink() and (
        p.name == TK_CSV or (p.name.startswith("img_") and p.name.endswith(".png") and p.name[4:-4].isdigit()))


def _check_export_target(session: Path, out: Path, force: bool) -> None:
    src, target = session.resolve(), out.resolve()
    if target == src or target.is_relative_to(src):
        raise SessionError(f"--out {out} is inside the session {session}; export to a folder outside it")
    if src.is_relative_to(target):
        raise SessionError(f"--out {out} holds the session {session}; export to another folder")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise SessionError(f"{out} exists and is not a folder; choose another --out")
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not force:
        raise SessionError(f"{out} is not empty ({len(entries)} entries); use --force to replace a "
                           f"TensorKart folder, or choose a new --out")
    other = [p.name for p in entries if not _is_export_file(p)]
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise SessionError(f"{out} holds more than a TensorKart export ({shown}); refusing to replace it "
                           f"even with --force")
