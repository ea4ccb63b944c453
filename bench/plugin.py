"""Benchmark the C input plugin inside the real emulator (mupen64plus under Xvfb,
GPL test ROM, Rice video, no speed limit).

    python -m bench.plugin --json

Emulated frames per second are measured between two --testshots frames (the
screenshots' file times), so emulator start-up is not counted. Configurations,
interleaved and repeated (median reported):

  dummy   --input dummy: the core's own neutral controller
  plugin  our plugin polling a trivial keep-alive server (GET, no frame)
  frame   the same with frame hand-off: each poll POSTs the native RGB frame
  small   frame hand-off downscaled in C to --small (default 150x200, HxW)

overhead = 1 - fps_plugin / fps_dummy; poll_p99_ms is the plugin's own
GetKeys latency (from its stats_file), 99th percentile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from common.cli import add_json, emit_json, fail, format_size, size_arg
from common.mupen import DUMMY, find_plugin, require_mupen
from common.proc import stop
from common.xvfb import Xvfb
from testing.emulator import build_plugin, find_test_rom, start_emulator
from testing.plugin_server import FastAnswerServer

PROG = "python -m bench.plugin"


def run_once(rom: Path, display: str, kind: str, first: int, last: int, small: tuple[int, int], workdir: Path,
             resolution: tuple[int, int]) -> dict:
    """One emulator run; returns fps between frames first..last and the plugin's stats.

    ``small``, ``resolution``: (height, width)."""
    cfg = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=workdir))
    server = None
    settings: dict[str, object] = {}
    plugin = DUMMY
    if kind != "dummy":
        server = FastAnswerServer(answer={"A_BUTTON": 1, "X_AXIS": 10}).start()
        plugin = None  # ours
        settings = {"port": server.port, "timeout_ms": 1000, "stats_file": cfg / "stats.json"}
        if kind in ("frame", "small"):
            settings["frame"] = 1
        if kind == "small":
            settings["frame_height"], settings["frame_width"] = small
    h, w = resolution
    sets = {"Video-General[ScreenWidth]": w, "Video-General[ScreenHeight]": h}
    proc = start_emulator(rom, cfg, display, plugin=plugin, settings=settings, sets=sets,
                          testshots=f"{first},{last}")
    try:
        rc = proc.wait(600)
    finally:
        stop(proc)
        if server:
            server.stop()
    shots = sorted((cfg / "shots").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    if rc != 0 or len(shots) < 2:
        log = (cfg / "emulator.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind} run failed (rc {rc}, {len(shots)} screenshots); log tail:\n{log}")
    seconds = (shots[-1].stat().st_mtime_ns - shots[0].stat().st_mtime_ns) / 1e9
    out = {"fps": (last - first) / seconds}
    stats_file = cfg / "stats.json"
    if stats_file.exists():
        out["stats"] = json.loads(stats_file.read_text())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1500, help="frames measured per run (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=200, help="frames skipped at start (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration; median (default %(default)s)")
    ap.add_argument("--small", type=size_arg(), default=(150, 200), metavar="HxW",
                    help="downscaled frame size, rows x columns (default 150x200)")
    ap.add_argument("--resolution", type=size_arg(), default=(480, 640), metavar="HxW",
                    help="emulator window, the native frame size, rows x columns (default 480x640)")
    ap.add_argument("--rom", type=Path, default=None, help="ROM (default: $KARTPILOT_TEST_ROM or "
                                                            "../shared/roms/m64p_test_rom.v64)")
    ap.add_argument("--no-frame", action="store_true", help="skip the frame hand-off configurations")
    add_json(ap)
    args = ap.parse_args(argv)

    rom = args.rom or find_test_rom()
    if rom is None or not Path(rom).is_file():
        fail(PROG, f"test ROM not found{f': {rom}' if rom else ''}: pass --rom or set KARTPILOT_TEST_ROM")
    try:
        require_mupen()
        build_plugin()  # once: rebuilding under a running emulator would swap its .so
        find_plugin()
    except RuntimeError as exc:
        fail(PROG, str(exc))
    from common.machine import machine_info, machine_line

    print(machine_line(), flush=True)
    kinds = ["dummy", "plugin"] + ([] if args.no_frame else ["frame", "small"])
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    first, last = args.warmup, args.warmup + args.frames
    rh, rw = args.resolution
    display = Xvfb((max(600, rh + 32), max(800, rw + 32)))
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="kp-bench-plugin-") as tmp:
            runs = [(r, k) for r in range(args.repeat) for k in kinds]  # interleaved against drift
            for _r, kind in tqdm(runs, desc="emulator runs", disable=args.json, file=sys.stderr):
                try:
                    res = run_once(Path(rom), display.name, kind, first, last, args.small, Path(tmp),
                                   args.resolution)
                except RuntimeError as exc:  # one retry: the machine is shared and noisy
                    print(f"retrying {kind}: {str(exc).splitlines()[0]}", file=sys.stderr)
                    res = run_once(Path(rom), display.name, kind, first, last, args.small, Path(tmp),
                                   args.resolution)
                results[kind].append(res)
    finally:
        display.close()

    def fps(kind: str) -> float:
        return statistics.median(r["fps"] for r in results[kind])

    def p99(kind: str) -> float:
        return statistics.median(r["stats"]["latency_ms"]["p99"] for r in results[kind])

    out = {
        "bench": "plugin", "machine": machine_info(),
        "fps_dummy": round(fps("dummy"), 1),
        "fps_plugin": round(fps("plugin"), 1),
        "overhead": round(1 - fps("plugin") / fps("dummy"), 4),
        "poll_p99_ms": round(p99("plugin"), 3),
        "poll_p50_ms": round(statistics.median(r["stats"]["latency_ms"]["p50"] for r in results["plugin"]), 3),
    }
    if not args.no_frame:
        sample = results["frame"][0]["stats"]
        out.update({
            "fps_frame": round(fps("frame"), 1),
            "overhead_frame": round(1 - fps("frame") / fps("dummy"), 4),
            "poll_p99_ms_frame": round(p99("frame"), 3),
            "fps_frame_small": round(fps("small"), 1),
            "overhead_frame_small": round(1 - fps("small") / fps("dummy"), 4),
            "poll_p99_ms_frame_small": round(p99("small"), 3),
            "frame_small_size": format_size(args.small),
            "capture_ms_mean": round(statistics.median(r["stats"]["capture_ms"]["mean"] for r in results["frame"]), 3),
            "frames_posted_per_run": sample["frames_sent"],
        })
    out.update({"resolution": format_size(args.resolution), "frames_per_run": args.frames, "repeat": args.repeat, "seconds": round(time.monotonic() - t0, 1),
                "runs_fps": {k: [round(r["fps"], 1) for r in v] for k, v in results.items()}})
    if args.json:
        emit_json(out)
    else:
        for key, value in out.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
