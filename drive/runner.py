"""Policy glue: load the model once, refuse a missing or mismatched one at start.

Inference itself is train.policy.Policy (compiled once, warmed, thread-safe).
Here only the process-wide TensorFlow thread setting: one intra-op thread per
call answers a single 66x200 frame faster on a busy 2-core machine than two
threads that wait for each other (see bench/drive.py), and leaves the other
core to the HTTP side.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class DriveError(RuntimeError):
    """A start-up problem the CLI reports as one clear line (no traceback)."""


def configure_tf(intra_threads: int = 1, inter_threads: int = 2) -> bool:
    """Set TF's thread pools; only possible before TF runs its first op (else False)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_threads)
        return True
    except RuntimeError:  # TF already initialised in this process (tests): keep its pools
        return False


def load_policy(path: str | os.PathLike, intra_threads: int = 1):
    """``train.policy.Policy`` for the ``.keras`` model at ``path``, or DriveError saying why not."""
    from common.frames import TransformMismatch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DriveError(f"model file not found: {path} (train one with `make train`, or pass --model)")
    configure_tf(intra_threads)
    from train.policy import Policy

    try:
        policy = Policy(path)
    except FileNotFoundError as exc:
        raise DriveError(str(exc)) from exc
    except TransformMismatch as exc:
        raise DriveError(f"refusing model {path}: {exc}") from exc
    except ValueError as exc:  # not a .keras file, or a model that is not PilotNet-shaped
        raise DriveError(f"cannot use model {path}: {exc}") from exc
    if policy.needs_state:
        raise DriveError(f"refusing model {path}: it takes kart state features beside each frame "
                         "(trained with `train demos --state`), and the plugin's polls carry frames only; "
                         "such a model drives in kartsim (train evaluate, train.finetune), not here yet")
    return policy
