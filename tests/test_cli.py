"""The one command-line convention (common/cli.py; README "Command lines"), on every command.

Every ``python -m`` command answers ``--help`` (exit 0, usage under its own prog), and a bad
command line ends with one line ``<prog>: error: ...`` on stderr and exit status 2, no
traceback: argparse's own errors and the ones found after parsing (a missing file, a value out
of range) alike. Sizes are HxW everywhere, through one parser.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import cli

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent-kartpilot"

# command -> (a bad command line, a fragment of its error message). Where it is cheap, the bad
# case fails after parsing (through common.cli.fail / reported); otherwise in argparse itself.
BAD = {
    "record": (["--rate", "100"], "--rate must be in (0, 60] Hz"),
    "dataset": (["prepare", MISSING, "--out", "{tmp}/prepared"], "missing session metadata"),
    "train": (["--epochs", "ten"], "argument --epochs: invalid int value"),
    "train.finetune": (["--envs", "x"], "argument --envs: invalid int value"),
    "train.finetune.compare": ([MISSING], f"{MISSING}/eval.csv: no such file"),
    "drive": (["--sim", "--rom", "game.z64", "--model", f"{MISSING}.keras"], "--sim and --rom are exclusive"),
    "drive.simclient": (["--size", "320x240x3"], "argument --size: expected HxW"),
    "envs.kartsim": (["replay", f"{MISSING}.json"], "movie file not found"),
    "envs.mupen": (["check-rom", f"{MISSING}.z64"], f"{MISSING}.z64"),
    "demo": (["--epochs", "x"], "argument --epochs: invalid int value"),
    "bench.drive": (["--model", f"{MISSING}.keras"], "no such file"),
    "bench.envs": (["--skip", "gpu"], "argument --skip: invalid choice"),
    "bench.faults": (["--commands", "nosuch"], "--commands: unknown nosuch"),
    "bench.finetune": (["--model", f"{MISSING}.keras"], "model file not found"),
    "bench.generalise": (["--model", f"{MISSING}.keras"], "no such file"),
    "bench.plugin": (["--rom", f"{MISSING}.v64"], "test ROM not found"),
    "bench.record": (["--size", "640x480x24"], "argument --size: expected HxW"),
    "bench.train": (["--steps", "x"], "argument --steps: invalid int value"),
    "testing.testwindow": (["--size", "320"], "argument --size: expected HxW"),
    "testing.plugin_server": (["--mode", "nosuch"], "argument --mode: invalid choice"),
}
MULTI = ("dataset", "envs.kartsim", "envs.mupen")  # commands only (train without one is train)
# The subcommands (prog "python -m train evaluate", ...) fail under their own prog too.
BAD_SUB = {
    "train evaluate": (["--render", "huge"], "argument --render: invalid choice"),
    "train demos": (["--gen-tracks", "0", "--out", "{tmp}/demos"], "--gen-tracks must be >= 1"),
    "envs.kartsim bench": (["--size", "200,66"], "argument --size: expected HxW"),
    "envs.kartsim expert": (["--laps", "0"], "--laps must be >= 1"),
    "dataset export-tensorkart": ([MISSING, "--out", "{tmp}/tk"], MISSING),
}


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("DISPLAY", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _check_error(res: subprocess.CompletedProcess, prog: str, fragment: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), last
    assert fragment in last, last


@pytest.mark.parametrize("module", sorted(BAD))
def test_help_and_a_bad_command_line(module, tmp_path):
    res = _run([module, "--help"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f"usage: python -m {module} ") and "--help" in res.stdout, res.stdout[:300]
    args, fragment = BAD[module]
    prog = f"python -m {module}" + (f" {args[0]}" if module in MULTI else "")  # a command's own prog
    _check_error(_run([module, *args], tmp_path), prog, fragment)


@pytest.mark.parametrize("command", sorted(BAD_SUB))
def test_subcommands_report_errors_under_their_own_prog(command, tmp_path):
    args, fragment = BAD_SUB[command]
    _check_error(_run([*command.split(), *args], tmp_path), f"python -m {command}", fragment)
    assert not (tmp_path / "demos").exists()  # refused before anything was written


def _parsers():
    """The commands that expose their parser (build_parser), by module."""
    from dataset.__main__ import build_parser as dataset
    from drive.__main__ import build_parser as drive
    from envs.kartsim.__main__ import build_parser as kartsim
    from envs.mupen.__main__ import build_parser as mupen
    from record.__main__ import build_parser as record
    from train.__main__ import build_parser as train
    from train.finetune.__main__ import build_parser as finetune

    return {"dataset": dataset(), "drive": drive(), "envs.kartsim": kartsim(), "envs.mupen": mupen(),
            "record": record(), "train": train(), "train.finetune": finetune()}


def _all(parser: argparse.ArgumentParser):
    """The parser and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _all(sub)


def test_every_subcommand_has_help_and_one_dispatch(capsys):
    for module, parser in _parsers().items():
        for p in _all(parser):
            assert p.prog.startswith(f"python -m {module}"), p.prog
            with pytest.raises(SystemExit) as exit_:
                p.parse_args(["--help"])
            assert exit_.value.code == 0
            assert capsys.readouterr().out.startswith(f"usage: {p.prog}")
            if p is not parser or module == "train":  # `python -m train` alone is the train command
                # one dispatch: each command's parser names its function and its prog (common.cli.add_command)
                assert callable(p._defaults.get("fn")) and p._defaults.get("prog") == p.prog, p.prog


