"""python -m train.finetune: PPO fine-tuning of a cloned PilotNet over N environments.

Examples:
    python -m train.finetune --model data/models/pilotnet.keras --track rainbow --frames 2000000 --json
    python -m train.finetune --env mk64 --rom mk64.z64 --state tt.st0 --envs 8 --out data/finetune/mk64
    python -m train.finetune --env mupen-test --rom m64p_test_rom.v64 --envs 2 --ray local

Every setting is a field of ``train.finetune.settings.Config``; the options are generated from it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from common.cli import add_json, describe, emit_json, fail
from common.defaults import MODEL

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROG = "python -m train.finetune"


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one option per ``settings.Config`` field (help from the field), plus output switches."""
    from envs.kartsim.kart import FPS
    from train.finetune.settings import add_arguments

    p = argparse.ArgumentParser(
        prog=PROG,
        description=f"Fine-tune a cloned PilotNet with PPO over N parallel environments (frames are game "
        f"frames, {FPS} per game second). Writes eval.csv, train.csv, TensorBoard logs, checkpoints "
        "(ckpt/state.npz), best.keras and curve.png under --out. --env picks the simulator or the real "
        "emulator; --ray runs the training envs as Ray actors on this machine or a cluster.",
        epilog="examples:\n"
        f"  python -m train.finetune --model {MODEL} --track rainbow --json\n"
        "  python -m train.finetune --env mk64 --rom mk64.z64 --state tt.st0 --envs 8\n"
        "  python -m train.finetune --env mupen-test --rom m64p_test_rom.v64 --envs 2\n"
        "  python -m train.finetune --ray auto --envs 48 --ray-actors 4",
        formatter_class=_Formatter,
    )
    add_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--dashboard", type=int, default=None, metavar="PORT",
                   help="serve the live dashboard on 127.0.0.1:PORT (0 = any free port)")
    add_json(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):  # a switch's "default: False" or "default: None" says nothing
        if action.nargs == 0 or action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def config_from(args):
    """argparse namespace -> trainer Config (generated from the same fields)."""
    from train.finetune.settings import config_from_args

    cfg = config_from_args(args)
    for key in ("rom", "state"):  # paths travel to Ray actors and emulator processes: make them absolute
        if getattr(cfg, key):
            setattr(cfg, key, os.path.abspath(getattr(cfg, key)))
    return cfg


def format_table(summary: dict) -> str:
    """The expert / cloned / fine-tuned / lower-bound table (demo and terminal output)."""
    fmt = lambda v: f"{v:8.2f} s" if isinstance(v, (int, float)) else f"{'-':>10}"  # noqa: E731
    mts = summary.get("mini_turbos") or {}
    rows = [("scripted expert", summary["expert_best_lap_s"], mts.get("expert")),
            ("cloned (BC)", summary["bc_best_lap_s"], mts.get("cloned")),
            ("fine-tuned (PPO)", summary["rl_best_lap_s"], mts.get("fine_tuned")),
            ("planner", summary.get("planned_lap_s"), None),
            ("lower bound", summary["lower_bound_s"], None)]
    lines = [f"best lap on {summary['track']}:"] + [
        f"  {name:<18}{fmt(v)}" + (f"   {n} mini-turbos in {mts.get('laps')} laps" if n is not None else "")
        for name, v, n in rows]
    fps, dps = summary["frames_per_s"] or 0.0, summary["decisions_per_s"] or 0.0
    lines.append(f"  {summary['frames']} game frames, {fps:.0f} frames/s, {dps:.0f} decisions/s, "
                 f"falls in the last evaluation: {summary['falls']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from(args)
    except ValueError as exc:  # a setting out of range (--actor-ema 1.0), an evaluation set with an empty name
        fail(PROG, describe(exc))
    if not os.path.exists(cfg.model):  # before TensorFlow loads: a typo fails at once
        fail(PROG, f"model file not found: {cfg.model} (train one with `make train`, or pass --model)")
    from train.finetune.plot import plot_curves
    from train.finetune.trainer import Trainer, write_summary

    dash = None
    if args.dashboard is not None:
        from train.finetune.dashboard import Dashboard

        dash = Dashboard(port=args.dashboard).start()
        print(f"dashboard: {dash.url}", file=sys.stderr)
    try:
        trainer = Trainer(cfg, on_step=dash.on_step if dash else None, on_eval=dash.on_eval if dash else None)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        if dash:
            dash.stop()
        fail(PROG, describe(exc))
    def stop(signum, frame):  # Ctrl-C / kill: finish this update, checkpoint, then summarise
        trainer.stop_requested = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if dash:
            dash.attach(trainer)
        summary = trainer.run(progress=not args.quiet)
    finally:
        trainer.close()
        if dash:
            dash.stop()
    summary["curve_png"] = plot_curves(trainer, os.path.join(cfg.out, "curve.png"))
    write_summary(os.path.join(cfg.out, "summary.json"), summary)
    if args.json:
        emit_json(summary)
    else:
        print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
