"""Fault injection: kill -9 and a full disk at random points of record, prepare, train, finetune.

    python -m bench.faults --json                  # 20 trials per command (about half an hour on 2 cores)
    python -m bench.faults --trials 4 --commands record,prepare

Each trial runs one real command line on tiny inputs, with its output on a small
tmpfs that the suite mounts itself, in a private mount namespace (``unshare -m``;
it needs root, or unprivileged user namespaces). The output location first holds
the *previous good version* (a session next to the new one, an earlier prepared
folder, an earlier model and its run files, an earlier fine-tune run that the
trial resumes). Then one fault, alternating:

* ``kill``: SIGKILL to the command at a random instant between its start and a
  little past the reference run's duration (its child processes are left to
  notice, as after an OOM kill);
* ``full``: the tmpfs is filled so that only a random share (0-110%) of what
  the reference run writes still fits.

``injected`` counts the trials where the fault hit: the command was still
running when killed, or it failed on the full disk. ``damaged`` counts trials
that left any of these (listed under ``problems``):

* a file of the previous version that is gone or changed, unless the command's
  new complete version replaced it (``lost``);
* a file that does not parse as what its name says (``.keras`` zip with its
  config and weights, ``.npy``/``.npz``, ``.json``, ``.csv`` with whole rows,
  ``.png``, ``.pkl``): a torn file;
* a session whose rows and images disagree (an orphan row, an image that does
  not decode), or a prepared folder that is neither the old one nor exactly the
  reference run's new one;
* inputs (the sessions, the prepared data, the model) changed;
* after a full disk only (the command survived it and could clean up): temp
  files or images without a row left behind.

After a kill, temp files and images without a row cannot be cleaned up by the
dead process; they are counted as ``leftover_after_kill``, not as damage. With
``--keep DIR`` the damaged trials' trees are copied there for inspection.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np

from common import cli
from common.cli import add_json, emit_json

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("record", "prepare", "train", "finetune")
PAGE = 4096
NS_ENV = "KARTPILOT_FAULTS_NS"  # set inside the private mount namespace


# --- the filesystem: a tmpfs per trial, filled on demand -------------------------------------

def mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    pages = max(16, -(-size // PAGE))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages * PAGE}", "tmpfs", str(path)],
                   check=True, capture_output=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False, capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """Fill the filesystem, then free ``leave`` bytes (rounded to pages) again."""
    filler = mnt / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    block = bytes(1 << 20)
    try:
        for chunk in (block, bytes(PAGE)):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError:
                    break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, size - -(-leave // PAGE) * PAGE))
    finally:
        os.close(fd)
    return filler


def tree_size(path: Path) -> int:
    """Bytes a tmpfs gives the files under ``path`` (whole pages)."""
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in path.rglob("*") if p.is_file())


def snapshot(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``path``."""
    out = {}
    if path.exists():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- what a complete file looks like --------------------------------------------------------

def is_temp(name: str) -> bool:
    return ".tmp" in name or (name.startswith(".") and "tmp" in name)


def check_file(p: Path) -> str | None:
    """None when ``p`` is a complete file of its kind, else what is wrong with it."""
    suffix = p.suffix.lower()
    try:
        if suffix == ".keras":
            with zipfile.ZipFile(p) as z:
                bad = z.testzip()
                names = set(z.namelist())
            if bad is not None:
                return f"torn .keras ({bad} fails its CRC)"
            if not {"config.json", "model.weights.h5"} <= names:
                return f"incomplete .keras (has {sorted(names)})"
        elif suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
            if arr.size:
                arr.reshape(-1)[-1].copy()
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        elif suffix == ".json":
            json.loads(p.read_text())
        elif suffix == ".csv":
            text = p.read_text()
            if not text or not text.endswith("\n"):
                return "torn .csv (empty or ends inside a row)"
            rows = list(csv.reader(io.StringIO(text)))
            widths = {len(r) for r in rows if r}
            if len(widths) > 1:
                return f"torn .csv (rows of {sorted(widths)} fields)"
        elif suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:
                im.load()
        elif suffix == ".pkl":
            with open(p, "rb") as fh:
                pickle.load(fh)  # the trial's own output, in the suite's own temp folder
    except Exception as exc:  # anything that does not load is torn
        return f"does not load: {type(exc).__name__}: {str(exc)[:120]}"
    return None


