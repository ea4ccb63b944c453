"""train.finetune's settings, backend table and run files: one dataclass makes the CLI, the backends
load by name without envs/ importing train/, checkpoints are npz + JSON (pickles refused), and a
fresh run never replaces another run's checkpoint or best model."""

from __future__ import annotations

import ast
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.finetune import checkpoint as ck
from train.finetune.settings import Config, PPOConfig, RewardShaping, add_arguments, config_from_args

ROOT = Path(__file__).resolve().parents[1]


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def _changed(value):
    """A value of the same type unlike the default."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value * 0.5 + 0.125
    if isinstance(value, str):
        return value + "-x"
    return value


def test_every_setting_is_an_option_with_help_and_round_trips():
    from train.finetune.__main__ import build_parser, config_from

    parser = build_parser()
    by_dest = {a.dest: a for a in parser._actions}
    argv, want = [], {}
    for cls, prefix, into in ((Config, "", None), (PPOConfig, "", "ppo"), (RewardShaping, "r-", "shaping")):
        for f in dataclasses.fields(cls):
            if "nested" in f.metadata:
                continue
            dest = (prefix + f.name).replace("-", "_")
            assert dest in by_dest, f"{cls.__name__}.{f.name} has no option"
            action = by_dest[dest]
            assert action.help and len(action.help) > 8, f"--{dest} has no help"
            if f.name in ("eval_tracks", "eval_max_s", "rom", "state", "ray", "ray_resource", "final_log_std",
                          "shaping_final", "shaping_decay_start", "shaping_decay_frames", "drift_ent_final",
                          "drift_ent_decay_frames"):
                continue  # None defaults: set below
            new = _changed(f.default)
            if isinstance(new, bool):
                argv.append(action.option_strings[0])
            else:
                argv += [action.option_strings[0], str(new)]
            want[(into, f.name)] = new
    argv += ["--eval-tracks", "luigi,twisty", "--eval-max-s", "12.5", "--rom", "r.z64", "--state", "s.st",
             "--ray", "auto", "--ray-resource", "gpu", "--final-log-std", "-2.5", "--drift-ent-final", "0.005",
             "--drift-ent-decay-frames", "123"]
    cfg = config_from(parser.parse_args(argv))
    for (into, name), value in want.items():
        got = getattr(getattr(cfg, into) if into else cfg, name)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (into, name, got)
    assert cfg.eval_tracks == ("luigi", "twisty") and cfg.eval_max_s == 12.5 and cfg.ray == "auto"
    assert cfg.final_log_std == -2.5 and cfg.drift_ent_final == 0.005 and cfg.drift_ent_decay_frames == 123
    assert cfg.rom == os.path.abspath("r.z64") and cfg.state == os.path.abspath("s.st")
    assert cfg.env_options() == {"rom": cfg.rom, "state": cfg.state}
    # defaults: the CLI without options is Config()
    assert config_from_args(_parser().parse_args([])) == Config()
    assert "--frames-per-step" not in parser.format_help() and "--action-repeat" in parser.format_help()


def test_drift_ent_final_decays_the_r_bonus_over_the_kl_window_by_default():
    from train.finetune.__main__ import build_parser, config_from

    cfg = config_from(build_parser().parse_args(
        ["--warmup-frames", "100", "--kl-decay-frames", "400", "--drift-ent-coef", "0.02",
         "--drift-ent-final", "0"]))
    assert cfg.ppo.drift_ent_coef == 0.02 and cfg.drift_ent_final == 0.0
    assert [cfg.drift_ent_weight(f) for f in (0, 100, 300, 500, 10**6)] == pytest.approx([0.02, 0.02, 0.01, 0, 0])
    own = Config(warmup_frames=0, drift_ent_final=0.01, drift_ent_decay_frames=1000,
                 ppo=PPOConfig(drift_ent_coef=0.03))
    assert [own.drift_ent_weight(f) for f in (0, 500, 1000, 2000)] == pytest.approx([0.03, 0.02, 0.01, 0.01])
    assert Config(ppo=PPOConfig(drift_ent_coef=0.02)).drift_ent_weight(10**7) == 0.02  # no final: constant
    with pytest.raises(ValueError, match="--drift-ent-final must be >= 0"):
        Config(drift_ent_final=-0.1)
    with pytest.raises(ValueError, match="--drift-ent-decay-frames must be >= 1"):
        Config(drift_ent_final=0.0, drift_ent_decay_frames=0)
    with pytest.raises(ValueError, match="--actor-lr-ramp-frames must be >= 0"):
        Config(actor_lr_ramp_frames=-1)
    with pytest.raises(ValueError, match="--r-edge-margin must be > 0"):
        Config(shaping=RewardShaping(edge=-0.1, edge_margin=0.0))


def test_shaping_final_decays_the_shaping_terms_only():
    """--shaping-final: boost, drift-abort, speed and offroad go linearly from their --r-* weights to that
    factor of them over the decay window; progress and fall never change; without it nothing does."""
    from train.finetune.__main__ import build_parser, config_from

    cfg = config_from(build_parser().parse_args(
        ["--frames", "1000", "--warmup-frames", "100", "--shaping-final", "0.25", "--r-speed", "0.4"]))
    assert cfg.shaping_final == 0.25 and cfg.shaping_decay_start is None
    assert cfg.shaping_factor(0) == cfg.shaping_factor(100) == 1.0  # warm-up: the full shaping
    assert cfg.shaping_factor(550) == pytest.approx(1.0 - 0.75 * 0.5)  # halfway from warm-up to --frames
    assert cfg.shaping_factor(1000) == cfg.shaping_factor(5000) == pytest.approx(0.25)
    at = cfg.shaping_at(1000)
    assert at.boost == pytest.approx(0.25 * cfg.shaping.boost) and at.speed == pytest.approx(0.1)
    assert at.drift_abort == pytest.approx(0.25 * cfg.shaping.drift_abort)
    assert (at.progress, at.fall, at.offroad) == (cfg.shaping.progress, cfg.shaping.fall, 0.0)
    window = Config(frames=1000, shaping_final=0.0, shaping_decay_start=200, shaping_decay_frames=400)
    assert [window.shaping_factor(f) for f in (200, 400, 600, 900)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert Config().shaping_at(10**6) == Config().shaping  # no --shaping-final: constant
    with pytest.raises(ValueError, match="--shaping-final must be >= 0"):
        Config(shaping_final=-0.5)
    with pytest.raises(ValueError, match="only the kartsim envs in this process"):
        Config(shaping_final=0.0, ray="auto")
    with pytest.raises(ValueError, match="--shaping-decay-frames must be >= 1"):
        Config(shaping_final=0.0, shaping_decay_frames=0)


def test_eval_tracks_default_to_the_held_out_track_on_kartsim_only():
    from envs.kartsim import HELD_OUT

    assert Config(track="rainbow").eval_tracks == ("rainbow", HELD_OUT)
    assert Config(track=HELD_OUT).eval_tracks == (HELD_OUT,)
    assert Config(env="mk64", track="mk64").eval_tracks == ("mk64",)
    assert config_from_args(_parser().parse_args(["--eval-tracks", ""])).eval_tracks == ()


def test_no_module_under_envs_imports_train():
    bad = []
    for path in (ROOT / "envs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "train" or n.startswith("train.")]
    assert bad == []


def test_backend_table_loads_each_backend_lazily_by_name():
    code = (
        "import sys\n"
        "from train.finetune.envs import BACKENDS, backend_factory\n"
        "assert 'envs.mupen.backend' not in sys.modules\n"
        "from envs.mupen.backend import make_mk64, make_test_rom\n"
        "from train.finetune.envs import KartSimBackend\n"
        "assert backend_factory('mk64') is make_mk64 and backend_factory('mupen-test') is make_test_rom\n"
        "assert backend_factory('kartsim') is KartSimBackend\n"
        "assert backend_factory('envs.mupen.backend:make_mk64') is make_mk64\n"
        "print(sorted(BACKENDS))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['kartsim', 'mk64', 'mupen-test']"
    from train.finetune.envs import make_backend

    with pytest.raises(ValueError, match="unknown env backend 'nope'.*kartsim, mk64, mupen-test"):
        make_backend("nope")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from testing.models import tiny_pilotnet
    from train.model import save_model

    return save_model(tiny_pilotnet(seed=1), str(tmp_path_factory.mktemp("m") / "tiny.keras"))


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "train.finetune", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_env_mk64_is_known_and_asks_for_the_rom(tiny_model, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("KARTPILOT_ROM", "KARTPILOT_STATE")}
    proc = subprocess.run([sys.executable, "-m", "train.finetune", "--env", "mk64", "--model", tiny_model,
                           "--out", str(tmp_path / "o"), "--envs", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unknown env backend" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m train.finetune: error: ")
    assert "ROM" in proc.stderr
    proc = _cli("--model", tiny_model, "--rom", "x.z64", "--out", tmp_path / "o2")
    assert proc.returncode == 2 and "--rom" in proc.stderr and "not kartsim" in proc.stderr


def test_checkpoint_tree_round_trips_without_pickle(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(3)
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.float64(2.5), "i": 3, "none": None,
            "inf": float("inf"), "t": ("x", 1), "l": [np.zeros(2, bool), {"s": "text"}], "rng": rng,
            "rngs": [np.random.default_rng(1), None], "state": np.random.default_rng(2).bit_generator.state}
    path = ck.save_state(str(tmp_path / "ckpt" / "state.npz"), tree)
    back = ck.load_state(path)
    np.testing.assert_array_equal(back["a"], tree["a"])
    assert back["a"].dtype == np.float32 and back["n"] == 2.5 and back["i"] == 3 and back["none"] is None
    assert back["inf"] == float("inf") and back["t"] == ("x", 1) and back["l"][1] == {"s": "text"}
    assert back["l"][0].dtype == bool
    assert back["rng"].random() == rng.random()  # the generator continues where it was
    assert back["rngs"][1] is None and back["rngs"][0].random() == np.random.default_rng(1).random()
    assert back["state"] == tree["state"]
    with pytest.raises(TypeError, match="pickle"):
        ck.save_state(str(tmp_path / "bad.npz"), {"o": np.array([{}], dtype=object)})
    # an npz holding a pickled object array is refused, not loaded
    evil = tmp_path / "evil.npz"
    np.savez(evil, __tree__=np.frombuffer(b'{"format": "x"}', np.uint8), a0=np.array([{}], dtype=object))
    with pytest.raises(ck.CheckpointError, match="evil.npz"):
        ck.load_state(str(evil))


class _Payload:
    """Unpickling this touches a file: proof that a pickle ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_resume_refuses_a_pickled_checkpoint_without_loading_it(tiny_model, tmp_path):
    from train.finetune.trainer import Trainer

    out = tmp_path / "run"
    (out / "ckpt").mkdir(parents=True)
    marker = tmp_path / "pwned"
    (out / "ckpt" / "state.pkl").write_bytes(pickle.dumps({"learner": _Payload(str(marker))}))
    cfg = Config(model=tiny_model, track="luigi", eval_tracks=(), envs=1, out=str(out), resume=True,
                 tensorboard=False)
    with pytest.raises(ck.CheckpointError, match=r"state\.pkl.*pickle"):
        Trainer(cfg)
    assert not marker.exists(), "the pickle was loaded"
    proc = _cli("--model", tiny_model, "--track", "luigi", "--envs", "1", "--out", out, "--resume")
    assert proc.returncode == 2 and "state.pkl" in proc.stderr and not marker.exists()


