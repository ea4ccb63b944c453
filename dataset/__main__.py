"""python -m dataset: look at, clean and prepare recorded sessions.

  view SESSION --out DIR              contact sheet + action plot PNGs
  clean SESSION... [--dry-run]        write reversible exclusions, with reasons
  restore SESSION... [--reason R]     undo them
  prepare SESSION... --out DIR        model-ready memory-mappable arrays + manifest
  import-tensorkart DIR --out SESSION a TensorKart samples folder -> a session
  export-tensorkart SESSION --out DIR a session -> a TensorKart folder (new or empty; --force)
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_command, add_json, emit_json, reported
from dataset.prepare import VAL_GAP_S


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dataset", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(p, skip=True):
        add_json(p)
        if skip:
            p.add_argument("--skip-bad", action="store_true",
                           help="go past bad frames (missing/corrupt images, bad values) and list them")

    p = add_command(sub, "view", cmd_view, help="contact sheet and action plot of a session")
    p.add_argument("session")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--count", type=int, default=48, help="frames on the contact sheet")
    common(p)

    from dataset.clean import REASONS

    p = add_command(sub, "clean", cmd_clean, help="exclude frames that are not worth learning from (reversible)",
                    description="Reasons: " + ", ".join(REASONS) + ". See dataset/clean.py.")
    p.add_argument("sessions", nargs="+")
    p.add_argument("--dry-run", action="store_true", help="report only; write nothing")
    common(p)

    p = add_command(sub, "restore", cmd_restore, help="remove exclusions written by clean")
    p.add_argument("sessions", nargs="+")
    p.add_argument("--reason", default=None, help="only this reason (default: all)")
    common(p, skip=False)

    p = add_command(
        sub, "prepare", cmd_prepare,
        help="sessions -> train/val arrays (split by session, or by time within one) + manifest",
        description="Validation is made of whole sessions when the inputs allow it. When they cannot "
        "fill it (one session, say), each session is split by time: its last --val-fraction of frames "
        "is validation, --val-gap seconds before that are left out, the rest is training.")
    p.add_argument("sessions", nargs="+")
    p.add_argument("--out", required=True, help="the prepared-data folder to write")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of sessions for validation; of each session's frames when split by time "
                   "(default: %(default)s)")
    p.add_argument("--val", action="append", default=None, help="use this session for validation (repeatable)")
    p.add_argument("--val-gap", type=float, default=VAL_GAP_S, metavar="SECONDS",
                   help="when split by time: seconds left out between train and val (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="replace --out if it is a prepared-data folder (anything else is refused)")
    common(p)

    p = add_command(sub, "import-tensorkart", cmd_import_tensorkart, help="a TensorKart samples folder -> a session")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="new session folder")
    p.add_argument("--track", default="unknown")
    p.add_argument("--rate", type=float, default=5.0, help="TensorKart's sampling rate (default 5 Hz)")
    common(p)

    p = add_command(sub, "export-tensorkart", cmd_export_tensorkart, help="a session -> a TensorKart samples folder")
    p.add_argument("session")
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it holds only a TensorKart export (data.csv, img_N.png)")
    common(p, skip=False)
    return ap


def _report_prepare(m: dict, args) -> None:
    """prepare's stderr: one line per session (or time block), how val was made, the totals."""
    for e in m["sessions"]:
        extra = f", skipped bad frames {e['skipped_bad']}" if e["skipped_bad"] else ""
        block = ""
        if "block" in e:
            block = f" ({'last' if e['block'] == 'tail' else 'first'} part, {e['seconds'][0]:.1f}-{e['seconds'][1]:.1f} s"
            block += f"; {e['gap']['frames']} frames before it left out)" if "gap" in e else ")"
        print(f"{e['path']}: {e['split']}{block} rows {e['rows'][0]}..{e['rows'][1]} "
              f"(excluded {sum(e['excluded'].values())}{extra})", file=sys.stderr)
    if m["split_by"] == "time":
        print(f"{args.prog}: note: the sessions given cannot fill a validation split with whole sessions, "
              f"so each is split by time: its last {m['val_fraction']:.0%} of frames is val, the "
              f"{m['val_gap_s']:g} s before that left out (manifest split_by: time)", file=sys.stderr)
    if m["val"] == 0 and args.val_fraction > 0:
        print(f"{args.prog}: warning: the val split is empty (sessions too short to hold out "
              f"{args.val_fraction:.0%} with a {args.val_gap:g} s gap); train needs one: record longer "
              f"or more sessions, or lower --val-gap", file=sys.stderr)
    print(f"{args.out}: train {m['train']} frames, val {m['val']} frames", file=sys.stderr)


def _progress() -> bool:
    return sys.stderr.isatty()


def cmd_view(args) -> dict:
    from dataset.view import view

    result = view(args.session, args.out, count=args.count, skip_bad=args.skip_bad)
    print(f"{result['contact_sheet']}\n{result['actions_plot']}", file=sys.stderr)
    return result


def cmd_clean(args) -> dict:
    from dataset.clean import clean

    reports = []
    for s in args.sessions:
        rep = clean(s, dry_run=args.dry_run, skip_bad=args.skip_bad, progress=_progress())
        reports.append(rep)
        counts = ", ".join(f"{k} {v}" for k, v in rep["excluded"].items()) or "nothing"
        print(f"{s}: {rep['frames']} frames, {'would exclude' if args.dry_run else 'excluded'} "
              f"{rep['excluded_total']} ({counts}); {rep['kept']} kept", file=sys.stderr)
        if rep["unreadable"]:
            print(f"  unreadable frames: {rep['unreadable']}", file=sys.stderr)
    totals: dict = {}
    for rep in reports:
        for k, v in rep["excluded"].items():
            totals[k] = totals.get(k, 0) + v
    return {"sessions": reports, "excluded": totals, "dry_run": args.dry_run,
            "frames": sum(r["frames"] for r in reports), "kept": sum(r["kept"] for r in reports)}


def cmd_restore(args) -> dict:
    from dataset.clean import restore

    result = {"sessions": [restore(s, args.reason) for s in args.sessions]}
    for rep in result["sessions"]:
        print(f"{rep['session']}: restored {rep['restored']} frames", file=sys.stderr)
    return result


def cmd_prepare(args) -> dict:
    from dataset.prepare import prepare

    m = prepare(args.sessions, args.out, val_fraction=args.val_fraction, val=args.val, seed=args.seed,
                skip_bad=args.skip_bad, force=args.force, val_gap_s=args.val_gap, progress=_progress())
    _report_prepare(m, args)
    return {"out": args.out, "train": m["train"], "val": m["val"], "split_by": m["split_by"],
            "sessions": [{k: e[k] for k in ("path", "split", "rows", "skipped_bad", "block") if k in e}
                         for e in m["sessions"]]}


def cmd_import_tensorkart(args) -> dict:
    from dataset.tensorkart import import_tensorkart

    result = import_tensorkart(args.folder, args.out, track=args.track, rate_hz=args.rate,
                               skip_bad=args.skip_bad, progress=_progress())
    print(f"{args.out}: {result['frames']} frames imported"
          + (f"; skipped rows {result['skipped_rows']}" if result["skipped_rows"] else ""), file=sys.stderr)
    return result


def cmd_export_tensorkart(args) -> dict:
    from dataset.tensorkart import export_tensorkart

    return export_tensorkart(args.session, args.out, force=args.force)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # SessionError is a ValueError; OSError: a full disk, a read-only folder (nothing of the inputs touched)
    with reported(args.prog):
        result = args.fn(args)
    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
