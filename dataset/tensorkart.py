"""TensorKart samples folders <-> sessions.

A TensorKart folder holds ``data.csv`` (no header; per row: image path, x, y,
a, b, rb) and ``img_N.png``. TensorKart stored the stick as evdev reports it,
y pointing down; our y points up, so y changes sign both ways. Its paths were
written relative to where record.py ran; images are looked up as written,
then relative to the folder, then by file name in the folder.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from common import action as act
from dataset.session import SessionError, SessionWriter, load_image, load_session

TK_RATE_HZ = 5.0  # TensorKart's 200 ms timer
TK_CSV = "data.csv"


def _resolve(folder: Path, image: str) -> Path | None:
    p = Path(image)
    for cand in (p, folder / p, folder / p.name):
        if cand.is_file():
            return cand
    return None


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
                img_path = _resolve(folder, row[0].strip())
                if img_path is None:
                    raise SessionError(f"{where}: image {row[0]!r} not found (also looked in {folder})")
                img = load_image(img_path.parent, img_path.name)
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


def export_tensorkart(session, out, *, include_excluded: bool = False) -> dict:
    """A session as a TensorKart folder (data.csv + img_N.png): the way back, for round trips."""
    df = load_session(session, include_excluded=include_excluded)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TK_CSV, "w", newline="") as fh:
        w = csv.writer(fh)
        for k, (_, row) in enumerate(df.iterrows()):
            name = f"img_{k}.png"
            shutil.copyfile(Path(session) / row["image"], out / name)
            x, y, a, b, rb = (float(row[f]) for f in act.FIELDS)
            w.writerow([str(out / name), repr(x), repr(-y), repr(a), repr(b), repr(rb)])
    return {"folder": str(out), "frames": len(df)}
