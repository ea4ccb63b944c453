"""python -m envs.mupen: check a ROM, make/check a savestate, or run the emulator env.

    python -m envs.mupen check-rom ROM
    python -m envs.mupen savestate --rom ROM --out data/mk64_luigi.st         # interactive
    python -m envs.mupen savestate --rom ROM --out S.st --after-frames 120    # headless
    python -m envs.mupen state-info --rom ROM --state S.st
    python -m envs.mupen telemetry --rom ROM --state S.st                    # drive, watch the profile live
    python -m envs.mupen run --rom ROM [--state S] --envs 2 --steps 300 --json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common.cli import add_command, add_json, emit, reported


def _profile(name):
    from envs.mupen.profiles import get_profile

    return get_profile(name) if name else None


def cmd_check(args) -> dict:
    from envs.mupen.profiles import profile_for_rom
    from envs.mupen.rom import read_header

    head = read_header(args.rom)
    prof = _profile(args.profile) or profile_for_rom(args.rom)
    prof.check_rom(args.rom)
    return {"rom": str(args.rom), "name": head.name, "crc": head.crc, "byte_order": head.byte_order,
            "profile": prof.name}


def cmd_savestate(args) -> dict:
    from envs.mupen import savestate

    if args.after_frames is not None:
        out = savestate.save_headless(args.rom, args.out, args.after_frames, _profile(args.profile))
    else:
        _profile(args.profile) and _profile(args.profile).check_rom(args.rom)
        out = savestate.save_interactive(args.rom, args.out)
    return {"state": str(out), "bytes": out.stat().st_size,
            "reads": savestate.describe_state(args.rom, out, _profile(args.profile))}


def cmd_state_info(args) -> dict:
    from envs.mupen import savestate

    return savestate.describe_state(args.rom, args.state, _profile(args.profile))


def cmd_telemetry(args) -> dict:
    from envs.mupen import telemetry

    driver = args.driver or ("keyboard" if os.environ.get("DISPLAY") else "throttle")
    if driver != "keyboard" and args.seconds is None and args.steps is None:
        args.seconds = 30.0
    return telemetry.run(args.rom, state=args.state, profile=_profile(args.profile), driver=driver,
                         seconds=args.seconds, steps=args.steps, every=args.every, rate=args.rate,
                         action_repeat=args.action_repeat, out=sys.stderr if args.json else sys.stdout)


def cmd_run(args) -> dict:
    from envs.mupen.vector import VecMupen

    vec = VecMupen(args.envs, rom=args.rom, state=args.state, profile=args.profile, action_repeat=args.action_repeat)
    rng = np.random.default_rng(0)
    try:
        t0 = time.perf_counter()
        vec.reset(seed=0)
        boot_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = np.zeros(args.envs)
        for _ in range(args.steps):
            act = np.zeros((args.envs, 5), np.float32) if args.neutral else rng.uniform(-1, 1, (args.envs, 5))
            act[:, 2] = 1.0  # hold A
            _, reward, _, _, info = vec.step(np.clip(act, [-1, -1, 0, 0, 0], 1).astype(np.float32))
            total += reward
        dt = time.perf_counter() - t0
    finally:
        vec.close()
    steps = args.steps * args.envs
    return {"envs": args.envs, "steps": steps, "frames": steps * args.action_repeat, "boot_s": round(boot_s, 2),
            "steps_per_s": round(steps / dt, 1), "frames_per_s": round(steps * args.action_repeat / dt, 1),
            "return_mean": float(total.mean()), "restarts": vec.restarts}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m envs.mupen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("--profile", choices=["mk64", "test"], help="game profile (default: from the ROM header)")
        add_json(p)

    p = add_command(sub, "check-rom", cmd_check,
                    help="read the ROM header and check it against a game profile")
    p.add_argument("rom")
    common(p)

    p = add_command(sub, "savestate", cmd_savestate,
                    help="make the reset savestate (interactive, or headless with --after-frames)")
    p.add_argument("--rom", required=True)
    p.add_argument("--out", required=True, help="where to write the state file")
    p.add_argument("--after-frames", type=int, help="headless: save after this many polls of neutral input")
    common(p)

    p = add_command(sub, "state-info", cmd_state_info,
                    help="boot a savestate headless and print what the profile reads")
    p.add_argument("--rom", required=True)
    p.add_argument("--state", required=True)
    common(p)

    p = add_command(sub, "telemetry", cmd_telemetry,
                    help="drive from a savestate and print what the profile reads, live",
                    description="Drive the game from a savestate and print what the game profile reads "
                    "(MK64: lap, progress, speed, surface, drift, mini-turbos, falls) a few times a second.")
    p.add_argument("--rom", required=True)
    p.add_argument("--state", help="savestate to start from (default: boot the ROM)")
    p.add_argument("--driver", choices=["keyboard", "throttle", "neutral"],
                   help="keyboard: a window on your display, arrows/WASD steer, Z/Space = A, X = B, C/Shift = R, "
                   "Esc quits (default with a DISPLAY); throttle: A held, stick centred (default headless); "
                   "neutral: nothing pressed")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until Esc with the keyboard, "
                   "else 30)")
    p.add_argument("--steps", type=int, help="stop after this many steps")
    p.add_argument("--every", type=int, default=15, help="steps between two printed lines (default %(default)s)")
    p.add_argument("--rate", type=float, help="at most this many polls per second (default: 60 with the keyboard, "
                   "else as fast as the emulator runs)")
    p.add_argument("--action-repeat", type=int, default=1, help="polls (game frames) per step (default %(default)s)")
    common(p)

    p = add_command(sub, "run", cmd_run, help="run N emulator envs for a while (random steering, A held)")
    p.add_argument("--rom", required=True)
    p.add_argument("--state", help="savestate reset loads (default: none)")
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--steps", type=int, default=300, help="steps per env")
    p.add_argument("--action-repeat", type=int, default=1, help="polls (game frames) per step")
    p.add_argument("--neutral", action="store_true", help="neutral steering instead of random")
    common(p)

    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with reported(args.prog, ValueError, RuntimeError, OSError):  # RomError, EmulatorError, a missing file
        out = args.fn(args)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
