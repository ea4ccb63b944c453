"""python -m train.finetune: PPO fine-tuning of a cloned PilotNet over N environments.

Example:
    python -m train.finetune --model data/models/pilotnet.keras --track rainbow --frames 2000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    from train.finetune import ppo
    from train.finetune.envs import RewardShaping
    from train.finetune.trainer import Config

    d, dp, ds = Config(), ppo.PPOConfig(), RewardShaping()
    p = argparse.ArgumentParser(
        prog="python -m train.finetune",
        description="Fine-tune a cloned PilotNet with PPO over N parallel environments (frames are game "
        "frames, 30 per game second). Writes eval.csv, train.csv, TensorBoard logs, checkpoints, "
        "best.keras and curve.png under --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--model", default=d.model, help="cloned PilotNet .keras (from python -m train)")
    g.add_argument("--track", default=d.track, help="training track (kartsim name or track JSON)")
    g.add_argument("--eval-tracks", default=None,
                   help="comma-separated evaluation tracks (default: the training track and twisty, held out)")
    g.add_argument("--env", default=d.env, help="environment backend (kartsim; others register in envs.py)")
    g.add_argument("--frames", type=int, default=d.frames, help="training budget in game frames, all envs")
    g.add_argument("--envs", type=int, default=d.envs, help="parallel environments")
    g.add_argument("--action-repeat", type=int, default=d.action_repeat, help="game frames per decision")
    g.add_argument("--out", default=d.out, help="run directory")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--resume", action="store_true", help="continue from OUT/ckpt/state.pkl")
    g.add_argument("--dashboard", type=int, default=None, metavar="PORT",
                   help="serve the live dashboard on 127.0.0.1:PORT (0 = any free port)")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("policy")
    g.add_argument("--frame-stack", type=int, default=d.frame_stack,
                   help="features of the last k frames (temporal option; 1 = the cloned model as is)")
    g.add_argument("--init-log-std", type=float, default=d.init_log_std, help="steering log-std at start")
    g = p.add_argument_group("PPO")
    g.add_argument("--rollout", type=int, default=d.rollout, help="decisions per env per update")
    g.add_argument("--epochs", type=int, default=dp.epochs)
    g.add_argument("--minibatch", type=int, default=dp.minibatch)
    g.add_argument("--lr", type=float, default=dp.lr, help="actor learning rate (annealed linearly to 0)")
    g.add_argument("--critic-lr", type=float, default=dp.critic_lr)
    g.add_argument("--gamma", type=float, default=dp.gamma)
    g.add_argument("--lam", type=float, default=dp.lam, help="GAE lambda")
    g.add_argument("--clip", type=float, default=dp.clip)
    g.add_argument("--vf-coef", type=float, default=dp.vf_coef)
    g.add_argument("--ent-coef", type=float, default=dp.ent_coef)
    g.add_argument("--max-grad-norm", type=float, default=dp.max_grad_norm)
    g.add_argument("--warmup-frames", type=int, default=d.warmup_frames,
                   help="frames of frozen-cloned rollouts that train only the critic")
    g.add_argument("--kl-coef", type=float, default=d.kl_coef, help="KL(pi || cloned) weight after warm-up")
    g.add_argument("--kl-final", type=float, default=d.kl_final, help="KL weight at the end of the decay")
    g.add_argument("--kl-decay-frames", type=int, default=d.kl_decay_frames)
    g.add_argument("--no-reward-scaling", action="store_true", help="use raw rewards as value targets")
    g = p.add_argument_group("reward shaping (see train/finetune/envs.py RewardShaping)")
    g.add_argument("--r-progress", type=float, default=ds.progress, help="progress weight (1 lap = 100 x weight)")
    g.add_argument("--r-speed", type=float, default=ds.speed, help="per frame x speed / top speed")
    g.add_argument("--r-boost", type=float, default=ds.boost, help="per frame while a mini-turbo boost runs")
    g.add_argument("--r-fall", type=float, default=ds.fall, help="once per fall off the track (negative)")
    g.add_argument("--r-offroad", type=float, default=ds.offroad, help="per frame off-road (negative)")
    g.add_argument("--r-drift-abort", type=float, default=ds.drift_abort,
                   help="per drift released before its mini-turbo charged, x the charge missing (negative)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="updates between evaluations")
    g.add_argument("--eval-laps", type=int, default=d.eval_laps, help="deterministic laps per evaluation")
    g.add_argument("--eval-max-s", type=float, default=d.eval_max_s,
                   help="game-second cap per evaluation (default: 10 + 2.5 x lower bound x laps)")
    g.add_argument("--eval-envs", type=int, default=d.eval_envs, help="evaluation envs per track (start jitter)")
    return p.parse_args(argv)


def config_from(args):
    """argparse namespace -> trainer Config (imports lazily so --help stays fast)."""
    from train.finetune import ppo
    from train.finetune.envs import RewardShaping
    from train.finetune.trainer import Config

    tracks = tuple(args.eval_tracks.split(",")) if args.eval_tracks else tuple(dict.fromkeys((args.track, "twisty")))
    return Config(
        model=args.model, track=args.track, eval_tracks=tracks, env=args.env, frames=args.frames,
        envs=args.envs, action_repeat=args.action_repeat, rollout=args.rollout,
        warmup_frames=args.warmup_frames, frame_stack=args.frame_stack, init_log_std=args.init_log_std,
        kl_coef=args.kl_coef, kl_final=args.kl_final, kl_decay_frames=args.kl_decay_frames,
        scale_rewards=not args.no_reward_scaling, eval_every=args.eval_every, eval_laps=args.eval_laps,
        eval_max_s=args.eval_max_s, eval_envs=args.eval_envs, out=args.out, seed=args.seed, resume=args.resume,
        tensorboard=not args.no_tensorboard,
        ppo=ppo.PPOConfig(gamma=args.gamma, lam=args.lam, clip=args.clip, epochs=args.epochs,
                          minibatch=args.minibatch, vf_coef=args.vf_coef, ent_coef=args.ent_coef,
                          max_grad_norm=args.max_grad_norm, lr=args.lr, critic_lr=args.critic_lr),
        shaping=RewardShaping(progress=args.r_progress, speed=args.r_speed, boost=args.r_boost,
                              fall=args.r_fall, offroad=args.r_offroad, drift_abort=args.r_drift_abort),
    )


def format_table(summary: dict) -> str:
    """The expert / cloned / fine-tuned / lower-bound table (demo and terminal output)."""
    fmt = lambda v: f"{v:8.2f} s" if isinstance(v, (int, float)) else f"{'-':>10}"  # noqa: E731
    mts = summary.get("mini_turbos") or {}
    rows = [("scripted expert", summary["expert_best_lap_s"], mts.get("expert")),
            ("cloned (BC)", summary["bc_best_lap_s"], mts.get("cloned")),
            ("fine-tuned (PPO)", summary["rl_best_lap_s"], mts.get("fine_tuned")),
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
    from train.finetune.plot import plot_curves
    from train.finetune.trainer import Trainer, write_summary

    cfg = config_from(args)
    dash = None
    if args.dashboard is not None:
        from train.finetune.dashboard import Dashboard

        dash = Dashboard(port=args.dashboard).start()
        print(f"dashboard: {dash.url}", file=sys.stderr)
    try:
        trainer = Trainer(cfg, on_step=dash.on_step if dash else None, on_eval=dash.on_eval if dash else None)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
        print(json.dumps(summary))
    else:
        print(format_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
