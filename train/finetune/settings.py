"""Every fine-tuning setting, once: the dataclasses the trainer takes, whose fields generate the CLI.

A field's default, type and help text (``option(...)`` metadata) are the only
place a setting is written: ``add_arguments`` turns the fields into
``python -m train.finetune`` options (``--action-repeat`` for
``action_repeat``; nested settings get their own group, the reward terms with
an ``r-`` prefix) and ``config_from_args`` turns the parsed options back into
a ``Config``. This module imports nothing heavy, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field

from common.defaults import HELD_OUT, MODEL

SET_SEP = "+"  # T1+T2+...: an evaluation set, one env per track, driven together


def track_set(name) -> list[str] | None:
    """The tracks of an evaluation set ``T1+T2+...``; None for one track (or a distribution)."""
    if not isinstance(name, str) or SET_SEP not in name:
        return None
    parts = name.split(SET_SEP)
    if not all(parts):
        raise ValueError(f"evaluation set {name!r}: expected T1{SET_SEP}T2{SET_SEP}... with no empty name")
    return parts


def selection_set(seeds: range, style: str, n: int) -> str:
    """``n`` tracks of a training distribution, evenly spaced over its seeds, as one evaluation set."""
    from envs.kartsim.generate import track_name

    n = min(n, len(seeds))
    return SET_SEP.join(track_name(seeds[i * len(seeds) // n], style) for i in range(n))


def track_label(name: str) -> str:
    """A short name for plots: an evaluation set is named by its size and first track."""
    members = track_set(name)
    return name if members is None else f"{len(members)} tracks ({members[0]}, ...)"


def ramp(frames: int, start: int, span: int) -> float:
    """How far ``frames`` is along a schedule that starts at ``start`` and lasts ``span`` frames: 0 to 1."""
    return min(max(frames - start, 0) / max(span, 1), 1.0)


def option(default=dataclasses.MISSING, help: str = "", *, flag: str | None = None, group: str | None = None,
           default_factory=dataclasses.MISSING, **meta):
    """A dataclass field carrying its CLI help (and, for on-by-default switches, the ``--no-...`` flag)."""
    md = {"help": help, **({"flag": flag} if flag else {}), **({"group": group} if group else {}), **meta}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class PPOConfig:
    gamma: float = option(0.9975, "discount per decision (~13 game seconds ahead at action repeat 1)")
    lam: float = option(0.975, "GAE lambda (~1.3 s of credit: a drift's 0.8 s charge and its boost fit in)")
    clip: float = option(0.2, "PPO clip range")
    epochs: int = option(4, "passes over each rollout")
    minibatch: int = option(256, "minibatch size (decisions)")
    vf_coef: float = option(0.5, "value loss weight")
    ent_coef: float = option(0.0, "entropy bonus weight (steering and the three buttons)")
    drift_ent_coef: float = option(0.0, "entropy bonus on R alone: exploration over when to hop and when to let "
                                   "go of a drift, leaving the steering noise and the A and B buttons as they are")
    max_grad_norm: float = option(0.5, "global gradient-norm clip")
    lr: float = option(3e-4, "actor learning rate (annealed linearly to 0)")
    critic_lr: float = option(5e-4, "critic learning rate (annealed linearly to 0)")


@dataclass
class RewardShaping:
    """The reward terms (kartsim's ``RewardConfig``; other backends read the same fields).

    Per game frame: ``progress`` x 100 x (lap fraction gained) -- one lap is worth
    100 -- plus the shaping the Mario Kart RL literature uses: ``speed`` x v / top
    speed (do not idle), ``boost`` while a drift mini-turbo runs (use drift-boosts),
    ``offroad`` per frame on grass (negative), ``fall`` once per fall off the
    track (negative; Rainbow Road has no guardrails, and a fall also loses the
    ground back to the last checkpoint and Lakitu's time), and ``drift_abort``
    once per drift given up before its mini-turbo charged, times the share of
    the charge missing (negative).

    ``boost`` and ``drift_abort`` are on by default. Progress alone barely tells a
    mini-turbo from none (a boost gains ~0.1 s), and the cloned policy lets go of
    R where its teacher did, a few frames before the charge would complete:
    holding on means sampling R against a ~1% probability on ~10 frames in a row,
    which per-frame exploration never does. ``drift_abort`` makes each of those
    early releases cost at once (-3 x the charge missing: holding one frame
    longer is worth one to two frames of progress), so the policy learns to hold on
    without having to stumble on a whole boost first; ``boost`` (0.1 per boosted
    frame, ~2.4 per boost) pays for the boost itself. A drift held to its boost
    costs nothing. The real-game backend reads only ``progress``.

    ``edge`` (off by default; kartsim only) costs each frame the kart's centre is
    within ``edge_margin`` units of a void edge, scaled from 0 at the margin to 1 at
    the edge: the cloned policy passes within 0.12 units of rainbow's void on its
    best lap and falls from 2 of 4 starts (README), so a fall-free policy needs
    room, not luck. Like ``fall`` it is not scaled by ``--shaping-final``.

    ``drift_hold`` (off by default) costs each frame a drift is held after its
    charge was full: the fine-tuned policy held its drifts on a full charge for 15%
    of the lap where the planned race holds for 7-8% (README), and a frame held
    is a frame the boost waits.
    """

    progress: float = option(1.0, "progress weight (1 lap = 100 x weight)")
    fall: float = option(-10.0, "once per fall off the track (negative)")
    speed: float = option(0.0, "per frame x speed / top speed")
    boost: float = option(0.1, "per frame while a mini-turbo boost runs")
    offroad: float = option(0.0, "per frame off-road (negative)")
    drift_abort: float = option(-3.0, "per drift released before its mini-turbo charged, x the charge missing "
                                "(negative)")
    drift_hold: float = option(0.0, "per frame a drift is held on a mini-turbo charge already full (negative; "
                               "kartsim only): letting go fires the boost, and a new drift can follow")
    edge: float = option(0.0, "per frame within --r-edge-margin of a void edge, x (1 - distance inside the "
                         "edge / margin): 0 at the margin, the full weight at the edge (negative; kartsim only)")
    edge_margin: float = option(1.0, "units inside a void edge where --r-edge starts to cost (a distance, not a "
                                "weight)")

    def as_dict(self) -> dict:
        return asdict(self)


RUN, POLICY, PPO, EVAL, EMU, RAY = "run", "policy", "PPO", "evaluation", "emulator envs (--env mk64 / mupen-test)", \
    "Ray (env workers as actors, on this machine or a cluster)"
SHAPING = "reward shaping (see train/finetune/settings.py RewardShaping)"
SHAPING_TERMS = ("speed", "boost", "offroad", "drift_abort", "drift_hold")  # what --shaping-final scales: not progress, not fall


@dataclass
class Config:
    model: str = option(MODEL, "cloned PilotNet .keras (from python -m train)", group=RUN)
    track: str = option("rainbow", "training track (kartsim name or track JSON; a label for the emulator envs)",
                        group=RUN)
    eval_tracks: tuple[str, ...] | None = option(
        None, "comma-separated evaluation tracks, \"\" for none; T1+T2+... is one set driven together, one "
        "env per track (default: the training track, and on kartsim also the held-out track, "
        f"{HELD_OUT}; for a track distribution see --select-tracks)", group=RUN)
    env: str = option("kartsim", "environment backend: kartsim, mk64 (your ROM, --rom/--state), mupen-test "
                      "(the GPL test ROM), or module:factory", group=RUN)
    frames: int = option(2_000_000, "training budget in game frames, all envs", group=RUN)
    envs: int = option(24, "parallel environments", group=RUN)
    # per frame, as the clone was taught; at 4 the rainbow clone falls off (see README)
    action_repeat: int = option(1, "game frames per decision", group=RUN)
    out: str = option("data/finetune/run", "run directory (a fresh run refuses one holding another run's "
                      "checkpoint or best.keras: pass --resume, or a new --out)", group=RUN)
    seed: int = option(0, "seed of the policy, the learner and the envs", group=RUN)
    resume: bool = option(False, "continue the run in --out from OUT/ckpt/state.npz", group=RUN)
    tensorboard: bool = option(True, "write no TensorBoard logs", flag="--no-tensorboard", group=RUN)
    frame_stack: int = option(1, "features of the last k frames (temporal option; 1 = the cloned model as is)",
                              group=POLICY)
    init_log_std: float = option(-1.6, "steering log-std at start", group=POLICY)
    final_log_std: float | None = option(None, "steering log-std at the end of --frames, reached linearly from "
                                         "--init-log-std after warm-up (none: log-std is learned)", group=POLICY)
    # 0.98 from the rainbow runs in the README (teachers section): evaluations of the average fell far less
    actor_ema: float = option(0.98, "keep a running average of the actor head, updated after each update with "
                              "this decay (0.98: about the last 50 updates), and evaluate and export that "
                              "average instead of the latest weights (0: the latest weights)", group=POLICY)
    actor_ema_start: int = option(
        0, "with --actor-ema: the game frame from which each update folds the latest actor into the average; "
        "until then the average, the policy evaluated and exported, is the clone exactly, so the first "
        "updates after warm-up are not what is evaluated; on rainbow this did not stop the first "
        "evaluation off the clone from falling (README) (0: from the end of warm-up)", group=POLICY)
    actor_ema_restart: bool = option(
        False, "with --actor-ema-start: at that frame the average restarts from the latest actor weights "
        "instead of folding them into the clone, so the evaluated policy goes from the clone straight to "
        "what PPO has learned by then, never through small perturbations of the clone; on rainbow, at "
        "--actor-ema-start 600000, no evaluation fell or was slower than the clone (README)", group=POLICY)
    widen: int = option(0, "add this many units to each hidden layer of the actor head after its first "
                        "(PilotNet's 100, 50 and 10), starting as the clone exactly; best.keras is then a "
                        "PilotNet that much wider there", group=POLICY)
    rollout: int = option(64, "decisions per env per update", group=PPO)
    warmup_frames: int = option(60_000, "frames of frozen-cloned rollouts that train only the critic", group=PPO)
    actor_lr_ramp_frames: int = option(
        0, "game frames after warm-up over which the actor's learning rate rises linearly from 0 to its "
        "annealed value, so the actor's fresh Adam does not take full-size steps at once (0: no ramp; the "
        "critic's rate is not ramped)", group=PPO)
    kl_coef: float = option(0.2, "KL(pi || cloned) weight after warm-up", group=PPO)
    kl_final: float = option(0.01, "KL weight at the end of the decay", group=PPO)
    kl_decay_frames: int = option(800_000, "frames over which the KL weight decays", group=PPO)
    drift_ent_final: float | None = option(
        None, "decay --drift-ent-coef linearly from the end of warm-up to this weight over "
        "--drift-ent-decay-frames (none: constant)", group=PPO)
    drift_ent_decay_frames: int | None = option(
        None, "game frames over which --drift-ent-coef decays to --drift-ent-final (default: "
        "--kl-decay-frames, so R explores while the KL term holds the rest near the clone)", group=PPO)
    scale_rewards: bool = option(True, "use raw rewards as value targets", flag="--no-reward-scaling", group=PPO)
    ppo: PPOConfig = option(default_factory=PPOConfig, group=PPO, nested="")
    shaping: RewardShaping = option(default_factory=RewardShaping, group=SHAPING, nested="r-")
    shaping_final: float | None = option(
        None, "scale the shaping terms (speed, boost, offroad, drift-abort; not progress or fall) down "
        "linearly to this factor of their --r-* weights over --shaping-decay-frames from "
        "--shaping-decay-start, so the end of the run is trained on lap progress alone at 0 (none: constant; "
        "kartsim in this process only)", group=SHAPING)
    shaping_decay_start: int | None = option(None, "game frames at which --shaping-final's decay starts "
                                             "(default: the end of warm-up)", group=SHAPING)
    shaping_decay_frames: int | None = option(None, "game frames over which the shaping decays to "
                                              "--shaping-final (default: to the end of --frames)", group=SHAPING)
    eval_every: int = option(40, "updates between evaluations", group=EVAL)
    eval_laps: int = option(2, "deterministic laps per evaluation", group=EVAL)
    select_tracks: int = option(8, "training on a track distribution (gen:A-B): best.keras is chosen on this "
                                "many of its tracks (evenly spaced seeds, one set driven together), kept when "
                                "every one completes its laps with no fall and their mean lap is the lowest "
                                "yet; 0: chosen on the held-out track", group=EVAL)
    eval_max_s: float | None = option(None, "game-second cap per evaluation (default: 10 + 2.5 x lower bound "
                                      "x laps; 3 minutes a lap without a bound)", group=EVAL)
    # the policy and kartsim are deterministic; more envs vary the start jitter
    eval_envs: int = option(1, "evaluation envs per track, each from its own start (the start is jittered); "
                            "with more than one, eval.csv's median_best_lap_s (the median of the starts' best "
                            "laps) is what chooses best.keras: one start's lap is one draw (README)", group=EVAL)
    rom: str | None = option(None, "your Mario Kart 64 ROM (default: $KARTPILOT_ROM; mupen-test: the GPL "
                             "test ROM, $KARTPILOT_TEST_ROM)", group=EMU)
    state: str | None = option(None, "the savestate each episode starts from (default: $KARTPILOT_STATE)",
                               group=EMU)
    ray: str | None = option(None, "run the training envs as Ray actors: auto (the running cluster), "
                             "HOST:PORT, ray://HOST:10001, or local (start one here)", group=RAY)
    ray_actors: int = option(2, "env actors; each holds a slice of --envs", group=RAY)
    ray_resource: str | None = option(None, "custom resource each actor needs, one unit per env (default: "
                                      "mupen for the emulator envs, none for kartsim)", group=RAY)
    ray_cpus_per_actor: float = option(1.0, "CPUs each env actor reserves", group=RAY)

    def __post_init__(self):
        if not 0.0 <= self.actor_ema < 1.0:
            raise ValueError(f"--actor-ema must be in [0, 1), got {self.actor_ema}")
        if self.shaping_final is not None:
            if self.shaping_final < 0:
                raise ValueError(f"--shaping-final must be >= 0 (a factor of the --r-* weights), got "
                                 f"{self.shaping_final}")
            if self.env != "kartsim" or self.ray:
                raise ValueError("--shaping-final changes the reward during the run, which only the kartsim "
                                 "envs in this process can do (not --env emulators, not --ray)")
        if self.drift_ent_final is not None and self.drift_ent_final < 0:
            raise ValueError(f"--drift-ent-final must be >= 0 (an entropy bonus), got {self.drift_ent_final}")
        if self.drift_ent_decay_frames is not None and self.drift_ent_decay_frames < 1:
            raise ValueError(f"--drift-ent-decay-frames must be >= 1, got {self.drift_ent_decay_frames}")
        if not self.shaping.edge_margin > 0:
            raise ValueError(f"--r-edge-margin must be > 0 (units inside the road edge), got "
                             f"{self.shaping.edge_margin}")
        if self.actor_ema_start < 0:
            raise ValueError(f"--actor-ema-start must be >= 0 (a game frame; 0: the end of warm-up), got "
                             f"{self.actor_ema_start}")
        if self.actor_ema_start > 0 and self.actor_ema == 0:
            raise ValueError("--actor-ema-start needs --actor-ema > 0 (it delays the running average)")
        if self.actor_ema_restart and self.actor_ema_start == 0:
            raise ValueError("--actor-ema-restart needs --actor-ema-start > 0 (the frame at which the average "
                             "restarts from the latest weights)")
        if self.actor_lr_ramp_frames < 0:
            raise ValueError(f"--actor-lr-ramp-frames must be >= 0 (0: no ramp), got {self.actor_lr_ramp_frames}")
        if self.shaping_decay_frames is not None and self.shaping_decay_frames < 1:
            raise ValueError(f"--shaping-decay-frames must be >= 1, got {self.shaping_decay_frames}")
        spread = None
        if self.env == "kartsim":
            from envs.kartsim.generate import parse_range

            spread = parse_range(self.track)
        if self.eval_tracks is None:
            extra = ()
            if self.env == "kartsim":
                extra = (HELD_OUT,)
            # a track distribution (gen:A-B) is not one track to lap: evaluate on the held-out
            # track (it chooses best.keras) and on rainbow
            first = ("rainbow",) if spread is not None else (self.track,)
            if spread is not None and self.select_tracks > 0:
                extra = (selection_set(*spread, self.select_tracks), *extra)
            self.eval_tracks = tuple(dict.fromkeys((*extra, *first) if spread is not None else (*first, *extra)))
        else:
            self.eval_tracks = tuple(self.eval_tracks)

    @property
    def select_track(self) -> str:
        """The evaluation track whose laps choose best.keras: the training track, or (training on a
        distribution of tracks) the first evaluation track: by default a set of its tracks."""
        return self.track if self.track in self.eval_tracks else self.eval_tracks[0]

    def shaping_factor(self, frames: int) -> float:
        """--shaping-final: the factor of the shaping terms after ``frames`` training frames (1.0 without)."""
        if self.shaping_final is None:
            return 1.0
        start = self.warmup_frames if self.shaping_decay_start is None else self.shaping_decay_start
        span = self.shaping_decay_frames if self.shaping_decay_frames is not None else self.frames - start
        return 1.0 + (self.shaping_final - 1.0) * ramp(frames, start, span)

    def drift_ent_weight(self, frames: int) -> float:
        """The R entropy bonus after ``frames`` training frames: --drift-ent-coef, decaying to
        --drift-ent-final from the end of warm-up when that is set."""
        c0 = self.ppo.drift_ent_coef
        if self.drift_ent_final is None:
            return c0
        span = self.kl_decay_frames if self.drift_ent_decay_frames is None else self.drift_ent_decay_frames
        return c0 + (self.drift_ent_final - c0) * ramp(frames, self.warmup_frames, span)

    def shaping_at(self, frames: int) -> RewardShaping:
        """The reward shaping in force after ``frames`` training frames (see --shaping-final)."""
        f = self.shaping_factor(frames)
        return dataclasses.replace(self.shaping, **{k: getattr(self.shaping, k) * f for k in SHAPING_TERMS})

    def env_options(self) -> dict:
        """The backend-specific factory keywords that were set (the emulator's ROM and savestate)."""
        return {k: v for k, v in (("rom", self.rom), ("state", self.state)) if v}


# ---- the CLI, generated from the fields ----

def _flag(f: dataclasses.Field, prefix: str) -> str:
    return f.metadata.get("flag") or "--" + (prefix + f.name).replace("_", "-")


def _dest(f: dataclasses.Field, prefix: str) -> str:
    return (prefix + f.name).replace("-", "_")


def _plain_type(hint):
    """``X | None`` -> X; anything else as is."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def _comma_list(text: str) -> tuple[str, ...]:
    """``a,b`` -> ("a", "b"); an empty string is the empty list."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_arguments(parser: argparse.ArgumentParser, cls=Config, prefix: str = "", group=None,
                  groups: dict | None = None) -> None:
    """One option per field of ``cls`` (recursing into nested settings), help from the field metadata."""
    groups = {} if groups is None else groups
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.metadata.get("group")
        g = group if name is None else groups.setdefault(name, parser.add_argument_group(name))
        hint = _plain_type(hints[f.name])
        if "nested" in f.metadata:
            add_arguments(parser, hint, prefix + f.metadata["nested"], g, groups)
            continue
        default = f.default  # the field's own default (None where the trainer resolves it later)
        kw = {"dest": _dest(f, prefix), "help": f.metadata.get("help", "")}
        if hint is bool:
            if default and "flag" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name}: an on-by-default switch needs flag='--no-...'")
            kw.update(action="store_false" if default else "store_true", default=default)
        elif typing.get_origin(hint) is tuple:
            kw.update(type=_comma_list, default=default, metavar="A,B,...")
        else:
            kw.update(type=hint, default=default)
        (g or parser).add_argument(_flag(f, prefix), **kw)


def config_from_args(args: argparse.Namespace, cls=Config, prefix: str = ""):
    """The parsed options back into ``cls`` (nested settings included)."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if "nested" in f.metadata:
            kw[f.name] = config_from_args(args, _plain_type(hints[f.name]), prefix + f.metadata["nested"])
        else:
            kw[f.name] = getattr(args, _dest(f, prefix))
    return cls(**kw)