def test_a_fresh_run_refuses_an_out_holding_another_run(tiny_model, tmp_path):
    from train.finetune.trainer import Trainer

    out = tmp_path / "run"
    out.mkdir()
    (out / "best.keras").write_bytes(b"the previous run's best model")
    cfg = Config(model=tiny_model, track="luigi", eval_tracks=(), envs=1, out=str(out), tensorboard=False)
    with pytest.raises(FileExistsError, match=r"run.*best\.keras.*--resume"):
        Trainer(cfg)
    proc = _cli("--model", tiny_model, "--track", "luigi", "--envs", "1", "--out", out)
    assert proc.returncode == 2 and str(out) in proc.stderr and "--resume" in proc.stderr
    assert (out / "best.keras").read_bytes() == b"the previous run's best model"
    with pytest.raises(FileNotFoundError, match=r"state\.npz"):
        Trainer(dataclasses.replace(cfg, resume=True))


def test_curve_skips_the_baselines_of_a_track_neither_policy_laps(tmp_path, monkeypatch):
    import types

    import matplotlib.axes

    from train.finetune.plot import plot_curves

    drawn = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, **kw: drawn.append((kw.get("label"), y)) or real(self, y, **kw))
    cfg = types.SimpleNamespace(eval_tracks=["rainbow", "twisty"], track="rainbow", warmup_frames=100)
    evals = [{"track": "rainbow", "frames": 100, "best_lap_s": 41.0, "mean_lap_s": 41.5, "falls": 0},
             {"track": "twisty", "frames": 100, "best_lap_s": None, "mean_lap_s": None, "falls": 0}]
    baselines = {"rainbow": {"cloned": {"best_lap_s": 41.5}, "expert": {"best_lap_s": 41.1},
                             "lower_bound_s": 31.5, "planned_lap_s": 36.5},
                 "twisty": {"cloned": {"best_lap_s": None}, "expert": {"best_lap_s": 31.0}}}
    trainer = types.SimpleNamespace(cfg=cfg, evals=evals, baselines=baselines, history=[])
    assert os.path.exists(plot_curves(trainer, str(tmp_path / "curve.png")))
    assert drawn == [("cloned, rainbow", 41.5), ("expert, rainbow", 41.1)]
    # once the fine-tuned policy laps twisty, its baselines are drawn beside it
    evals[1].update(best_lap_s=40.0, mean_lap_s=40.0)
    drawn.clear()
    plot_curves(trainer, str(tmp_path / "curve.png"))
    assert ("expert, twisty", 31.0) in drawn
