"""``python -m train``: behavioral cloning CLI.

    python -m train --data DIR --out MODEL.keras [--epochs N] [--json]      train
    python -m train evaluate --model MODEL --track T --laps N [--json]      drive it in kartsim
    python -m train demos --track T --frames N --out DIR [--noise S] [--teacher expert|planner|follower]
                                                                            teacher demos -> arrays
    python -m train dagger --track T --rounds N --out DIR [--json]          DAgger, the planner as oracle
    python -m train demos --gen-tracks K --frames N --out DIR               ... over K generated tracks
"""

from __future__ import annotations

import argparse
import os
import sys

from common.cli import add_command, add_json, emit, int_at_least, reported
from common.defaults import EXPERT_MARGIN, MODEL, SECTORS

PROG = "python -m train"


def build_parser() -> argparse.ArgumentParser:
    """``python -m train [options]`` trains (no command); ``evaluate``, ``demos`` and ``dagger`` are commands."""
    p = argparse.ArgumentParser(
        prog=PROG,
        usage="%(prog)s [--data DIR] [--out MODEL.keras] [options]        (train)\n"
        "       %(prog)s {evaluate,demos,dagger} [options]",
        description="Train PilotNet by behavioral cloning on `dataset prepare` arrays (the options below; "
        "no command needed). The commands do other things: `python -m train COMMAND --help`.",
    )
    p.set_defaults(fn=cmd_train, prog=PROG)
    _train_args(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands (optional)", prog=PROG)
    _evaluate_args(add_command(
        sub, "evaluate", cmd_evaluate, help="drive a model closed-loop in kartsim: laps, lap times, falls, autonomy",
        description="Drive a model closed-loop in kartsim: laps, lap times, falls, autonomy; "
        "writes a GIF of the run and a top-down trace PNG."))
    _demos_args(add_command(
        sub, "demos", cmd_demos, help="a kartsim teacher drives; its frames and labels -> prepared arrays",
        description="Let a kartsim teacher drive and write prepared arrays directly (tests, quick experiments). "
        "The full pipeline is record --source sim -> dataset clean -> dataset prepare."))
    _dagger_args(add_command(
        sub, "dagger", cmd_dagger, help="DAgger with the planner (or the follower) as the oracle",
        description="DAgger with the planner (or the follower) as the oracle: round 0 clones the oracle's demos "
        "(DART noise); each later round lets the latest clone drive, has the oracle label the states it visits, "
        "aggregates the "
        "labels, retrains the clone and evaluates it. Writes OUT/data-rNN/, OUT/clone-rNN.keras, "
        "OUT/dagger.json (lap times and falls per round) and OUT/best.keras, the best round's clone "
        "(completed laps, then fewest falls, then best lap)."))
    return p


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/prepared", metavar="DIR", help="prepared arrays folder (default: %(default)s)")
    p.add_argument("--out", default=MODEL, metavar="MODEL.keras",
                   help="the model file to write, .keras (best validation; default: %(default)s); "
                   "run files go to OUT.run/")
    p.add_argument("--epochs", type=int, default=10, help="max epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout after hidden dense layers (default: %(default)s)")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--brightness", type=float, default=0.2,
                   help="brightness augmentation: scale frames by 1 +- this (0 disables; default: %(default)s)")
    p.add_argument("--no-flip", action="store_true", help="disable horizontal-flip augmentation")
    p.add_argument("--resume", action="store_true", help="continue from OUT.run/last.keras and its CSV log")
    p.add_argument("--corrections", metavar="DIR", help="another prepared dir (drive-time corrections) to mix in")
    p.add_argument("--corrections-weight", type=float, default=4.0, metavar="K",
                   help="oversample corrections K times per epoch (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--seed", type=int, help="random seed (weights, shuffling, augmentation)")
    add_json(p)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=MODEL, metavar="MODEL.keras", help="the model to drive (default: %(default)s)")
    p.add_argument("--expert", action="store_true", help="drive kartsim's scripted expert instead of a model")
    p.add_argument("--track", default="luigi", help="kartsim track name or track JSON (default: %(default)s)")
    p.add_argument("--laps", type=int, default=3, help="(default: %(default)s)")
    p.add_argument("--render", choices=("model", "full"), default="full",
                   help="full: render 240x320 and apply common.frames.to_model_input, the same pixels "
                   "as recorded sessions after prepare; model: render at 66x200 directly (about 2x "
                   "cheaper), as train demos, dagger and the fine-tune do. The two can differ: a rainbow "
                   "DAgger clone lapped 40.07 s at model and 45.93 s with 5 falls at full (README) "
                   "(default: %(default)s)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="game-time limit (default: 60 s per lap + 30 s)")
    p.add_argument("--seed", type=int, default=0, help="kartsim seed (default: %(default)s)")
    p.add_argument("--out", dest="out_dir", metavar="DIR",
                   help="folder for the GIF and the trace (default: next to the model, MODEL.eval-TRACK/)")
    p.add_argument("--no-media", action="store_true", help="skip the GIF and trace PNG")
    p.add_argument("--no-takeover", action="store_true",
                   help="do not let the expert take the wheel after >1 s off-road (still counted as an intervention)")
    p.add_argument("--sectors", type=int_at_least(1), default=SECTORS, metavar="N",
                   help="time the best lap over N equal stretches of the lap (split times) (default: %(default)s)")
    p.add_argument("--against", metavar="MOVIE",
                   help="a kartsim movie of the same track (the planner's race: python -m envs.kartsim plan "
                   "--out MOVIE): compare the best lap's split times with its best lap, and draw splits.png")
    p.add_argument("--starts", type=int_at_least(1), default=1, metavar="N",
                   help="race N times, from the starts of seeds SEED..SEED+N-1 (the start's position and "
                   "heading are jittered), and add each start's laps and the spread of their best laps "
                   "(min, median, worst): one start's best lap is one draw, as the README's fine-tune "
                   "section measures; media and --against are the first start's (default: %(default)s)")
    p.add_argument("--perturb", type=float, default=0.0, metavar="REL",
                   help="also race --draws copies of the model with every weight multiplied by (1 + REL x "
                   "N(0,1)) (draw k seeded k), from the same --starts, and report each draw's laps and falls "
                   "under 'perturbed': at REL 1e-6, a change the size of float round-off, it shows whether "
                   "the laps and falls are the policy's or a draw of round-off (README, fine-tuning) "
                   "(default: off)")
    p.add_argument("--draws", type=int_at_least(1), default=4, metavar="K",
                   help="perturbed copies raced with --perturb (default: %(default)s)")
    add_json(p)


def _planner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner-samples", type=int, default=48,
                   help="planner: candidates per search round (default: %(default)s)")
    p.add_argument("--planner-rounds", type=int, default=2, help="planner: search rounds per label (default: %(default)s)")
    p.add_argument("--planner-margin", type=float, default=0.8,
                   help="planner: how far inside the road edge its line keeps the kart's centre, in track units; a "
                   "wider margin gives a line a clone can imitate without falling off a void track (default: %(default)s)")
    p.add_argument("--planner-edge", type=float, metavar="U",
                   help="planner: penalise candidates that bring the kart centre closer than U units to the road "
                   "edge (default: 1.2 for --teacher follower, else 0: none)")
    p.add_argument("--planner-seed", type=int, metavar="S",
                   help="planner: the seed of its search; the follower drives the race planned as `python -m "
                   "envs.kartsim plan --seed S` does, and seeds plan races of different pace (rainbow, edge 1.2: "
                   "36.90 s with seed 0, 37.80 s with seed 5) (default: --seed)")


