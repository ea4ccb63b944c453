"""Fine-tuning throughput: acting, stepping and learning together, per action repeat, against its limit.

    python -m bench.finetune [--model M] [--envs 24] [--repeats 1 2 4] [--updates 12] [--profile] --json
    -> per repeat: frames_per_s, decisions_per_s (medians over PPO updates), the per-update
       split (act, env, learn seconds), forward_limit_frames_per_s, learn_limit_frames_per_s,
       of_limit, and sim_only_frames_per_s

Each repeat runs ``--updates`` real PPO updates (the critic warm-up is skipped,
so the actor learns too) of ``train.finetune``'s Trainer on kartsim's rainbow,
after two unmeasured updates that compile the graphs. Measured in the same
process, interleaved with those updates (one of each per round, medians):

* ``forward_limit_frames_per_s``: the policy's acting graph alone (trunk, actor
  head and sampling: ``ActorCritic.acting_graph``) on the same batch of
  ``--envs`` frames, already tensors; in game frames (x repeat) per second;
* ``learn_limit_frames_per_s``: the PPO update alone (``Learner.update``) on one
  stored rollout of the same size;
* ``of_limit``: end-to-end frames/s over the combined limit of both for the same
  frames, ``1 / (1/forward + 1/learn)`` (target at repeat 1: >= 0.7);
* ``act_of_forward``: the forward passes' time over the acting time (1.0 = acting
  costs nothing but its forward passes).

The simulator alone (the same envs and repeat, no model) gives
``sim_only_frames_per_s`` and ``of_sim_only``. ``--profile`` prints a cProfile
summary of one more update (what bounds it). Without ``--model`` an untrained
PilotNet is used: throughput does not depend on the weights.
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


def forward_seconds(net, frames: np.ndarray, calls: int, state=None) -> float:
    """Seconds per call of the acting graph alone (inputs already tensors); ``state``: the kart
    state rows beside ``frames``, for a model cloned with ``--state``."""
    graph, args = net.acting_graph(frames, np.random.default_rng(0), state)
    t0 = time.perf_counter()
    for _ in range(calls):
        graph(*args)
    return (time.perf_counter() - t0) / calls


def learn_seconds(tr, batch: dict) -> float:
    """Seconds of one PPO update (actor and critic) on a stored rollout."""
    t0 = time.perf_counter()
    tr.learner.update(batch, lr_frac=tr.lr_frac(), kl_coef=tr.kl_weight(), actor=True)
    return time.perf_counter() - t0


def profile_update(tr, top: int = 25) -> str:
    """cProfile of one whole update (collect + learn), sorted by total time in each function."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    tr.train_update()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def bench_repeat(cloned, envs: int, repeat: int, updates: int, rollout: int, profile: bool = False) -> dict:
    from train.finetune.trainer import Config, Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = Config(envs=envs, action_repeat=repeat, rollout=rollout, warmup_frames=0, frames=10**9,
                     out=out, tensorboard=False, eval_tracks=("rainbow",))
        tr = Trainer(cfg, cloned=cloned)
        try:
            for _ in range(2):  # graph tracing and numba compilation
                tr.train_update()
            stored = tr.batch_from(tr.collector.collect(rollout))  # the rollout the learn limit replays
            frames = tr.collector.obs.copy()  # a real batch of observations
            state = None if tr.collector.state is None else tr.collector.state.copy()  # and their state rows
            forward_seconds(tr.net, frames, 3, state)
            learn_seconds(tr, stored)
            rows, fwd, learn = [], [], []
            for _ in range(updates):  # interleaved: the machine's load drifts alike for all three
                rows.append(tr.train_update())
                fwd.append(forward_seconds(tr.net, frames, rollout, state))
                learn.append(learn_seconds(tr, stored))
            prof = profile_update(tr) if profile else None
        finally:
            tr.close()
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    e2e = med("frames_per_s")
    frames_per_update = rollout * envs * repeat
    fwd_limit = envs * repeat / statistics.median(fwd)
    learn_limit = frames_per_update / statistics.median(learn)
    combined = 1.0 / (1.0 / fwd_limit + 1.0 / learn_limit)
    base = sim_only(envs, repeat, rollout)
    out = {"repeat": repeat, "frames_per_s": round(e2e, 1), "decisions_per_s": round(med("decisions_per_s"), 1),
           "act_s": round(med("act_s"), 3), "env_s": round(med("env_s"), 3), "learn_s": round(med("learn_s"), 3),
           "frames_per_update": frames_per_update,
           "forward_ms": round(statistics.median(fwd) * 1000, 2),
           "forward_limit_frames_per_s": round(fwd_limit, 1), "learn_limit_frames_per_s": round(learn_limit, 1),
           "limit_frames_per_s": round(combined, 1), "of_limit": round(e2e / combined, 3),
           "act_of_forward": round(rollout * statistics.median(fwd) / med("act_s"), 3),
           "sim_only_frames_per_s": round(base, 1), "of_sim_only": round(e2e / base, 3)}
    if prof is not None:
        out["profile"] = prof
    return out


def main(argv=None) -> int:
    from train.finetune.settings import Config  # no TensorFlow: --help stays fast

    p = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="cloned PilotNet .keras (default: an untrained PilotNet)")
    p.add_argument("--envs", type=int, default=24, help="parallel kartsim envs")
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4], help="action repeats to measure")
    p.add_argument("--updates", type=int, default=12, help="measured PPO updates per repeat")
    p.add_argument("--rollout", type=int, default=Config().rollout, help="decisions per env per update")
    p.add_argument("--profile", action="store_true", help="print a cProfile summary of one more update per repeat")
    add_json(p)
    args = p.parse_args(argv)
    if args.model and not os.path.exists(args.model):
        fail(p.prog, f"model file not found: {args.model}")
    for name in ("envs", "updates", "rollout"):
        if getattr(args, name) < 1:
            fail(p.prog, f"--{name} must be >= 1")
    from common.machine import machine_info, machine_line
    from train.model import build_pilotnet, load_model

    print(machine_line(), flush=True)
    cloned = load_model(args.model) if args.model else build_pilotnet()
    out = {"bench": "finetune", "machine": machine_info(), "envs": args.envs, "updates": args.updates,
           "model": args.model or "untrained PilotNet",
           "repeats": [bench_repeat(cloned, args.envs, r, args.updates, args.rollout, args.profile)
                       for r in args.repeats]}
    for r in out["repeats"]:
        print(f"repeat {r['repeat']}: {r['frames_per_s']:.0f} frames/s, {r['decisions_per_s']:.0f} decisions/s "
              f"(per update: act {r['act_s']} s, env {r['env_s']} s, learn {r['learn_s']} s); "
              f"limit {r['limit_frames_per_s']:.0f} frames/s (forward alone {r['forward_limit_frames_per_s']:.0f}, "
              f"learn alone {r['learn_limit_frames_per_s']:.0f}): of_limit {r['of_limit']:.2f}, acting = "
              f"{r['act_of_forward']:.2f}x forward passes; simulator alone {r['sim_only_frames_per_s']:.0f} "
              f"frames/s, end-to-end = {r['of_sim_only']:.2f}x")
        if "profile" in r:
            print(f"--- cProfile of one update at repeat {r['repeat']} (by own time) ---")
            print(r.pop("profile"))
    if args.json:
        emit_json(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
