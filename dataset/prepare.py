"""Sessions -> model-ready arrays (the contract in docs/ARCHITECTURE.md).

Excluded frames are left out and every frame goes through
common.frames.to_model_input; the arrays are written through
dataset.arrays.ArraysWriter (memory-mapped, so the data need not fit in RAM;
a temporary folder renamed into place, so a failure leaves nothing
half-written; an existing ``--out`` is only replaced when it is a prepared
folder of ours).

The validation split is made of whole sessions when it can be: no session's
frames are on both sides. When the sessions given cannot fill it that way
(one session, say: a newcomer's first recording), each session is split by
time instead: its last ``val_fraction`` of kept frames is validation, the
first part is training, and ``val_gap_s`` seconds between them are left out,
so near-identical neighbouring frames do not sit on both sides. Prepare says
so on stderr and in the manifest (``split_by``: ``session`` or ``time``).
A session too short to be split that way goes to training whole.

The time axis is game time: ``frame / sim_fps`` for kartsim recordings (whose
``t`` is the wall clock, which ``--fast`` decouples from the game), else the
``t`` column (capture time; TensorKart imports get ``frame / rate``).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from common import action as act
from common import frames as fr
from dataset.arrays import ArraysError, ArraysWriter, check_target
from dataset.session import SessionError, load_image, load_session

CHUNK = 256  # frames decoded at once
VAL_GAP_S = 3.0  # default seconds left out between a session's train and val blocks


PrepareError = ArraysError  # what prepare refuses (inputs, options, --out); a ValueError


@dataclass
class Plan:
    """One session, loaded and checked: every row (``df``), the rows to use (``keep``: not
    excluded, actions in range) and the rows refused for their actions."""

    path: str
    df: pd.DataFrame
    keep: pd.DataFrame
    bad_range: list[int] = field(default_factory=list)  # frames.csv row numbers

    def clock(self, rows: pd.DataFrame) -> np.ndarray:
        """Game seconds of ``rows`` since the session's first frame (see the module doc)."""
        fps = self.df.attrs["meta"].get("sim_fps")
        col, scale = ("frame", 1.0 / float(fps)) if fps else ("t", 1.0)
        first = float(self.df[col].iat[0]) if len(self.df) else 0.0
        return (rows[col].to_numpy(np.float64) - first) * scale


@dataclass
class Block:
    """A stretch of one session that goes into one split."""

    plan: Plan
    part: str  # "train" | "val"
    block: str  # "all" | "head" | "tail"
    rows: pd.DataFrame  # kept rows, in order
    span: pd.DataFrame  # every row of the stretch (for the exclusion counts)
    gap: dict | None = None  # the frames left out before a tail


def resolve_inputs(paths) -> list[str]:
    """The session paths as given, refusing one given twice (``s1`` and ``s1/`` are one)."""
    paths = [str(p) for p in paths]
    seen: dict[Path, str] = {}
    for p in paths:
        r = Path(p).resolve()
        if r in seen:
            raise PrepareError(f"the same session is given twice: {seen[r]} and {p}")
        seen[r] = p
    return paths


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


