"""Benchmark the screen recorder: a real X window under Xvfb, captured with mss.

    python -m bench.record --rate 60 --seconds 20 --json

Runs the real capture loop (clock, mss grab, gamepad thread, bounded queue, PNG
writer threads, session files in a temporary folder) and prints the achieved
rate, the jitter of capture instants against the schedule, and dropped frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common.cli import add_json, emit_json, format_size, size_arg
from common.gamepad import Gamepad
from common.screen import ScreenCapture
from dataset.session import SessionWriter
from record.__main__ import make_writer
from record.recorder import record
from record.status import StatusLine
from testing.display import animated_window, virtual_display


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.record", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", type=size_arg(8), default=(480, 640), metavar="HxW",
                    help="captured window size, rows x columns (default 480x640)")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--encoder", choices=("process", "thread"), default="process")
    ap.add_argument("--queue", type=int, default=128)
    ap.add_argument("--boost-x", action="store_true",
                    help="run Xvfb under SCHED_FIFO where permitted: on a crowded machine the X server's "
                         "scheduling, not the recorder, otherwise dominates the grab time")
    add_json(ap)
    args = ap.parse_args(argv)
    from common.machine import machine_info, machine_line

    print(machine_line(), flush=True)  # probed before the recording: the probe's child is not measured
    h, w = args.size
    with tempfile.TemporaryDirectory(prefix="kp-bench-record-") as tmp, \
            virtual_display((max(600, h + 40), max(800, w + 40)), boost=args.boost_x) as display, \
            animated_window(display, size=args.size, fps=60) as region:
        os.environ["DISPLAY"] = display
        pad_file = Path(tmp) / "pad.events"
        pad_file.touch()
        source = ScreenCapture(region)
        t = time.perf_counter()
        for _ in range(30):
            source.grab()
        grab_ms = (time.perf_counter() - t) / 30 * 1000
        session = SessionWriter(Path(tmp) / "session", {"source": "screen", "game": "bench",
                                                       "resolution": [h, w], "rate_hz": args.rate})
        with Gamepad(pad_file) as pad:
            pad.driver = "human"
            writer = make_writer(session, (h, w), args.encoder, args.queue, args.writers)
            summary = record(source, pad, writer, rate=args.rate, seconds=args.seconds,
                             status=StatusLine(quiet=args.json))
        source.close()
        frames_on_disk = len(list((Path(tmp) / "session" / "frames").glob("*.png")))
    out = {
        "bench": "record", "machine": machine_info(),
        "rate_hz": summary["rate_hz"],
        "target_rate_hz": args.rate,
        "jitter_p50_ms": summary["jitter_p50_ms"],
        "jitter_p99_ms": summary["jitter_p99_ms"],
        "jitter_max_ms": summary["jitter_max_ms"],
        "dropped": summary["dropped"],
        "missed_ticks": summary["missed_ticks"],
        "dropped_queue_full": summary["dropped_queue_full"],
        "frames": summary["frames"],
        "frames_on_disk": frames_on_disk,
        "grab_ms": round(grab_ms, 3),
        "capture_p99_ms": summary["capture_p99_ms"],
        "priority": summary["priority"],
        "size": format_size(args.size),
        "writers": args.writers,
        "encoder": args.encoder,
        "boost_x": args.boost_x,
        "cpus": os.cpu_count(),
    }
    if args.json:
        emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k:20s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
