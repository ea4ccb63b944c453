"""Look at a session: a contact sheet of frames and a plot of the five action channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common import action as act
from dataset.session import SessionError, load_image, load_session

EXCLUDED_COLOUR = (220, 30, 30)


def contact_sheet(path, out_png, *, count: int = 48, cols: int = 8, thumb_w: int = 160,
                  skip_bad: bool = False) -> dict:
    """Evenly spaced frames (excluded ones framed in red, with their reason) in one PNG."""
    df = load_session(path, include_excluded=True)
    if len(df) == 0:
        raise SessionError(f"{path}: session has no frames")
    idx = np.unique(np.linspace(0, len(df) - 1, min(count, len(df))).round().astype(int))
    thumb_h = max(1, int(round(thumb_w * _aspect(path, df, idx, skip_bad))))
    label_h = 14
    rows = (len(idx) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (thumb_w + 4), rows * (thumb_h + label_h + 4)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    bad = []
    for k, i in enumerate(idx):
        row = df.iloc[int(i)]
        x0 = (k % cols) * (thumb_w + 4) + 2
        y0 = (k // cols) * (thumb_h + label_h + 4) + 2
        try:
            img = Image.fromarray(load_image(path, row["image"])).resize((thumb_w, thumb_h))
        except SessionError as exc:
            if not skip_bad:
                raise SessionError(f"{exc} (frames.csv row {int(i) + 2})") from exc
            bad.append(int(row["frame"]))
            img = Image.new("RGB", (thumb_w, thumb_h), (60, 0, 60))
        sheet.paste(img, (x0, y0))
        label = f"#{int(row['frame'])} {row['t'] - df['t'].iat[0]:.1f}s"
        if row["excluded"]:
            draw.rectangle((x0 - 2, y0 - 2, x0 + thumb_w + 1, y0 + thumb_h + 1), outline=EXCLUDED_COLOUR, width=2)
            label += f" {row['reason']}"
        draw.text((x0, y0 + thumb_h + 1), label[:30], fill=EXCLUDED_COLOUR if row["excluded"] else (220, 220, 220))
    sheet.save(out_png)
    return {"contact_sheet": str(out_png), "frames_shown": len(idx), "unreadable": bad}


def _aspect(path, df, idx, skip_bad: bool) -> float:
    """Height / width of the session's frames: the first shown frame that reads (with
    ``skip_bad``, past unreadable ones), else meta.json's resolution, else 3:4."""
    for k, i in enumerate(idx):
        try:
            img = load_image(path, df["image"].iat[int(i)])
            return img.shape[0] / img.shape[1]
        except SessionError as exc:
            if not skip_bad:
                raise SessionError(f"{exc} (frames.csv row {int(i) + 2})") from exc
            if k >= 7:  # enough tries: the loop below marks every bad one
                break
    res = df.attrs["meta"].get("resolution")
    if isinstance(res, list) and len(res) == 2 and all(isinstance(v, int) and v > 0 for v in res):
        return res[0] / res[1]
    return 0.75


def actions_plot(path, out_png) -> dict:
    """The five action channels over time, excluded frames shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = load_session(path, include_excluded=True)
    t = (df["t"] - df["t"].iat[0]).to_numpy() if len(df) else np.zeros(0)
    fig, axes = plt.subplots(len(act.FIELDS), 1, figsize=(12, 8), sharex=True)
    excl = df["excluded"].to_numpy() if len(df) else np.zeros(0, bool)
    for ax, field, lo, hi in zip(axes, act.FIELDS, act.LOW, act.HIGH, strict=True):
        ax.plot(t, df[field].to_numpy(), lw=0.8)
        ax.set_ylabel(field)
        ax.set_ylim(lo - 0.1, hi + 0.1)
        if excl.any():
            ax.fill_between(t, lo - 0.1, hi + 0.1, where=excl, color="red", alpha=0.15, step="mid")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds")
    meta = df.attrs["meta"]
    axes[0].set_title(f"{Path(path).name}: {meta.get('source')} {meta.get('track') or meta.get('game')}, "
                      f"{len(df)} frames, {int(excl.sum())} excluded (shaded)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return {"actions_plot": str(out_png)}


def view(path, out_dir, *, count: int = 48, skip_bad: bool = False) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(path).resolve().name
    rep = {"session": str(path)}
    rep.update(contact_sheet(path, out / f"{name}_frames.png", count=count, skip_bad=skip_bad))
    rep.update(actions_plot(path, out / f"{name}_actions.png"))
    return rep
