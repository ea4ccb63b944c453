"""Find the frames a model should not learn from; write reversible exclusions.

Reasons (one per frame, first that applies):

- ``unreadable``   image missing or corrupt (only with --skip-bad; else an error)
- ``out-of-range`` an action value that is not finite or outside common.action's range
- ``black``        nothing on screen (luma p99 below BLACK_LUMA)
- ``not-the-game`` the desktop or another window captured instead: its colour
                   histogram is far from the session's median frame AND it looks
                   like a desktop (mostly exactly-flat panels plus text-like edges,
                   several times what the session's own frames show), or it is so far
                   (FAR_ALONE) that nothing in the session resembles it. Both
                   tests are relative to the session, so they hold for kartsim's
                   flat-shaded frames and for textured emulator frames alike.
- ``frozen``       the same image as the previous frame, in a run of at least
                   FROZEN_MIN_S (paused emulator, menus)
- ``duplicate``    the same image as the previous frame, in a shorter run
- ``idle-head`` / ``idle-tail``  no input before the first / after the last input

Exclusions with other reasons (e.g. ``manual: ...`` written by hand) are kept.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import action as act
from dataset.features import signature
from dataset.session import SessionError, load_image, load_session, read_exclusions, write_exclusions

REASONS = ("unreadable", "out-of-range", "black", "not-the-game", "frozen", "duplicate", "idle-head",
           "idle-tail")


@dataclass
class Params:
    black_luma: float = 20.0  # luma p99 below this: black
    same_diff: float = 2.0  # largest |thumb diff| (0..255) at most this: the same image (any local
    # change, even a small sprite moving, exceeds it; a re-captured identical frame does not)
    frozen_min_s: float = 0.5  # a run of identical frames at least this long: frozen
    far_min: float = 0.35  # histogram distance (total variation, 0..1) that can be "not the game"
    far_mads: float = 6.0  # ... and this many robust deviations above the session's typical distance
    far_alone: float = 0.7  # so far that no desktop evidence is needed
    flat_min: float = 0.35  # desktop: at least this share of exactly flat pixels
    edges_factor: float = 3.0  # desktop: text-edge share this many times the session's median
    edges_min: float = 0.004
    idle_stick: float = 0.05  # |x|, |y| at most this (and no button): no input


def _robust(v: np.ndarray) -> tuple[float, float]:
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def analyse(path, *, skip_bad: bool = False, params: Params | None = None, progress: bool = True) -> dict:
    """Decide a reason for every frame that should be excluded.

    Returns {"reasons": {frame: reason}, "frames": N, "rate_hz": r, "scores": {...}}.
    A bad image raises SessionError naming file and row, unless ``skip_bad``.
    """
    p = params or Params()
    df = load_session(path, include_excluded=True)
    n = len(df)
    frames = df["frame"].to_numpy()
    reasons: dict[int, str] = {}
    if n == 0:
        return {"reasons": reasons, "frames": 0, "scores": {}}
    rate = float(df.attrs["meta"].get("rate_hz") or 30.0)

    def feat(i):
        try:
            return signature(load_image(path, df["image"].iat[i]))
        except SessionError as exc:
            if not skip_bad:
                raise SessionError(f"{exc} (frames.csv row {i + 2})") from exc
            return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        sigs = list(tqdm(pool.map(feat, range(n)), total=n, desc=f"clean {Path(path).name}",
                         disable=not progress, leave=False, unit="frame"))

    def mark(mask, reason):
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(frames[i]), reason)

    ok = np.array([s is not None for s in sigs])
    mark(~ok, "unreadable")

    acts = df[list(act.FIELDS)].to_numpy(dtype=np.float64)
    bad_range = ~np.isfinite(acts).all(axis=1) | (acts < act.LOW - 1e-4).any(axis=1) | \
        (acts > act.HIGH + 1e-4).any(axis=1)
    mark(bad_range, "out-of-range")

    luma = np.array([s["luma_p99"] if s else 0.0 for s in sigs])
    black = ok & (luma < p.black_luma)
    mark(black, "black")

    scores: dict = {}
    valid = ok & ~black
    if valid.sum() >= 3:
        hists = np.stack([s["hist"] if s else np.zeros(64, np.float32) for s in sigs])
        med_hist = np.median(hists[valid], axis=0)
        med_hist /= max(med_hist.sum(), 1e-9)
        dist = 0.5 * np.abs(hists - med_hist).sum(axis=1)  # total variation distance, 0..1
        flat = np.array([s["flat"] if s else 0.0 for s in sigs])
        edges = np.array([s["edges"] if s else 0.0 for s in sigs])
        d_med, d_mad = _robust(dist[valid])
        f_med, _ = _robust(flat[valid])
        e_med, _ = _robust(edges[valid])
        far = dist > max(p.far_min, d_med + p.far_mads * d_mad)
        # Flat panels alone are no evidence (kartsim is flat-shaded); text-like edges well above the
        # session's own, on a mostly flat image, are.
        desktop = (flat > p.flat_min) & (edges > max(p.edges_min, p.edges_factor * e_med))
        not_game = valid & far & (desktop | (dist > p.far_alone))
        mark(not_game, "not-the-game")
        scores = {"hist_distance_median": round(d_med, 4), "flat_median": round(f_med, 4),
                  "edges_median": round(e_med, 5)}

    thumbs = [s["thumb"] if s else None for s in sigs]
    same = np.zeros(n, bool)
    for i in range(1, n):
        if thumbs[i] is not None and thumbs[i - 1] is not None:
            same[i] = float(np.max(np.abs(thumbs[i] - thumbs[i - 1]))) <= p.same_diff
    frozen_min = max(2, int(round(p.frozen_min_s * rate)))
    i = 0
    while i < n:
        if not same[i]:
            i += 1
            continue
        j = i
        while j < n and same[j]:
            j += 1
        run = np.zeros(n, bool)
        run[i:j] = True  # frames i..j-1 repeat frame i-1
        mark(run, "frozen" if (j - i + 1) >= frozen_min else "duplicate")
        i = j

    a = np.nan_to_num(acts)
    active = (np.abs(a[:, 0]) > p.idle_stick) | (np.abs(a[:, 1]) > p.idle_stick) | \
        (a[:, 2:] > act.BUTTON_THRESHOLD).any(axis=1)
    if active.any():
        first, last = int(np.argmax(active)), int(n - 1 - np.argmax(active[::-1]))
        mark(np.arange(n) < first, "idle-head")
        mark(np.arange(n) > last, "idle-tail")
    else:
        mark(np.ones(n, bool), "idle-head")
    return {"reasons": reasons, "frames": n, "rate_hz": rate, "scores": scores}


def clean(path, *, dry_run: bool = False, skip_bad: bool = False, params: Params | None = None,
          progress: bool = True) -> dict:
    """Analyse one session and (unless dry_run) write its exclusions. Returns the report."""
    result = analyse(path, skip_bad=skip_bad, params=params, progress=progress)
    kept_manual = {f: r for f, r in read_exclusions(path).items() if r not in REASONS}
    merged = {**result["reasons"], **kept_manual}
    if not dry_run:
        write_exclusions(path, merged)
    counts = Counter(merged.values())
    return {
        "session": str(path),
        "frames": result["frames"],
        "excluded": dict(sorted(counts.items())),
        "excluded_total": len(merged),
        "kept": result["frames"] - len(merged),
        "unreadable": sorted(f for f, r in merged.items() if r == "unreadable"),
        "scores": result["scores"],
        "dry_run": dry_run,
    }


def restore(path, reason: str | None = None) -> dict:
    """Remove exclusions (all, or one reason); frames are never deleted, so this is exact."""
    old = read_exclusions(path)
    keep = {f: r for f, r in old.items() if reason is not None and r != reason}
    write_exclusions(path, keep)
    return {"session": str(path), "restored": len(old) - len(keep), "still_excluded": len(keep)}
