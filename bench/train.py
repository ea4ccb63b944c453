"""Training throughput: the real input pipeline vs the same model on in-memory tensors.

    python -m bench.train [--data DIR] [--steps 40] [--batch-size 64] --json
    -> pipeline_samples_per_s, memory_samples_per_s, ratio (target >= 0.9)

pipeline: ``train.data.make_dataset`` over memory-mapped ``.npy`` files on disk
(shuffle, gather, flip + brightness augmentation, prefetch), as ``python -m train``
uses it. memory: one batch already in memory as tensors, repeated, no
augmentation: what the model alone can do on this machine. Both fit the same
compiled PilotNet through ``model.fit`` for the same number of steps after a
warm-up; rounds alternate and the best of each is kept (shared CPUs are noisy).
Without ``--data`` a random dataset is written to a temp dir first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common.cli import add_json, emit, reported

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _synthetic(dir_: str, n: int) -> str:
    import numpy as np

    from dataset.arrays import write_arrays

    rng = np.random.default_rng(0)
    fr = rng.integers(0, 256, (n, 66, 200, 3), dtype=np.uint8)
    ac = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    ac[:, 2:] = (ac[:, 2:] > 0).astype(np.float32)
    nv = max(64, n // 8)
    return write_arrays(dir_, {"train": (fr, ac), "val": (fr[:nv], ac[:nv])})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="prepared arrays dir (default: a random one in a temp dir)")
    p.add_argument("--samples", type=int, default=4096, help="size of the random dataset (default: %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="timed batches per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    add_json(p)
    args = p.parse_args(argv)

    from common.machine import machine_info, machine_line

    print(machine_line(), flush=True)
    import tensorflow as tf

    from train import data as tdata
    from train.fit import compile_model
    from train.model import build_pilotnet

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data_dir = args.data or _synthetic(tmp, args.samples)
        with reported(p.prog):  # --data: not a prepared-data folder
            src = tdata.Source([tdata.load_split(data_dir, "train")])
        pipe_ds, _ = tdata.make_dataset(src, args.batch_size, training=True)
        xb, yb = src.gather(tf.range(args.batch_size, dtype=tf.int64).numpy())
        mem_ds = tf.data.Dataset.from_tensors((tf.constant(xb), tf.constant(yb))).repeat()

        model = compile_model(build_pilotnet(0.2), 1e-4)
        modes = {"pipeline": pipe_ds, "memory": mem_ds}
        for ds in modes.values():  # warm-up: tracing, pipeline buffers, page cache
            model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)
        # CPU cost of the pipeline alone (no model) vs one training step: the share of the
        # machine the loader takes from the model, independent of other load on the box
        it = iter(pipe_ds)
        next(it)
        c0 = time.process_time()
        for _ in range(args.steps):
            next(it)
        pipe_cpu_ms = (time.process_time() - c0) / args.steps * 1000
        c0 = time.process_time()
        model.fit(mem_ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
        step_cpu_ms = (time.process_time() - c0) / args.steps * 1000
        best = dict.fromkeys(modes, 0.0)
        for _ in range(args.rounds):
            for name, ds in modes.items():
                t0 = time.perf_counter()
                model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
                rate = args.steps * args.batch_size / (time.perf_counter() - t0)
                best[name] = max(best[name], rate)
    result = {
        "bench": "train", "machine": machine_info(),
        "pipeline_samples_per_s": round(best["pipeline"], 1),
        "memory_samples_per_s": round(best["memory"], 1),
        "ratio": round(best["pipeline"] / best["memory"], 3),
        "pipeline_cpu_ms_per_batch": round(pipe_cpu_ms, 2),
        "train_step_cpu_ms_per_batch": round(step_cpu_ms, 1),
        "cpu_overhead": round(pipe_cpu_ms / step_cpu_ms, 4),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "data": args.data or f"random {args.samples} samples (temp dir)",
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