def test_json_switches_share_one_help():
    for parser in _parsers().values():
        for p in _all(parser):
            for action in p._actions:
                if "--json" in action.option_strings:
                    assert action.help == cli.JSON_HELP, (p.prog, action.help)


def test_train_without_a_command_still_trains():
    """``python -m train --data ...`` (the Makefile's and README's form) is the train command."""
    from train.__main__ import build_parser, cmd_evaluate, cmd_train

    args = build_parser().parse_args(["--data", "d", "--out", "m.keras", "--epochs", "2", "--json"])
    assert args.fn is cmd_train and args.prog == "python -m train"
    assert (args.data, args.out, args.epochs, args.json) == ("d", "m.keras", 2, True)
    args = build_parser().parse_args(["evaluate", "--out", "media", "--laps", "1"])
    assert args.fn is cmd_evaluate and args.prog == "python -m train evaluate" and args.out_dir == "media"


def test_parse_size_takes_hxw_only():
    assert cli.parse_size("66x200") == (66, 200)
    assert cli.parse_size("240x320") == (240, 320)
    assert cli.parse_size(" 480x640 ") == (480, 640)
    assert cli.format_size(cli.parse_size("66x200")) == "66x200"
    for bad in ("200,66", "66X200", "66x200x3", "640x480x24", "x200", "66x", "66", "-66x200", "66.5x200",
                "66 x 200", "", "0x200", "66x0", "hxw"):
        with pytest.raises(cli.SizeError):
            cli.parse_size(bad)
    with pytest.raises(cli.SizeError, match="at least 8"):
        cli.parse_size("4x200", minimum=8)
    assert issubclass(cli.SizeError, ValueError)


def test_a_wrong_size_names_the_option_and_the_format(capsys):
    p = argparse.ArgumentParser(prog="python -m x")
    p.add_argument("--frame-size", type=cli.size_arg(), default=(480, 640))
    assert p.parse_args(["--frame-size", "240x320"]).frame_size == (240, 320)
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--frame-size", "640x480x3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("python -m x: error: argument --frame-size: expected HxW (rows x columns, e.g. 66x200 or "
                   "240x320), got '640x480x3'")


def test_size_options_are_rows_by_columns():
    """The commands' size options parse to (height, width) and default to the same shapes as before."""
    from drive.__main__ import build_parser as drive
    from envs.kartsim.__main__ import build_parser as kartsim
    from record.__main__ import build_parser as record

    d = drive().parse_args(["--sim-size", "120x160", "--frame-size", "240x320"])
    assert d.sim_size == (120, 160) and d.frame_size == (240, 320)
    assert drive().parse_args([]).frame_size == (240, 320)  # the N64's own framebuffer, downscaled in C
    assert record().parse_args(["--size", "60x80"]).size == (60, 80)
    assert kartsim().parse_args(["bench", "--size", "66x200"]).size == (66, 200)


def test_errors_after_parsing_go_through_one_helper(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_, cli.reported("python -m x"):
        open(tmp_path / "missing.csv")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"python -m x: error: {tmp_path / 'missing.csv'}: No such file or directory\n"
    with pytest.raises(SystemExit) as exit_, cli.reported("python -m x sub"):
        raise ValueError("--laps must be >= 1")
    assert exit_.value.code == 2 and capsys.readouterr().err == "python -m x sub: error: --laps must be >= 1\n"
    with pytest.raises(KeyError), cli.reported("python -m x"):  # not a CLI error: a bug stays a traceback
        raise KeyError("k")


def test_emit_json_prints_one_last_line(capsys, tmp_path):
    print("progress")
    cli.emit_json({"path": tmp_path, "n": np.int64(3), "x": np.float32(0.5), "shape": np.array([2, 3]),
                   "tracks": ("a", "b")})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "progress" and len(lines) == 2
    assert json.loads(lines[-1]) == {"path": str(tmp_path), "n": 3, "x": 0.5, "shape": [2, 3],
                                     "tracks": ["a", "b"]}
    with pytest.raises(TypeError):
        cli.emit_json({"o": object()})


def test_defaults_have_one_home():
    from common import defaults
    from drive.server import DEFAULT_PORT
    from envs.kartsim import HELD_OUT, TRACKS
    from train.finetune.settings import Config

    assert HELD_OUT == defaults.HELD_OUT and HELD_OUT in TRACKS and DEFAULT_PORT == defaults.DRIVE_PORT
    assert Config().model == defaults.MODEL and Config(track="luigi").eval_tracks == ("luigi", HELD_OUT)
    makefile = (ROOT / "Makefile").read_text()
    assert f"MODEL ?= {defaults.MODEL}\n" in makefile


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("xwininfo") is None,
                    reason="Xvfb / xwininfo not installed (apt-get install xvfb x11-utils)")
def test_virtual_screens_are_sized_rows_by_columns():
    from testing.display import virtual_display

    with virtual_display((300, 500)) as display:
        info = subprocess.run(["xwininfo", "-root", "-display", display], capture_output=True, text=True,
                              timeout=30).stdout
    assert "Width: 500" in info and "Height: 300" in info, info


def test_drive_state_errors_name_the_option(tmp_path):
    """``python -m drive --state``: a missing file, or a state without a ROM, fails before anything runs."""
    model = f"{MISSING}.keras"
    _check_error(_run(["drive", "--rom", "game.z64", "--state", f"{MISSING}.st", "--model", model], tmp_path),
                 "python -m drive", f"--state {MISSING}.st: no such file")
    _check_error(_run(["drive", "--sim", "--state", f"{MISSING}.st", "--model", model], tmp_path),
                 "python -m drive", "--state needs --rom")
