"""python -m record: record a session (frames + actions) from the screen or kartsim.

Examples:
  python -m record                                   # emulator window + gamepad, until Ctrl-C
  python -m record --region 0,0,640,480 --seconds 120
  python -m record --source sim --track luigi --seconds 60 --out data/sessions/NAME
  python -m record --source sim --keyboard           # drive kartsim yourself
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import cli
from dataset.session import SessionError, SessionWriter
from dataset.sink import ProcessSessionSink, SessionSink
from record.status import StatusLine

MAX_RATE = 60.0
PROG = "python -m record"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=("screen", "sim"), default="screen",
                    help="screen: the emulator's window with mss; sim: frames straight from kartsim")
    ap.add_argument("--track", default="luigi", help="kartsim track (sim) or the track being raced (screen)")
    ap.add_argument("--game", default="mk64", help="game name stored in the metadata (screen source)")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--rate", type=float, default=30.0, help=f"capture rate in Hz (default 30, at most {MAX_RATE:g})")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="the session folder to write (default data/sessions/<source>-<track>-<time>)")
    g = ap.add_argument_group("screen source")
    g.add_argument("--window", default="Mupen64Plus",
                   help="title (regex, case-insensitive) of the window to capture (default %(default)s)")
    g.add_argument("--region", default=None, help="capture x,y,w,h instead of finding the window")
    g = ap.add_argument_group("controller")
    g.add_argument("--gamepad", default=None, help="evdev device (default: the first gamepad found)")
    g.add_argument("--mapping", default=None, help="controller mapping JSON (see common/gamepad.py)")
    g.add_argument("--keyboard", action="store_true", help="sim: drive with the keyboard in a play window")
    g.add_argument("--expert", action="store_true", help="sim: the scripted expert drives (default for sim)")
    g = ap.add_argument_group("sim source")
    g.add_argument("--size", type=cli.size_arg(8), default=(240, 320), metavar="HxW",
                   help="sim frame size, rows x columns (default 240x320)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--laps", type=int, default=3)
    g.add_argument("--stop-at-finish", action="store_true", help="stop when the race finishes")
    g.add_argument("--fast", action="store_true", help="sim: record as fast as possible, not in real time")
    g.add_argument("--noise", type=float, default=0.0,
                   help="sim expert: DART steering noise (std, e.g. 0.3): the kart drives perturbed, the "
                        "recorded label stays the expert's, so the data shows how to recover (default 0)")
    g = ap.add_argument_group("writer")
    g.add_argument("--queue", type=int, default=128, help="frames buffered between capture and disk (default %(default)s)")
    g.add_argument("--writers", type=int, default=2, help="PNG encoders (default %(default)s)")
    g.add_argument("--encoder", choices=("process", "thread"), default="process",
                   help="encode PNGs in separate processes (default: capture never waits for their GIL) "
                        "or in threads")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    ap.add_argument("--preview", type=int, default=None, metavar="PORT",
                    help="serve a live preview page (frame + stick plot) on 127.0.0.1:PORT")
    cli.add_json(ap)
    return ap


def fail(msg: str):
    cli.fail(PROG, msg)


def make_writer(session: SessionWriter, resolution, encoder: str, queue_size: int, writers: int) -> SessionSink:
    """The session's background writer: encoder processes, or threads when those are unavailable."""
    if encoder == "process":
        try:
            writer = ProcessSessionSink(session, (*resolution, 3), queue_size=queue_size, encoders=writers)
        except (MemoryError, OSError, RuntimeError) as exc:
            print(f"record: note: encoder processes unavailable ({exc}); using threads", file=sys.stderr)
        else:
            if writer.slots < queue_size:
                print(f"record: note: /dev/shm holds only {writer.slots} queued frames", file=sys.stderr)
            return writer
    return SessionSink(session, queue_size=queue_size, encoders=writers)


def default_out(source: str, track: str) -> Path:
    return Path("data/sessions") / f"{source}-{track}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_args(args) -> None:
    if not 0 < args.rate <= MAX_RATE:
        fail(f"--rate must be in (0, {MAX_RATE:g}] Hz, got {args.rate:g}")
    if args.fast and args.source != "sim":
        fail("--fast only applies to --source sim (the screen runs in real time)")
    if args.keyboard and args.source != "sim":
        fail("--keyboard only applies to --source sim; the screen source reads the gamepad")


def open_gamepad(args, opened: list):
    from common.gamepad import Gamepad, MappingError, NoGamepad

    try:
        controller = Gamepad(args.gamepad, args.mapping).start()
    except (NoGamepad, MappingError) as exc:
        fail(str(exc))
    opened.append(controller)
    controller.driver = "human"
    return controller