def plan_session(path: str, skip_bad: bool) -> Plan:
    """Load a session with its exclusions; refuse (or, ``skip_bad``, leave out) rows whose
    action is not finite or out of range."""
    df = load_session(path, include_excluded=True)
    keep = df[~df["excluded"]]
    a = keep[list(act.FIELDS)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(a).all(axis=1) | (a < act.LOW - 1e-4).any(axis=1) | (a > act.HIGH + 1e-4).any(axis=1)
    bad_rows = [int(i) + 2 for i in keep.index[bad]]
    if bad_rows and not skip_bad:
        raise SessionError(f"{Path(path) / 'frames.csv'}, row {bad_rows[0]}: action out of range "
                           f"({len(bad_rows)} such rows; run `dataset clean` or pass --skip-bad)")
    return Plan(path, df, keep[~bad], bad_rows)


def session_blocks(plans: list[Plan], split: dict[str, str]) -> list[Block]:
    """Each session whole, into the split it was given."""
    return [Block(pl, split[pl.path], "all", pl.keep, pl.df) for pl in plans]


def time_blocks(pl: Plan, val_fraction: float, gap_s: float) -> list[Block]:
    """Split one session by time: the head for train, the last ``val_fraction`` of its kept
    frames for val, ``gap_s`` seconds between them left out. A session whose head would be
    smaller than its tail goes to train whole (one block)."""
    keep = pl.keep
    n_val = int(round(val_fraction * len(keep)))
    if n_val < 1:
        return [Block(pl, "train", "all", keep, pl.df)]
    t_keep = pl.clock(keep)
    cut = t_keep[len(keep) - n_val]  # the first val frame's time
    head = keep[t_keep < cut - gap_s]
    if len(head) < n_val:
        return [Block(pl, "train", "all", keep, pl.df)]
    t_all = pl.clock(pl.df)
    gap_rows = keep[(t_keep >= cut - gap_s) & (t_keep < cut)]
    gap = {"frames": len(gap_rows), "seconds": gap_s,
           "frame_range": [int(gap_rows["frame"].iat[0]), int(gap_rows["frame"].iat[-1])] if len(gap_rows) else []}
    return [Block(pl, "train", "head", head, pl.df[t_all < cut - gap_s]),
            Block(pl, "val", "tail", keep.iloc[len(keep) - n_val:], pl.df[t_all >= cut], gap)]


def choose_blocks(plans: list[Plan], *, val_fraction: float, seed: int, val: list[str] | None,
                  gap_s: float) -> tuple[list[Block], str]:
    """Whole sessions when they can fill a validation split, else time blocks inside each
    session. Returns the blocks and how they were split ("session" | "time")."""
    split = split_sessions([pl.path for pl in plans], val_fraction, seed, val)
    blocks = session_blocks(plans, split)
    if val or val_fraction <= 0 or any(b.part == "val" and len(b.rows) for b in blocks):
        return blocks, "session"
    timed = [b for pl in plans for b in time_blocks(pl, val_fraction, gap_s)]
    if not any(b.block == "tail" for b in timed):  # every session too short to split
        return blocks, "session"
    return timed, "time"


def _frame(path, image, row):
    try:
        return fr.to_model_input(load_image(path, image)), None
    except (SessionError, ValueError) as exc:
        return None, f"{exc} (frames.csv row {row})"


def write_block(writer: ArraysWriter, b: Block, pool: ThreadPoolExecutor, skip_bad: bool, bar) -> dict:
    """Decode one block's frames into the writer (several at once); returns its manifest entry."""
    p, start, skipped = b.plan.path, writer.rows[b.part], []
    for c in range(0, len(b.rows), CHUNK):
        chunk = b.rows.iloc[c:c + CHUNK]
        results = pool.map(_frame, [p] * len(chunk), chunk["image"], [int(i) + 2 for i in chunk.index])
        acts = chunk[list(act.FIELDS)].to_numpy(np.float32)
        for k, (frame_no, (img, err)) in enumerate(zip(chunk["frame"], results, strict=True)):
            if err:
                if not skip_bad:
                    raise SessionError(err)
                skipped.append(int(frame_no))
                continue
            writer.add(b.part, img, acts[k])
        bar.update(len(chunk))
    df, meta, span = b.plan.df, b.plan.df.attrs["meta"], b.span
    in_span = set(span.index)
    entry = {
        "path": p,
        "split": b.part,
        "rows": [start, writer.rows[b.part]],
        "frames": writer.rows[b.part] - start,
        "total": len(span),
        "excluded": dict(sorted(Counter(span.loc[span["excluded"], "reason"]).items())),
        "skipped_bad": sorted(skipped + [int(df.loc[r - 2, "frame"]) for r in b.plan.bad_range
                                         if r - 2 in in_span]),
        "source": meta.get("source"),
        "track": meta.get("track") or meta.get("game"),
        "drivers": dict(sorted(Counter(b.rows["driver"]).items())),
    }
    if b.block != "all":
        t = b.plan.clock(b.rows)
        entry.update(block=b.block, frame_range=[int(b.rows["frame"].iat[0]), int(b.rows["frame"].iat[-1])],
                     seconds=[round(float(t[0]), 3), round(float(t[-1]), 3)])
    if b.gap is not None:
        entry["gap"] = b.gap
    return entry


def prepare(paths, out, *, val_fraction: float = 0.2, val: list[str] | None = None, seed: int = 0,
            skip_bad: bool = False, force: bool = False, val_gap_s: float = VAL_GAP_S,
            progress: bool = True) -> dict:
    """Sessions -> ``out`` (arrays + manifest); returns the manifest (see the module doc)."""
    paths = resolve_inputs(paths)
    if not 0 <= val_fraction <= 1:
        raise PrepareError(f"--val-fraction must be in [0, 1], got {val_fraction}")
    if val_gap_s < 0:
        raise PrepareError(f"--val-gap must be >= 0 seconds, got {val_gap_s}")
    writer_args = {"replace": force, "inputs": paths}
    check_target(out, **writer_args)  # refuse a bad --out before reading anything
    plans = [plan_session(p, skip_bad) for p in paths]
    blocks, split_by = choose_blocks(plans, val_fraction=val_fraction, seed=seed, val=val, gap_s=val_gap_s)
    counts = Counter()
    for b in blocks:
        counts[b.part] += len(b.rows)
    with ArraysWriter(out, counts, **writer_args) as writer, ThreadPoolExecutor(max_workers=2) as pool:
        bar = tqdm(total=sum(counts.values()), desc="prepare", unit="frame", disable=not progress)
        entries = [write_block(writer, b, pool, skip_bad, bar) for b in blocks]
        bar.close()
        extra = {"val_gap_s": val_gap_s} if split_by == "time" else {}
        return writer.commit(entries, val_fraction=val_fraction, seed=seed, split_by=split_by, **extra)
