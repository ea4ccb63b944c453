"""``python -m drive``: serve the model to the game (or the simulator).

    python -m drive --model M.keras                    serve on 127.0.0.1:8082 (DRIVE_PORT; Ctrl-C stops)
    python -m drive --model M.keras --sim --track T    drive kartsim through the server, print lap times
    python -m drive --model M.keras --rom GAME.z64     launch mupen64plus with the project's plugin
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time

from common.cli import add_json, emit_json, fail, format_size, size_arg
from common.defaults import MODEL, POST_FRAME_HW
from drive.runner import DriveError

PROG = "python -m drive"

DESCRIPTION = """KartPilot drive server (mupen64plus-input-bot protocol, plus frame POSTs).

GET /<0..3> captures --region with mss and answers the model's action as input-bot JSON;
POST /<0..3> with X-Frame: WxHx3 and a raw RGB body answers the same. The dashboard is at /.
mupen64plus-input-bot clients (TensorKart, gym-mupen64plus) work unchanged: GET /<n> HTTP/1.0
and GET / HTTP/1.0 are answered so input-bot reads the model's action.
Only requests naming this server (Host: the bound address, localhost, 127.0.0.1, [::1], or an
--allow-host name) are served; dashboard changes from another origin are refused (403). Binding
an address other than loopback needs --token (or $KARTPILOT_DRIVE_TOKEN).
Modes: ai (model drives; hold LB to take over, overrides are saved as corrections),
shadow (you drive, the model is logged), human (you drive; dashboard 'Start recording'
writes a `plugin` session). Back/Select on the gamepad cycles ai -> shadow -> human.
"""


def build_parser() -> argparse.ArgumentParser:
    from drive.guard import TOKEN_ENV
    from drive.modes import MODES
    from drive.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_THREADS

    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, metavar="MODEL.keras", help="PilotNet .keras model (default: %(default)s)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 = any free port (default: %(default)s)")
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                   help=f"shared secret required from other machines; needed to bind a non-loopback --host "
                        f"(default: ${TOKEN_ENV}). Clients send 'Authorization: Bearer TOKEN'; "
                        f"the dashboard: open /?token=TOKEN once")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name the server answers to (repeatable), e.g. this machine's LAN name")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="WSGI worker threads (default: %(default)s: 4 controllers + dashboard)")
    p.add_argument("--mode", choices=MODES, default="ai", help="starting mode (default: %(default)s)")
    p.add_argument("--gamepad", default="auto",
                   help="'auto' (first gamepad if any), 'none', or an evdev device/file (default: %(default)s)")
    p.add_argument("--mapping", help="controller mapping JSON (common/gamepad.py format)")
    p.add_argument("--human-port", type=int, default=0, help="controller the gamepad drives (default: %(default)s)")
    p.add_argument("--sessions", default="data/sessions",
                   help="where corrections and plugin recordings go (default: %(default)s); shadow-mode "
                        "logs go to the sibling folder 'shadow' (data/shadow)")
    p.add_argument("--trim-ms", type=float, default=300.0,
                   help="reaction lag dropped at the start of each takeover (default: %(default)s)")
    p.add_argument("--record", action="store_true", help="start with plugin recording on (human mode)")
    p.add_argument("--game", default=None, help="game name for session metadata (default: track or ROM name)")
    p.add_argument("--rate", type=float, default=None, help="poll rate for session metadata (default: 30 sim, 60 N64)")
    p.add_argument("--region", default=None, help="GET capture region x,y,w,h (default: 0,0,640,480)")
    p.add_argument("--tf-threads", type=int, default=1, help="TensorFlow intra-op threads (default: %(default)s)")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="profile every request's handling with cProfile (requests then run one at a time) and "
                        "write the stats to FILE.prof on exit (read with python -m pstats); the top functions "
                        "per request are printed")
    sim = p.add_argument_group("simulator client (--sim)")
    sim.add_argument("--sim", action="store_true", help="drive kartsim through this server and print lap times")
    sim.add_argument("--track", default="luigi", help="kartsim track (default: %(default)s)")
    sim.add_argument("--laps", type=int, default=3, help="laps to race (default: %(default)s)")
    sim.add_argument("--sim-size", type=size_arg(8), default=(240, 320), metavar="HxW",
                     help="frame size the sim posts, rows x columns (default: 240x320)")
    sim.add_argument("--seed", type=int, default=0, help="kartsim seed (default: %(default)s)")
    sim.add_argument("--max-seconds", type=float, default=None, help="game-time cap (default: 180 per lap)")
    sim.add_argument("--headless", action="store_true", help="no window even if DISPLAY is set")
    emu = p.add_argument_group("real game (--rom)")
    emu.add_argument("--rom", help="launch mupen64plus on this ROM with plugin_c's input plugin")
    emu.add_argument("--state", metavar="FILE",
                     help="savestate to start from (e.g. Time Trials at the start line: python -m envs.mupen "
                     "savestate); the plugin loads it at its first poll")
    emu.add_argument("--plugin", help="input plugin .so (default: $KARTPILOT_PLUGIN, else plugin_c/build/mupen64plus-input-kartpilot.so)")
    emu.add_argument("--get", action="store_true", help="plugin polls with GET (server captures) instead of POSTing frames")
    emu.add_argument("--frame-size", type=size_arg(), default=POST_FRAME_HW, metavar="HxW",
                     help="size of the frames the plugin posts, rows x columns, box-downscaled in C from the "
                     f"window (default: {format_size(POST_FRAME_HW)}, the N64's own resolution)")
    emu.add_argument("--mupen-arg", action="append", default=[], metavar="ARG",
                     help="extra mupen64plus argument, repeatable (e.g. --mupen-arg=--configdir --mupen-arg=DIR)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (serving, or the emulator); default: until Ctrl-C / exit")
    add_json(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` closes sessions like Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even if started with SIGINT ignored
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("waitress").setLevel(logging.WARNING)
    try:
        result = run(args)
    except DriveError as exc:
        fail(PROG, str(exc))
    except KeyboardInterrupt:
        return 130
    if args.json:
        emit_json(result)
    return 0  # a model that misses a lap is a result ("ok": false), not a failure of the run


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> dict:
    from common.gamepad import NoGamepad, open_gamepad
    from common.screen import DEFAULT_REGION, ScreenCapture, ScreenError, parse_region
    from drive.app import create_app
    from drive.guard import Guard
    from drive.pilot import Pilot
    from drive.runner import load_policy
    from drive.server import Server

    if args.sim and args.rom:
        raise DriveError("--sim and --rom are exclusive: drive the simulator or the real game")
    if args.state and not args.rom:
        raise DriveError("--state needs --rom: it is a mupen64plus savestate")
    if args.state and not os.path.isfile(args.state):
        raise DriveError(f"--state {args.state}: no such file (make one: python -m envs.mupen savestate)")
    if args.rom and args.get and not os.environ.get("DISPLAY"):
        raise DriveError("--get makes the server capture the screen: it needs a DISPLAY (or drop --get: "
                         "the plugin then posts its frames)")
    try:
        region = parse_region(args.region) if args.region else DEFAULT_REGION
    except ScreenError as exc:
        raise DriveError(f"--region: {exc}") from exc
    try:
        guard = Guard(args.host, args.token, args.allow_host)
    except ValueError as exc:
        raise DriveError(str(exc)) from exc
    policy = load_policy(args.model, args.tf_threads)  # fails here, before anything listens
    try:
        gamepad = open_gamepad(args.gamepad, args.mapping)
    except (NoGamepad, ValueError, OSError) as exc:
        raise DriveError(f"--gamepad {args.gamepad}: {exc}") from exc
    game = args.game or (f"kartsim:{args.track}" if args.sim else os.path.basename(args.rom or "") or "mupen64plus")
    rate = args.rate or (30 if args.sim else 60)
    pilot = Pilot(policy, gamepad=gamepad, human_port=args.human_port, mode=args.mode,
                  sessions_dir=args.sessions, trim_s=args.trim_ms / 1000.0, model_path=args.model,
                  meta={"game": game, "rate_hz": rate, "model": os.path.abspath(args.model),
                        **({"track": args.track} if args.sim else {})})
    if gamepad is not None:
        gamepad.on_mode_button = pilot.cycle_mode
    if args.record:
        pilot.recording.start()
    capture = None
    if os.environ.get("DISPLAY") and not args.sim:
        try:
            capture = ScreenCapture(region)
        except Exception as exc:  # GET polls then answer 503; POST works regardless
            logging.getLogger("drive").warning("screen capture unavailable (%s); GET polls will answer 503", exc)
    app = create_app(pilot, capture, guard)
    profiler = None
    if args.profile:
        from common.profiling import Profiler

        profiler = Profiler()
        app = profiler.wsgi(app)
    try:
        server = Server(app, args.host, args.port, args.threads)
    except OSError as exc:
        raise DriveError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    # TensorFlow and the model leave ~10^6 long-lived objects: freeze them out of the cyclic
    # collector, so a full collection mid-poll walks only what requests allocate (p99 latency)
    gc.freeze()
    from common.memory import keep_freed_memory

    # frame-sized buffers stay mapped between polls: no page faults per poll, whatever TensorFlow
    # happened to allocate first (common.memory; the HTTP floor server showed ~120 faults per poll)
    keep_freed_memory()
    print(f"drive: serving {args.model} on {server.url} (dashboard {server.url}/), mode {pilot.mode}, "
          f"gamepad {'none' if gamepad is None else gamepad.name}", file=sys.stderr, flush=True)
    result: dict = {"url": server.url, "model": args.model}
    started = time.monotonic()
    try:
        if args.sim:
            result.update(_run_sim(args, server))
        elif args.rom:
            result.update(_run_rom(args, server))
        else:
            if args.seconds:
                server.start()
                time.sleep(args.seconds)
            else:
                with contextlib.suppress(KeyboardInterrupt):
                    server.serve_forever()
    finally:
        server.close()
        if gamepad is not None:
            gamepad.stop()
        if capture is not None:
            capture.close()
        result["sessions"] = pilot.close()
        state = pilot.state()
        result["server"] = {k: state[k] for k in ("requests", "errors", "per_controller", "req_per_s", "latency_ms")}
        result["ports"] = state["ports"]
        result["seconds"] = round(time.monotonic() - started, 1)
        if profiler is not None:
            _write_profile(profiler, args.profile, result)
    return result


def _write_profile(profiler, path: str, result: dict) -> None:
    from common.profiling import format_top

    try:
        profiler.dump(path)
    except OSError as exc:  # the run's own results still come out
        logging.getLogger("drive").error("--profile %s: cannot write: %s", path, exc)
        result["profile"] = {"file": None, "error": str(exc)}
        return
    rows = profiler.top()
    print(format_top(rows, f"drive: profile of {profiler.calls} requests -> {path} (ms per request)"),
          file=sys.stderr, flush=True)
    result["profile"] = {"file": path, "requests": profiler.calls, "top": rows}


def _run_sim(args, server) -> dict:
    """The simulator runs as its own process (python -m drive.simclient), posting to this server."""
    import subprocess

    server.start()
    cmd = [sys.executable, "-m", "drive.simclient", "--host", server.host, "--port", str(server.port),
           "--track", args.track, "--laps", str(args.laps), "--controller", str(args.human_port),
           "--size", format_size(args.sim_size), "--seed", str(args.seed), "--json"]
    if args.max_seconds is not None:
        cmd += ["--max-seconds", str(args.max_seconds)]
    if args.headless:
        cmd.append("--headless")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise DriveError(f"simulator client failed (exit {proc.returncode}); see its message above")
    res = json.loads(lines[-1])
    for i, t in enumerate(res["lap_times"], 1):
        print(f"lap {i}: {t:.2f} s")
    print(f"{res['laps_completed']}/{res['laps']} laps on {res['track']}, falls {res['falls']}, "
          f"poll p50 {res['client_p50_ms']:.2f} ms p99 {res['client_p99_ms']:.2f} ms")
    res["ok"] = res["laps_completed"] >= res["laps"]
    return res


def _run_rom(args, server) -> dict:
    from drive.emulator import mupen_command, run_emulator

    fh, fw = args.frame_size
    cmd = mupen_command(args.rom, server.port, server.host, post_frames=not args.get, plugin=args.plugin,
                        frame_size=(fw, fh), load_state=args.state and os.path.abspath(args.state),
                        extra=tuple(args.mupen_arg))
    server.start()
    display = os.environ.get("DISPLAY")
    xvfb = None
    if not display:
        from common.xvfb import Xvfb, XvfbError

        try:
            xvfb = Xvfb((480, 640))
        except XvfbError as exc:
            raise DriveError(str(exc)) from exc
        display = xvfb.display
        print(f"drive: no DISPLAY, running mupen64plus headless on Xvfb {display}", file=sys.stderr)
    try:
        print("drive: " + " ".join(cmd), file=sys.stderr, flush=True)
        return run_emulator(cmd, display, args.seconds)
    finally:
        if xvfb is not None:
            xvfb.close()


if __name__ == "__main__":
    sys.exit(main())