def check_tree(root: Path, before: dict[str, str], fault: str, report: dict) -> None:
    """The generic rule over ``root``: every previous file unchanged or replaced by a complete
    one, every new file complete, temp files only after a kill."""
    after = snapshot(root)
    for rel in before:
        if rel not in after:
            report["problems"].append(f"lost: {root.name}/{rel} (previous version gone)")
    for rel, digest in after.items():
        p = root / rel
        if before.get(rel) == digest:
            continue
        if is_temp(p.name):
            leftover(report, fault, f"{root.name}/{rel}")
            continue
        why = check_file(p)
        if why:
            report["problems"].append(f"{root.name}/{rel}: {why}")


def leftover(report: dict, fault: str, what: str) -> None:
    if fault == "kill":
        report["leftover_after_kill"].append(what)
    else:
        report["problems"].append(f"left behind after a full disk: {what}")


def check_session(path: Path, fault: str, report: dict) -> None:
    """A new session: absent, or loadable with every row's image decoding and no stray image."""
    from dataset.session import CSV, META, SessionError, load_image, load_session

    if not path.exists():
        return
    if not (path / META).exists() or not (path / CSV).exists():
        report["problems"].append(f"{path.name}: a session folder without meta.json or frames.csv")
        return
    try:
        df = load_session(path, include_excluded=True)
    except SessionError as exc:
        report["problems"].append(f"{path.name}: unloadable session: {exc}")
        return
    for image in df["image"]:
        if not (path / image).is_file():
            report["problems"].append(f"{path.name}: orphan row, no {image}")
            continue
        try:
            load_image(path, image)
        except SessionError as exc:
            report["problems"].append(f"{path.name}: {exc}")
    if df["frame"].tolist() != list(range(len(df))):
        report["problems"].append(f"{path.name}: frames not numbered 0..{len(df) - 1}")
    named = {Path(i).name for i in df["image"]}
    for p in sorted((path / "frames").iterdir()) if (path / "frames").is_dir() else []:
        if p.name not in named:
            what = f"{path.name}/frames/{p.name}" + (" (temp)" if is_temp(p.name) else " (no row)")
            leftover(report, fault, what)
    for p in path.iterdir():
        if p.is_file() and is_temp(p.name):
            leftover(report, fault, f"{path.name}/{p.name}")
    try:
        json.loads((path / META).read_text())
    except ValueError as exc:
        report["problems"].append(f"{path.name}/meta.json: {exc}")


# --- the commands ---------------------------------------------------------------------------

def py(*args) -> list[str]:
    return [sys.executable, "-m", *args]