def screen_parts(args, meta: dict, opened: list):
    """The emulator's window and the gamepad (opened first: no pad, no point)."""
    from common.screen import ScreenCapture, ScreenError, resolve_region

    controller = open_gamepad(args, opened)
    try:
        region, found = resolve_region(args.window, args.region)
        if found == "default":
            print(f"record: no window matching {args.window!r}; capturing the default region "
                  f"{region} (use --region x,y,w,h)", file=sys.stderr)
        source = ScreenCapture(region)
    except ScreenError as exc:
        fail(str(exc))
    opened.append(source)
    meta.update(source="screen", game=args.game, region=list(region), region_from=found,
                controller={"device": controller.path, "name": controller.name, "mapping": controller.mapping})
    return source, controller


def sim_parts(args, meta: dict, opened: list):
    """kartsim and who drives it: the expert (default), the keyboard or a gamepad."""
    from record.sim import SimSource

    try:
        source = SimSource(args.track, args.size, args.seed, args.laps, args.stop_at_finish, args.noise)
    except ImportError as exc:
        fail(f"kartsim is not available: {exc}")
    except (ValueError, KeyError, FileNotFoundError) as exc:
        fail(f"cannot start kartsim on track {args.track!r}: {exc}")
    opened.append(source)
    controller = sim_controller(args, source, meta, opened)
    meta.update(source="sim", seed=args.seed, laps=args.laps, fast=args.fast, sim_fps=source.fps)
    if args.rate != source.fps and not args.fast:
        print(f"record: note: kartsim advances 1/{source.fps} s per frame; at {args.rate:g} Hz the "
              f"game runs at {args.rate / source.fps:.2f}x speed", file=sys.stderr)
    return source, controller


def sim_controller(args, source, meta: dict, opened: list):
    if args.keyboard:
        from record.keyboard import KeyboardDriver

        try:
            controller = KeyboardDriver()
            opened.append(controller)
            controller.show(source.grab())  # open the play window now, not mid-recording
        except Exception as exc:  # pygame.error and friends: no display, no video driver
            fail(f"cannot open the keyboard play window ({exc}); it needs a display. "
                 "Headless, let the expert drive (the default)")
        meta["controller"] = {"device": "keyboard"}
        return controller
    if args.gamepad:
        controller = open_gamepad(args, opened)
        meta["controller"] = {"device": controller.path, "mapping": controller.mapping}
        return controller
    from record.sim import ExpertDriver

    meta["controller"] = {"device": "expert", "dart_noise": args.noise}
    controller = ExpertDriver(source)
    opened.append(controller)
    return controller


def open_session(args, out: Path, meta: dict, source) -> tuple[SessionWriter, SessionSink]:
    try:
        session = SessionWriter(out, meta)
    except (SessionError, OSError) as exc:
        fail(str(exc))
    return session, make_writer(session, source.resolution, args.encoder, args.queue, args.writers)


def start_preview(port: int, opened: list):
    from record.preview import Preview

    try:
        preview = Preview(port)
    except OSError as exc:
        fail(f"cannot serve the preview on 127.0.0.1:{port}: {exc}")
    opened.append(preview)
    print(f"record: preview at {preview.url}", file=sys.stderr)
    return preview


def close_all(opened: list) -> None:
    for part in reversed(opened):
        closer = getattr(part, "stop", None) or getattr(part, "close", None)
        if closer:
            closer()


def report(args, summary: dict, out: Path, session: SessionWriter) -> int:
    """Store the summary in meta.json, print it; exit status 3 when the recording failed."""
    summary["session"] = str(out)
    try:
        session.update_meta(summary=summary)
    except OSError as exc:  # disk full: the summary is on stdout anyway
        print(f"record: could not store the summary in {out}/meta.json: {exc}", file=sys.stderr)
    print(f"record: {summary['frames']} frames in {out} ({summary['rate_hz']:.1f} Hz, "
          f"dropped {summary['dropped']}, jitter p99 {summary['jitter_p99_ms']:.2f} ms; "
          f"stopped: {summary['stopped']})", file=sys.stderr)
    if args.json:
        cli.emit_json(summary)
    return 3 if summary["stopped"].startswith("error") else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    out = Path(args.out) if args.out else default_out(args.source, args.track)
    meta: dict = {"track": args.track, "rate_hz": args.rate}
    opened: list = []  # sources, controllers, preview: closed on the way out, whatever happens
    try:
        parts = screen_parts if args.source == "screen" else sim_parts
        source, controller = parts(args, meta, opened)
        meta.update(resolution=list(source.resolution), driver=controller.driver)
        session, writer = open_session(args, out, meta, source)
        print(f"record: {meta['source']} -> {out} at {args.rate:g} Hz"
              f"{' (fast)' if args.fast else ''}; Ctrl-C to stop", file=sys.stderr)
        preview = None if args.preview is None else start_preview(args.preview, opened)
        from record.recorder import record

        summary = record(source, controller, writer, rate=args.rate, seconds=args.seconds, fast=args.fast,
                         status=StatusLine(quiet=args.quiet), preview=preview)
    finally:
        close_all(opened)
    return report(args, summary, out, session)


if __name__ == "__main__":
    sys.exit(main())
