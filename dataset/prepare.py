"""Sessions -> model-ready arrays (the contract in docs/ARCHITECTURE.md).

Split by session (no session's frames are on both sides), excluded frames
left out, every frame through common.frames.to_model_input. Arrays are written
incrementally into memory-mapped .npy files, so the data need not fit in RAM;
everything goes to a temporary folder renamed into place at the end, so a
failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import action as act
from common import frames as fr
from dataset.session import SessionError, load_image, load_session

CHUNK = 256  # frames decoded at once


class PrepareError(ValueError):
    pass


def split_sessions(paths: list[str], val_fraction: float, seed: int = 0,
                   val: list[str] | None = None) -> dict[str, str]:
    """session path -> 'train' | 'val'. Whole sessions only; deterministic for a seed."""
    if val:
        wanted = {str(Path(v).resolve()) for v in val}
        unknown = wanted - {str(Path(p).resolve()) for p in paths}
        if unknown:
            raise PrepareError(f"--val session(s) not among the inputs: {sorted(unknown)}")
        return {p: "val" if str(Path(p).resolve()) in wanted else "train" for p in paths}
    n = len(paths)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    order = np.random.default_rng(seed).permutation(sorted(paths)) if n else []
    val_set = set(order[:n_val])
    return {p: "val" if p in val_set else "train" for p in paths}


def _frame(path, image, row):
    try:
        return fr.to_model_input(load_image(path, image)), None
    except (SessionError, ValueError) as exc:
        return None, f"{exc} (frames.csv row {row})"


def prepare(paths, out, *, val_fraction: float = 0.2, val: list[str] | None = None, seed: int = 0,
            skip_bad: bool = False, force: bool = False, progress: bool = True) -> dict:
    paths = [str(p) for p in paths]
    if len(set(paths)) != len(paths):
        raise PrepareError("the same session is given twice")
    out = Path(out)
    if out.exists() and not force:
        raise PrepareError(f"{out} already exists (use --force to replace it)")
    split = split_sessions(paths, val_fraction, seed, val)
    plans = []
    for p in paths:
        df = load_session(p, include_excluded=True)
        keep = df[~df["excluded"]]
        a = keep[list(act.FIELDS)].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(a).all(axis=1) | (a < act.LOW - 1e-4).any(axis=1) | (a > act.HIGH + 1e-4).any(axis=1)
        bad_rows = [int(i) + 2 for i in keep.index[bad]]
        if bad_rows and not skip_bad:
            raise SessionError(f"{Path(p) / 'frames.csv'}, row {bad_rows[0]}: action out of range "
                               f"({len(bad_rows)} such rows; run `dataset clean` or pass --skip-bad)")
        plans.append({"path": p, "df": df, "keep": keep[~bad], "bad_range": bad_rows})
    counts = Counter()
    for pl in plans:
        counts[split[pl["path"]]] += len(pl["keep"])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        arrays = {}
        for part in ("train", "val"):
            arrays[part] = (
                np.lib.format.open_memmap(tmp / f"{part}_frames.npy", "w+", np.uint8, (counts[part], *fr.MODEL_SHAPE)),
                np.lib.format.open_memmap(tmp / f"{part}_actions.npy", "w+", np.float32, (counts[part], act.SIZE)),
            )
        pos = Counter()
        entries = []
        bar = tqdm(total=sum(counts.values()), desc="prepare", unit="frame", disable=not progress)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for pl in plans:
                part, keep, p = split[pl["path"]], pl["keep"], pl["path"]
                frames_arr, actions_arr = arrays[part]
                start = pos[part]
                skipped = []
                for c in range(0, len(keep), CHUNK):
                    chunk = keep.iloc[c:c + CHUNK]
                    results = pool.map(_frame, [p] * len(chunk), chunk["image"], [int(i) + 2 for i in chunk.index])
                    for (_, row), (img, err) in zip(chunk.iterrows(), results, strict=True):
                        if err:
                            if not skip_bad:
                                raise SessionError(err)
                            skipped.append(int(row["frame"]))
                            continue
                        frames_arr[pos[part]] = img
                        actions_arr[pos[part]] = act.clip_batch(row[list(act.FIELDS)].to_numpy(np.float32))
                        pos[part] += 1
                    bar.update(len(chunk))
                df = pl["df"]
                entries.append({
                    "path": p,
                    "split": part,
                    "rows": [start, pos[part]],
                    "frames": pos[part] - start,
                    "total": len(df),
                    "excluded": dict(sorted(Counter(df.loc[df["excluded"], "reason"]).items())),
                    "skipped_bad": sorted(skipped + [int(df.loc[r - 2, "frame"]) for r in pl["bad_range"]]),
                    "source": df.attrs["meta"].get("source"),
                    "track": df.attrs["meta"].get("track") or df.attrs["meta"].get("game"),
                    "drivers": dict(sorted(Counter(pl["keep"]["driver"]).items())),
                })
        bar.close()
        for part in ("train", "val"):
            for a in arrays[part]:
                a.flush()
            if pos[part] < counts[part]:  # bad frames skipped: shrink to what was written
                _shrink(tmp, part, pos[part])
        del arrays
        manifest = {
            "transform": fr.TRANSFORM,
            "action_fields": list(act.FIELDS),
            "train": pos["train"],
            "val": pos["val"],
            "val_fraction": val_fraction,
            "seed": seed,
            "sessions": entries,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _shrink(folder: Path, part: str, n: int) -> None:
    for name in (f"{part}_frames.npy", f"{part}_actions.npy"):
        src = np.load(folder / name, mmap_mode="r")
        dst = np.lib.format.open_memmap(folder / (name + ".tmp"), "w+", src.dtype, (n, *src.shape[1:]))
        for c in range(0, n, 4096):
            end = min(n, c + 4096)
            dst[c:end] = src[c:end]
        dst.flush()
        del dst, src
        os.replace(folder / (name + ".tmp"), folder / name)
