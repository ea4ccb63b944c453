"""A fine-tuning run's files: the resumable state as npz + JSON (never a pickle), and its run folder.

``save_state(path, tree)`` writes a tree of dicts (string keys), lists,
tuples, numbers, strings, None, numpy arrays and numpy ``Generator`` objects
to one ``.npz``: the arrays as numeric npz members, everything else as one
JSON document (member ``__tree__``) that names them. The file is replaced
atomically (``common.atomic``). ``load_state`` reads it with
``allow_pickle=False``: loading a checkpoint runs no code from it, so a run
folder received from someone else is safe to resume. A pickled
``state.pkl`` (older KartPilot) is refused, not loaded.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from common import atomic

STATE = os.path.join("ckpt", "state.npz")
PICKLED = os.path.join("ckpt", "state.pkl")  # older KartPilot: refused
FORMAT = "kartpilot-finetune-state/1"
# numpy bit generators a checkpoint may name (a Generator is rebuilt from its name and state)
_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}


class CheckpointError(ValueError):
    """A checkpoint that cannot (or must not) be loaded; the message names the file."""


def _encode(obj, arrays: dict):
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be saved without pickle")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.random.Generator):
        return {"__rng__": _encode(obj.bit_generator.state, arrays)}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) and not k.startswith("__") for k in obj):
            raise TypeError(f"checkpoint dict keys must be plain strings, got {list(obj)[:5]}")
        return {k: _encode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save {type(obj).__name__} in a checkpoint")


def _decode(node, arrays, path: str):
    if isinstance(node, list):
        return [_decode(v, arrays, path) for v in node]
    if not isinstance(node, dict):
        return node
    if "__array__" in node:
        key = node["__array__"]
        if key not in arrays:
            raise CheckpointError(f"{path}: names an array {key!r} it does not hold")
        return arrays[key]
    if "__tuple__" in node:
        return tuple(_decode(v, arrays, path) for v in node["__tuple__"])
    if "__rng__" in node:
        state = _decode(node["__rng__"], arrays, path)
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if name not in _BIT_GENERATORS:
            raise CheckpointError(f"{path}: unknown random generator {name!r}")
        bg = _BIT_GENERATORS[name]()
        bg.state = state
        return np.random.Generator(bg)
    return {k: _decode(v, arrays, path) for k, v in node.items()}


def save_state(path: str, tree: dict) -> str:
    """Write ``tree`` to ``path`` (.npz) atomically."""
    arrays: dict[str, np.ndarray] = {}
    doc = json.dumps({"format": FORMAT, "tree": _encode(tree, arrays)})
    with atomic.replacing(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, __tree__=np.frombuffer(doc.encode("utf-8"), np.uint8), **arrays)
    return path


def load_state(path: str) -> dict:
    """Read a ``save_state`` file without unpickling anything; CheckpointError names what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable fine-tuning checkpoint ({exc})") from exc
    raw = members.pop("__tree__", None)
    try:
        doc = json.loads(bytes(raw).decode("utf-8")) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its JSON part is corrupt ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    return _decode(doc["tree"], members, path)


def state_path(out: str) -> str:
    return os.path.join(out, STATE)


def previous_run(out: str) -> list[str]:
    """The files in ``out`` that a fresh run would replace: another run's checkpoint and best model."""
    names = (STATE, PICKLED, "best.keras", "best.weights.npz")
    return [os.path.join(out, n) for n in names if os.path.exists(os.path.join(out, n))]


def check_out(out: str, resume: bool) -> None:
    """A fresh run never replaces another run's checkpoint or best model; a resume needs an npz checkpoint.

    Raises FileExistsError (fresh run into a used folder), FileNotFoundError (nothing to resume) or
    CheckpointError (a pickled checkpoint: refused, since loading it could run code)."""
    pickled = os.path.join(out, PICKLED)
    if resume:
        if os.path.exists(state_path(out)):
            return
        if os.path.exists(pickled):
            raise CheckpointError(
                f"--resume: {pickled} is a pickle (an older KartPilot's checkpoint); loading a pickle can run "
                "code from whoever wrote it, so it is refused. Start a new run with another --out.")
        raise FileNotFoundError(f"--resume: no checkpoint at {state_path(out)}")
    found = previous_run(out)
    if found:
        raise FileExistsError(
            f"--out {out} already holds a fine-tuning run ({', '.join(os.path.relpath(p, out) for p in found)}); "
            "a fresh run would replace its checkpoint and best model. Continue it with --resume, or pick a "
            "new --out.")


def export_actor(net, path: str) -> str:
    """The tuned actor as a plain PilotNet ``.keras`` that drive and evaluate load (atomic, via
    ``train.model.save_model``); a frame-stacked actor does not fit drive's single-frame PilotNet,
    so its weights go to ``NAME.weights.npz`` instead."""
    if net.frame_stack == 1:
        return net.export_pilotnet(path)
    return save_state(path[: -len(".keras")] + ".weights.npz", net.get_weights())
