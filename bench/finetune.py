"""Fine-tuning throughput: acting, stepping and learning together, per action repeat.

    python -m bench.finetune [--model M] [--envs 24] [--repeats 1 2 4] [--updates 12] --json
    -> per repeat: frames_per_s, decisions_per_s (medians over PPO updates),
       the per-update split (act, env, learn seconds), and sim_only_frames_per_s

Each repeat runs ``--updates`` real PPO updates (the critic warm-up is skipped,
so the actor learns too) of ``train.finetune``'s Trainer on kartsim's rainbow,
after two unmeasured updates that compile the graphs. The baseline, measured in
the same process, is the simulator alone stepping the same envs with the same
repeat (no model); ``of_sim_only`` is end-to-end over that. Without ``--model``
an untrained PilotNet is used: throughput does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from common.cli import add_json, emit_json, fail

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sim_only(envs: int, repeat: int, decisions: int) -> float:
    from train.finetune.envs import make_backend

    b = make_backend("kartsim", track="rainbow", num_envs=envs, action_repeat=repeat, seed=0)
    try:
        b.reset(seed=0)
        act = np.zeros((envs, 5), np.float32)
        act[:, 2] = 1.0
        for _ in range(3):
            b.step(act)
        t0 = time.perf_counter()
        for _ in range(decisions):
            b.step(act)
        return decisions * envs * repeat / (time.perf_counter() - t0)
    finally:
        b.close()


def bench_repeat(cloned, envs: int, repeat: int, updates: int, rollout: int) -> dict:
    from train.finetune.trainer import Config, Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = Config(envs=envs, action_repeat=repeat, rollout=rollout, warmup_frames=0, frames=10**9,
                     out=out, tensorboard=False, eval_tracks=("rainbow",))
        tr = Trainer(cfg, cloned=cloned)
        try:
            for _ in range(2):  # graph tracing and numba compilation
                tr.train_update()
            rows = [tr.train_update() for _ in range(updates)]
        finally:
            tr.close()
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    e2e = med("frames_per_s")
    base = sim_only(envs, repeat, rollout)
    return {"repeat": repeat, "frames_per_s": round(e2e, 1), "decisions_per_s": round(med("decisions_per_s"), 1),
            "act_s": round(med("act_s"), 3), "env_s": round(med("env_s"), 3), "learn_s": round(med("learn_s"), 3),
            "frames_per_update": rollout * envs * repeat, "sim_only_frames_per_s": round(base, 1),
            "of_sim_only": round(e2e / base, 3)}


def main(argv=None) -> int:
    from train.finetune.trainer import Config

    p = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="cloned PilotNet .keras (default: an untrained PilotNet)")
    p.add_argument("--envs", type=int, default=24, help="parallel kartsim envs")
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4], help="action repeats to measure")
    p.add_argument("--updates", type=int, default=12, help="measured PPO updates per repeat")
    p.add_argument("--rollout", type=int, default=Config().rollout, help="decisions per env per update")
    add_json(p)
    args = p.parse_args(argv)
    if args.model and not os.path.exists(args.model):
        fail(p.prog, f"model file not found: {args.model}")
    from train.model import build_pilotnet, load_model

    cloned = load_model(args.model) if args.model else build_pilotnet()
    out = {"envs": args.envs, "updates": args.updates, "model": args.model or "untrained PilotNet",
           "repeats": [bench_repeat(cloned, args.envs, r, args.updates, args.rollout) for r in args.repeats]}
    for r in out["repeats"]:
        print(f"repeat {r['repeat']}: {r['frames_per_s']:.0f} frames/s, {r['decisions_per_s']:.0f} decisions/s "
              f"(per update: act {r['act_s']} s, env {r['env_s']} s, learn {r['learn_s']} s); "
              f"simulator alone {r['sim_only_frames_per_s']:.0f} frames/s, end-to-end = {r['of_sim_only']:.2f}x")
    if args.json:
        emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