class Command:
    """One command under test: its inputs and previous version (built once), how to stage a
    trial, the command line, and the check."""

    name = ""

    def __init__(self, work: Path, fixtures: dict):
        self.work, self.fx = work, fixtures
        self.ref_seconds = 0.0
        self.ref_bytes = 0

    def stage(self, mnt: Path) -> None:
        raise NotImplementedError

    def argv(self, mnt: Path, rng: random.Random) -> list[str]:
        raise NotImplementedError

    def check(self, mnt: Path, before: dict, fault: str, report: dict) -> None:
        raise NotImplementedError

    def reference(self) -> None:
        """Run once on the normal disk without a fault: its duration sets the kill window, and
        the size of the files it writes (new or replaced) the disk-full window."""
        mnt = self.work / f"ref-{self.name}"
        mnt.mkdir()
        self.stage(mnt)
        before = snapshot(mnt)
        self.staged_bytes = tree_size(mnt)
        self.ref_seconds = run(self.argv(mnt, random.Random(0)), self.work / f"ref-{self.name}.log")
        written = [rel for rel, digest in snapshot(mnt).items() if before.get(rel) != digest]
        self.ref_bytes = max(PAGE, sum(-(-(mnt / rel).stat().st_size // PAGE) * PAGE for rel in written))
        self.ref_out = mnt

    def reference_from_fixture(self, previous: Path) -> None:
        """For the slow commands (a TensorFlow start each): the run that made the previous
        version is the same command into an empty place, so it serves as the reference."""
        self.staged_bytes = tree_size(previous)
        self.ref_seconds, self.ref_bytes = self.fx["ref"][self.name], max(PAGE, self.staged_bytes)


class Record(Command):
    name = "record"

    def stage(self, mnt):
        shutil.copytree(self.fx["session_a"], mnt / "previous")

    def argv(self, mnt, rng):
        encoder = rng.choice(("process", "thread"))
        return py("record", "--source", "sim", "--fast", "--seconds", "2", "--size", "60x80", "--seed", "1",
                  "--encoder", encoder, "--quiet", "--json", "--out", str(mnt / "new"))

    def check(self, mnt, before, fault, report):
        check_tree(mnt / "previous", before["previous"], fault, report)
        check_session(mnt / "new", fault, report)
        for p in mnt.iterdir():
            if p.name not in ("previous", "new", ".filler"):
                leftover(report, fault, p.name)


class Prepare(Command):
    name = "prepare"
    ARRAYS = ("train_frames.npy", "train_actions.npy", "val_frames.npy", "val_actions.npy")

    def stage(self, mnt):
        shutil.copytree(self.fx["prepared_old"], mnt / "prepared")

    def argv(self, mnt, rng):
        a, b = self.fx["session_a"], self.fx["session_b"]
        return py("dataset", "prepare", str(a), str(b), "--val", str(b), "--out", str(mnt / "prepared"), "--force")

    def reference(self):
        super().reference()
        self.new_arrays = {k: v for k, v in snapshot(self.ref_out / "prepared").items() if k in self.ARRAYS}

    def check(self, mnt, before, fault, report):
        out = mnt / "prepared"
        after = snapshot(out)
        if after == before["prepared"]:
            pass  # the previous version, untouched
        elif not out.exists():
            report["problems"].append("lost: prepared/ is gone and no new version replaced it")
        else:
            arrays = {k: v for k, v in after.items() if k in self.ARRAYS}
            if arrays != self.new_arrays:
                report["problems"].append("prepared/ is neither the previous version nor the complete new one "
                                          f"(arrays {sorted(arrays)} differ from the reference run's)")
            elif check_file(out / "manifest.json") or "manifest.json" not in after:
                report["problems"].append("prepared/manifest.json missing or torn")
            for rel in after:
                if rel not in self.ARRAYS and rel != "manifest.json" and rel not in before["prepared"]:
                    leftover(report, fault, f"prepared/{rel}")
        for p in mnt.iterdir():
            if p.name not in ("prepared", ".filler"):
                leftover(report, fault, p.name)


class Train(Command):
    name = "train"

    def stage(self, mnt):
        shutil.copy2(self.fx["model_old"], mnt / "model.keras")
        shutil.copytree(self.fx["model_old"].with_suffix(".run"), mnt / "model.run")  # train.fit.run_dir

    def argv(self, mnt, rng):
        return py("train", "--data", str(self.fx["prepared_new"]), "--out", str(mnt / "model.keras"),
                  "--epochs", "1", "--batch-size", "16", "--seed", "1", "--no-plots", "--json")

    def reference(self):
        self.reference_from_fixture(self.fx["model_old"].parent)

    def check(self, mnt, before, fault, report):
        check_tree(mnt, before["."], fault, report)


class Finetune(Command):
    name = "finetune"
    ARGS = ("--track", "luigi", "--eval-tracks", "luigi", "--envs", "2", "--rollout", "16", "--action-repeat", "1",
            "--warmup-frames", "0", "--eval-every", "2", "--eval-laps", "1", "--eval-max-s", "2",
            "--eval-envs", "1", "--epochs", "1", "--minibatch", "32", "--no-tensorboard", "--quiet", "--json")

    def stage(self, mnt):
        shutil.copytree(self.fx["finetune_old"], mnt / "run")

    def argv(self, mnt, rng):
        return py("train.finetune", "--model", str(self.fx["model_old"]), "--frames", "128", "--resume",
                  "--out", str(mnt / "run"), *self.ARGS)

    def reference(self):
        self.reference_from_fixture(self.fx["finetune_old"])

    def check(self, mnt, before, fault, report):
        check_tree(mnt / "run", before["run"], fault, report)


def run(argv: list[str], log: Path, timeout: float = 900) -> float:
    """Run a fixture command; returns how long it ran (it sets a kill window, it is no figure)."""
    t = time.monotonic()
    with open(log, "w") as fh:
        r = subprocess.run(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.monotonic() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {r.returncode}); see {log}:\n"
                           + log.read_text()[-2000:])
    return seconds


def build_fixtures(work: Path, commands: list[str]) -> dict:
    """Tiny inputs and the previous versions the chosen commands need, made with the project's
    own commands."""
    fx: dict = {}
    for key, seed in (("session_a", 1), ("session_b", 2)):
        fx[key] = work / "sessions" / key
        if key == "session_a" or "prepare" in commands or {"train", "finetune"} & set(commands):
            run(py("record", "--source", "sim", "--fast", "--seconds", "2", "--size", "60x80", "--seed", str(seed),
                   "--encoder", "thread", "--quiet", "--out", str(fx[key])), work / f"{key}.log")
    if commands == ["record"]:
        return fx
    fx["prepared_old"] = work / "prepared-old"  # the other split: differs from every new version
    run(py("dataset", "prepare", str(fx["session_a"]), str(fx["session_b"]), "--val", str(fx["session_a"]),
           "--out", str(fx["prepared_old"])), work / "prepared-old.log")
    fx["prepared_new"] = fx["prepared_old"]  # train's input
    if not {"train", "finetune"} & set(commands):
        return fx
    fx["model_old"] = work / "models" / "old.keras"
    fx["ref"] = {}
    fx["ref"]["train"] = run(py("train", "--data", str(fx["prepared_new"]), "--out", str(fx["model_old"]), "--epochs", "1",
           "--batch-size", "16", "--seed", "0", "--no-plots"), work / "model-old.log")
    if "finetune" in commands:
        fx["finetune_old"] = work / "finetune-old"
        fx["ref"]["finetune"] = run(py("train.finetune", "--model", str(fx["model_old"]), "--frames", "64", "--out",
               str(fx["finetune_old"]), *Finetune.ARGS), work / "finetune-old.log")
    return fx


def input_snapshots(fx: dict) -> dict[str, dict]:
    """What no trial may change: the sessions, the prepared data, the models."""
    folders = [fx[k] for k in ("session_a", "session_b", "prepared_old") if k in fx and fx[k].exists()]
    if "model_old" in fx:
        folders.append(fx["model_old"].parent)
    return {str(f): snapshot(f) for f in folders}


# --- one trial -------------------------------------------------------------------------------

def trial(cmd: Command, fault: str, rng: random.Random, mnt: Path, inputs: dict, keep: Path | None,
          index: int) -> dict:
    report: dict = {"fault": fault, "injected": False, "problems": [], "leftover_after_kill": []}
    mount_tmpfs(mnt, cmd.staged_bytes + 4 * cmd.ref_bytes + (64 << 20 if fault == "kill" else 0))
    try:
        cmd.stage(mnt)
        before = {".": snapshot(mnt), **{p.name: snapshot(p) for p in mnt.iterdir() if p.is_dir()}}
        filler = None
        if fault == "full":
            share = rng.uniform(0.0, 1.1)
            report["free_bytes"] = int(share * cmd.ref_bytes)
            filler = fill(mnt, report["free_bytes"])
            before["."] = {k: v for k, v in snapshot(mnt).items() if k != filler.name}
        argv = cmd.argv(mnt, rng)
        log = cmd.work / f"trial-{cmd.name}-{index}.log"
        with open(log, "w") as fh:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            if fault == "kill":
                delay = rng.uniform(0.0, 1.1 * cmd.ref_seconds)
                report["kill_at_s"] = round(delay, 2)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    report["injected"] = True
                proc.wait()
            else:
                try:
                    proc.wait(timeout=20 * cmd.ref_seconds + 120)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    report["problems"].append("hung on the full disk (killed)")
                report["injected"] = proc.returncode != 0
            report["exit"] = proc.returncode
        wait_for_group(proc.pid)
        if filler is not None:
            filler.unlink()
        if fault == "kill" and not report["injected"] and proc.returncode != 0:
            report["problems"].append(f"failed without a fault (exit {proc.returncode}): see {log}")
        cmd.check(mnt, before, fault, report)
        for name, digest in inputs.items():
            if snapshot(Path(name)) != digest:
                report["problems"].append(f"input changed: {name}")
        if report["problems"]:
            report["log_tail"] = log.read_text()[-600:]
            if keep is not None:
                shutil.copytree(mnt, keep / f"{cmd.name}-{index}-{fault}", ignore=shutil.ignore_patterns(".filler"))
    finally:
        umount(mnt)
    return report


def wait_for_group(pgid: int, timeout: float = 30.0) -> None:
    """Let children of a killed command finish (encoders notice their parent is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    time.sleep(0.5)


# --- the suite -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="trials per command, alternating kill / full disk "
                    "(default %(default)s)")
    ap.add_argument("--commands", default=",".join(COMMANDS),
                    help="comma-separated subset of %(default)s")
    ap.add_argument("--seed", type=int, default=0, help="random kill instants and free space (default %(default)s)")
    ap.add_argument("--keep", default=None, metavar="DIR", help="copy each damaged trial's files here")
    add_json(ap)
    return ap


def fail(msg: str) -> NoReturn:
    cli.fail("python -m bench.faults", msg)


def in_private_namespace(argv: list[str]) -> int | None:
    """Re-run this command in a private mount namespace (its tmpfs mounts vanish with it);
    None when already inside one."""
    if os.environ.get(NS_ENV) == "1":
        return None
    unshare = shutil.which("unshare")
    if unshare is None:
        fail("needs unshare (util-linux) to mount its tmpfs in a private namespace")
    flags = "-m" if os.geteuid() == 0 else "-rm"
    probe = subprocess.run([unshare, flags, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        fail(f"cannot make a private mount namespace ({unshare} {flags}: {probe.stderr.strip()}); "
             "run as root or enable unprivileged user namespaces")
    env = {**os.environ, NS_ENV: "1"}
    return subprocess.run([unshare, flags, sys.executable, "-m", "bench.faults", *argv], env=env).returncode


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown or not commands:
        fail(f"--commands: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(COMMANDS)}")
    if args.trials < 1:
        fail(f"--trials must be at least 1, got {args.trials}")
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    code = in_private_namespace(argv)
    if code is not None:
        return code
    rng = random.Random(args.seed)
    classes = {"record": Record, "prepare": Prepare, "train": Train, "finetune": Finetune}
    with tempfile.TemporaryDirectory(prefix="kp-faults-") as tmp:
        work = Path(tmp)
        log(f"building tiny inputs in {work} ...", args)
        fx = build_fixtures(work, commands)
        inputs = input_snapshots(fx)
        result: dict = {"trials_per_command": args.trials, "seed": args.seed, "commands": {}}
        for name in commands:
            cmd = classes[name](work, fx)
            cmd.reference()
            per = {"trials": 0, "injected": 0, "damaged": 0, "kill": {"trials": 0, "injected": 0, "damaged": 0},
                   "full": {"trials": 0, "injected": 0, "damaged": 0}, "leftover_after_kill": 0, "problems": []}
            for i in range(args.trials):
                fault = ("kill", "full")[i % 2]
                rep = trial(cmd, fault, rng, work / "mnt", inputs, keep, i)
                damaged = bool(rep["problems"])
                for bucket in (per, per[fault]):
                    bucket["trials"] += 1
                    bucket["injected"] += rep["injected"]
                    bucket["damaged"] += damaged
                per["leftover_after_kill"] += len(rep["leftover_after_kill"])
                if damaged:
                    per["problems"].append({"trial": i, "fault": fault, "exit": rep.get("exit"),
                                            **{k: rep[k] for k in ("kill_at_s", "free_bytes") if k in rep},
                                            "problems": rep["problems"][:5], "log_tail": rep.get("log_tail", "")})
                log(f"{name} trial {i} ({fault}): {'injected' if rep['injected'] else 'missed'}, "
                    f"{'DAMAGED: ' + '; '.join(rep['problems'][:3]) if damaged else 'ok'}", args)
            result["commands"][name] = per
        result["total"] = {k: sum(c[k] for c in result["commands"].values()) for k in ("trials", "injected", "damaged")}
    print_table(result)
    if args.json:
        emit_json(result)
    return 0


def log(msg: str, args) -> None:
    print(f"faults: {msg}", file=sys.stderr, flush=True)


def print_table(result: dict) -> None:
    print(f"{'command':10s} {'trials':>6s} {'injected':>8s} {'damaged':>7s}   kill (inj/dmg)   full (inj/dmg)",
          file=sys.stderr)
    for name, c in result["commands"].items():
        print(f"{name:10s} {c['trials']:6d} {c['injected']:8d} {c['damaged']:7d}   "
              f"{c['kill']['injected']:4d}/{c['kill']['damaged']:<4d}        {c['full']['injected']:4d}/"
              f"{c['full']['damaged']:<4d}", file=sys.stderr)
    t = result["total"]
    print(f"{'total':10s} {t['trials']:6d} {t['injected']:8d} {t['damaged']:7d}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