def _planner_config(args):
    from envs.kartsim.planner import PlannerConfig

    if args.planner_margin < 0:
        raise ValueError(f"--planner-margin must be >= 0, got {args.planner_margin}")
    edge = args.planner_edge
    if edge is None:
        from envs.kartsim.follow import EDGE

        edge = EDGE if getattr(args, "teacher", "planner") == "follower" else 0.0
    return PlannerConfig(samples=args.planner_samples, rounds=args.planner_rounds, margin=args.planner_margin,
                         edge=edge)


def _demos_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default="luigi", help="(default: %(default)s)")
    p.add_argument("--frames", type=int, default=18000, help="frames at 30 Hz (default: %(default)s = 10 min)")
    p.add_argument("--out", required=True, metavar="DIR", help="the prepared-arrays folder to write")
    p.add_argument("--teacher", choices=("expert", "planner", "follower"), default="expert",
                   help="expert: the scripted expert; planner: the search that finds the fastest lap, replanning "
                   "from every state (about 100x slower per frame than the expert); follower: plans one race "
                   "(with --planner-edge) and drives its line and drift timings closed-loop (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.0,
                   help="DART steering-noise std while labelling with the teacher (default: %(default)s)")
    p.add_argument("--expert-margin", type=float, default=EXPERT_MARGIN, metavar="F",
                   help="the expert teacher's racing line keeps this share of the mean road width from each "
                   "edge (1.2 to 3 units); smaller is a faster teacher closer to the edge. Ratios such as "
                   "bench.generalise's stay measured against the default expert (default: %(default)s)")
    p.add_argument("--expert-void-margin", type=float, metavar="F",
                   help="the same on tracks with no run-off, where leaving the road is a fall: e.g. "
                   "--expert-margin 0.10 --expert-void-margin 0.22 cuts close only where the grass forgives "
                   "(default: --expert-margin)")
    p.add_argument("--render", choices=("model", "full"), default="model",
                   help="model: render at 66x200 directly; full: render 240x320 and apply "
                   "common.frames.to_model_input, as recorded sessions after prepare (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="(default: %(default)s)")
    p.add_argument("--state", action="store_true",
                   help="also keep each frame's kart state features (speed, offset from the centreline, "
                   "heading, drift, charge, hop, boost, position along the lap: common.state); a model "
                   "trained on them sees them beside the frame (kartsim only: drive refuses such a model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gen-tracks", type=int, metavar="K",
                   help="multi-track demos: drive K generated tracks (gen:S for S from --gen-seed on) instead of "
                   "--track, --frames shared out evenly; their seeds stay below the range bench.generalise "
                   "evaluates on")
    p.add_argument("--gen-seed", type=int, default=0, help="first generated-track seed (default: %(default)s)")
    p.add_argument("--gen-style", choices=("mixed", "grass", "void"), default="mixed",
                   help="generated tracks' run-off (default: %(default)s)")
    _planner_args(p)
    add_json(p)


def _demo_tracks(args) -> list[str] | None:
    """The generated training tracks of ``--gen-tracks``, refused if they reach the evaluation seeds."""
    if args.gen_tracks is None:
        return None
    from envs.kartsim.generate import EVAL_SEED_START, track_name

    if args.gen_tracks < 1 or args.gen_seed < 0:
        raise ValueError("--gen-tracks must be >= 1 and --gen-seed >= 0")
    if args.gen_seed + args.gen_tracks > EVAL_SEED_START:
        raise ValueError(f"--gen-seed {args.gen_seed} + --gen-tracks {args.gen_tracks} reaches seed "
                         f"{EVAL_SEED_START}, where bench.generalise's evaluation tracks start: "
                         "training on them would measure nothing")
    return [track_name(args.gen_seed + i, args.gen_style) for i in range(args.gen_tracks)]


def _dagger_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", default="luigi", help="(default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder to write")
    p.add_argument("--rounds", type=int, default=3, help="DAgger rounds after round 0 (default: %(default)s)")
    p.add_argument("--demo-frames", type=int, default=3000, help="round 0: planner demo frames (default: %(default)s)")
    p.add_argument("--frames-per-round", type=int, default=1500,
                   help="frames the clone drives per round (default: %(default)s)")
    p.add_argument("--noise", type=float, default=0.3, help="round 0 DART noise std (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs per round (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--eval-laps", type=int, default=1, help="laps of each round's evaluation (default: %(default)s)")
    p.add_argument("--eval-max-seconds", type=float, default=None,
                   help="game-time limit of each evaluation (default: 60 s per lap + 30 s)")
    p.add_argument("--teacher", choices=("planner", "follower"), default="planner",
                   help="the oracle: planner replans from every state the clone visits; follower drives one "
                   "planned race's line and timings (with --planner-edge), labels at the expert's cost "
                   "(default: %(default)s)")
    p.add_argument("--state", action="store_true",
                   help="the clones see the kart state features beside the frame (common.state; see "
                   "`train demos --state`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="go on after the last round recorded in OUT/dagger.json, up to --rounds (the other "
                   "settings must be that run's)")
    _planner_args(p)
    add_json(p)


def cmd_evaluate(args) -> dict:
    from train.evaluate import evaluate

    return evaluate(None if args.expert else args.model, track=args.track, laps=args.laps, render=args.render,
                    max_seconds=args.max_seconds, seed=args.seed, out_dir=args.out_dir, media=not args.no_media,
                    takeover=not args.no_takeover, progress=True, sectors=args.sectors, against=args.against,
                    starts=args.starts, perturb=args.perturb, draws=args.draws if args.perturb else 0)


def cmd_demos(args) -> dict:
    from envs.kartsim.expert import check_margin_frac
    from train.simdata import expert_dataset

    size = (66, 200) if args.render == "model" else (240, 320)
    result = expert_dataset(args.out, args.track, args.frames, val_fraction=args.val_fraction,
                            size=size, seed=args.seed, noise=args.noise, teacher=args.teacher,
                            tracks=_demo_tracks(args),
                            planner_config=_planner_config(args) if args.teacher != "expert" else None,
                            expert_margin=check_margin_frac(args.expert_margin),
                            expert_void_margin=None if args.expert_void_margin is None
                            else check_margin_frac(args.expert_void_margin), progress=not args.json,
                            state=args.state, planner_seed=args.planner_seed)
    result["out"] = args.out
    return result


def cmd_dagger(args) -> dict:
    from train.dagger import dagger

    return dagger(args.out, args.track, rounds=args.rounds, demo_frames=args.demo_frames,
                  frames_per_round=args.frames_per_round, noise=args.noise, epochs=args.epochs,
                  batch_size=args.batch_size, eval_laps=args.eval_laps, eval_max_seconds=args.eval_max_seconds,
                  seed=args.seed, planner_config=_planner_config(args), progress=not args.json,
                  teacher=args.teacher, state=args.state, planner_seed=args.planner_seed, resume=args.resume)


def cmd_train(args) -> dict:
    from train.fit import train

    return train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                 dropout=args.dropout, patience=args.patience, brightness=args.brightness,
                 flip=not args.no_flip, resume=args.resume, corrections=args.corrections,
                 corrections_weight=args.corrections_weight, plots=not args.no_plots, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with reported(args.prog):  # a missing file; TransformMismatch and bad values are ValueErrors
        result = args.fn(args)
    emit(result if args.json else {k: v for k, v in result.items() if k != "history"}, args.json)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
