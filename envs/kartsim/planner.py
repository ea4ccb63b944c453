"""The planner: the fastest lap the simulator's real dynamics allow, found by search.

Receding-horizon sampling MPC over batched rollouts with full state access.
Every ``replan_every`` frames the planner restores ``samples`` copies of the
current kart state and tries candidate *command sequences* over ``horizon``
frames, each followed by ``tail`` frames of the scripted expert (so a candidate
is scored by where it leaves the kart, not only by how far it got: a kart
heading into a wall at speed scores badly). Score: race progress at the end,
plus a little speed; a candidate that falls off a void track is rejected.

A command per frame, turned into the action by a closed-loop tracker (the
expert's steering law on a tighter racing line):

* ``off``: sideways offset of the line to follow (units, left positive);
* ``pedal``: A, coast, or B;
* ``rb`` and ``dsign``: R held or not, and which way to land a hop (the
  tracker then drifts with the stick, tightening or widening the drift to keep
  to the line); releasing R after a full charge fires the mini-turbo.

Candidates are the previous best plan shifted by the frames executed, the
plain tracker, and mutations of both: smooth offset noise, drift events
inserted, removed, started or released earlier/later, landed the other way,
short brake or coast windows; a second round mutates the best few again. So
drifts and mini-turbos are chained (also on straights, snaking) exactly where
the rollouts say they pay. Deterministic given the seed.

``plan_race`` drives a whole race and returns the input movie (one action per
frame): it replays in a plain ``envs.kartsim.make(track, seed=...)`` env to
the same lap times (see movie.py). ``Planner.label(fs, ist, lapt)`` gives the
action the planner would take from any state (DAgger's oracle, planner demos).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from . import kart as K
from . import physics as P
from .expert import Expert, _wrap, drift_stick, expert_batch, line_steer
from .line import racing_line
from .physics import inside_edge
from .sim import KartBatch
from .splits import NEAR_EDGE_U
from .track import Track

PEDAL_A, PEDAL_COAST, PEDAL_B = 0, 1, 2


@dataclass(frozen=True)
class PlannerConfig:
    samples: int = 48  # candidates per round
    rounds: int = 2  # the second and later rounds mutate the best few of the rounds before
    elite: int = 6
    horizon: int = 40  # frames of candidate commands (1.33 s)
    tail: int = 30  # frames of the expert after them
    replan_every: int = 2  # frames executed from each plan
    offset_sigma: float = 0.8  # units, per offset knot
    knot: int = 8  # frames between offset knots
    margin: float = 0.8  # the tracker's line keeps the kart centre this far inside the road edge
    speed_weight: float = 0.3  # score = progress (units) + speed_weight * speed at the end
    edge: float = 0.0  # keep the kart centre this far (units) inside the road edge (0: only falls count)

    def __post_init__(self):
        for name in ("samples", "rounds", "elite", "horizon", "replan_every", "knot"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"planner setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.edge < 3.0:
            raise ValueError(f"planner setting edge must be in [0, 3) units, got {self.edge}")
        if self.tail < 0:
            raise ValueError(f"planner setting tail must be >= 0, got {self.tail}")
        if self.replan_every > self.horizon:
            raise ValueError(f"replan_every ({self.replan_every}) must not exceed horizon ({self.horizon})")
        if self.samples < 3:
            raise ValueError(f"planner setting samples must be >= 3, got {self.samples}")

    def to_dict(self) -> dict:
        return asdict(self)


@nb.njit(cache=True)
def _track_cmd(fs, ist, n, off, pedal, rb, dsign, out, lxy, lhead, lkap, lnrm, of_centre, ds):
    """The action of kart ``n`` for one frame's command: follow the line shifted by ``off``."""
    out[n, :] = 0.0
    if fs[n, P.FALL] > 0.0 or fs[n, P.HOLD] > 0.0:
        out[n, 2] = 1.0
        return
    th, v = fs[n, P.TH], fs[n, P.V]
    j, look, e, w_ccw, wmax = line_steer(fs, ist, n, lxy, lhead, lkap, lnrm, of_centre, ds, off)
    dd = ist[n, P.DDIR]
    if dd != 0:
        steer, _ = drift_stick(w_ccw, wmax, dd)
    else:
        steer = -w_ccw / wmax
        if fs[n, P.HOP] > 0.0 and fs[n, P.HOP] - K.DT <= 0.0 and rb != 0 and dsign != 0:
            # landing this frame: the stick decides the drift's direction
            steer = dsign * max(0.4, steer * dsign)
    if abs(_wrap(lhead[j] - th)) > 1.6 and v > 2.5:
        steer = 0.0  # facing the wrong way: a candidate that gets here scores badly anyway
    out[n, 0] = min(1.0, max(-1.0, steer))
    if pedal == PEDAL_A:
        out[n, 2] = 1.0
    elif pedal == PEDAL_B:
        out[n, 3] = 1.0
    out[n, 4] = 1.0 if rb != 0 else 0.0


@nb.njit(cache=True)
def _rollout(fs, ist, lapt, offs, pedals, rbs, dsigns, tail, acts, lxy, lhead, lkap, lnrm, of_centre, lds,
             exy, ehead, ekap, enrm, vprof, dzone, eof, eds, cnrm, half, edge_min,
             xy, heading, s_arr, tex, class_of, tox, toy, inv_cell, near, nox, noy, near_cell,
             cp_s, cp_idx, length, offroad_speed, void, laps, rw):
    """Run every candidate (rows of fs/ist/lapt, already set to the start state) through its
    commands, then ``tail`` frames of the expert. Fills ``acts`` (N, H, 5) with the actions taken and
    ``edge_min`` (N,) with the kart centre's least distance inside the road edge over those commands
    (``cnrm``, ``half``: the centreline's normals and half widths)."""
    n = fs.shape[0]
    h = offs.shape[1]
    act = np.zeros((n, 5), np.float32)
    rew = np.zeros(n)
    fin = np.zeros(n, np.int64)
    for t in range(h):
        for c in range(n):
            _track_cmd(fs, ist, c, offs[c, t], pedals[c, t], rbs[c, t], dsigns[c, t], act, lxy, lhead, lkap,
                       lnrm, of_centre, lds)
            for k in range(5):
                acts[c, t, k] = act[c, k]
        P.step_batch(fs, ist, lapt, act, rew, fin, xy, heading, s_arr, tex, class_of, tox, toy, inv_cell,
                     near, nox, noy, near_cell, cp_s, cp_idx, length, offroad_speed, void, laps, rw)
        for c in range(n):
            if fs[c, P.FALL] <= 0.0 and fs[c, P.HOLD] <= 0.0:
                edge_min[c] = min(edge_min[c], inside_edge(fs, ist, c, xy, cnrm, half))
    for _ in range(tail):
        expert_batch(fs, ist, act, exy, ehead, ekap, enrm, vprof, dzone, eof, eds)
        P.step_batch(fs, ist, lapt, act, rew, fin, xy, heading, s_arr, tex, class_of, tox, toy, inv_cell,
                     near, nox, noy, near_cell, cp_s, cp_idx, length, offroad_speed, void, laps, rw)


@dataclass
class Plan:
    """Commands over the horizon (one row per frame)."""

    off: np.ndarray
    pedal: np.ndarray
    rb: np.ndarray
    dsign: np.ndarray

    @classmethod
    def plain(cls, h: int) -> Plan:
        return cls(np.zeros(h), np.zeros(h, np.int64), np.zeros(h, np.int64), np.zeros(h, np.int64))

    def shifted(self, k: int) -> Plan:
        """Drop the first ``k`` frames; the end is padded with the plain tracker (R up, A held)."""
        h = len(self.off)
        out = Plan.plain(h)
        out.off[:h - k] = self.off[k:]
        out.off[h - k:] = self.off[-1]
        out.pedal[:h - k] = self.pedal[k:]
        out.rb[:h - k] = self.rb[k:]
        out.dsign[:h - k] = self.dsign[k:]
        return out

    def copy(self) -> Plan:
        return Plan(self.off.copy(), self.pedal.copy(), self.rb.copy(), self.dsign.copy())


def _events(rb: np.ndarray) -> list[tuple[int, int]]:
    """Intervals [a, c) where R is held."""
    d = np.diff(np.concatenate([[0], rb, [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


class Planner:
    """Sampling MPC on one track (see the module docstring)."""

    def __init__(self, track: str | Track = "luigi", laps: int = 3, config: PlannerConfig | None = None,
                 seed: int = 0):
        self.cfg = config or PlannerConfig()
        self.batch = KartBatch(self.cfg.samples, track if isinstance(track, str) else track.source, laps=laps,
                               render=False)
        self.track = self.batch.track
        self.laps = laps
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        margin = min(self.cfg.margin, 0.45 * float(self.track.width.min()))
        self.line = racing_line(self.track, margin=margin)
        self.expert = Expert(self.track)
        self._half = np.ascontiguousarray(self.track.width / 2.0)
        self.plan: Plan | None = None
        self.rollouts = 0  # candidate rollouts run so far

    def reset(self) -> None:
        """Forget the warm start (a new race or an unrelated state)."""
        self.plan = None

    # -- candidates -------------------------------------------------------------------------
    def _mutate(self, base: Plan, rng: np.random.Generator, scale: float) -> Plan:
        cfg = self.cfg
        h = cfg.horizon
        p = base.copy()
        r = rng.random(6)
        if r[0] < 0.7:  # smooth offset noise
            nk = h // cfg.knot + 2
            knots = rng.normal(0.0, cfg.offset_sigma * scale, nk)
            p.off = p.off + np.interp(np.arange(h), np.arange(nk) * cfg.knot, knots)
        ev = _events(p.rb)
        if r[1] < 0.35 * scale + 0.1:  # a new hop/drift/release event
            a = int(rng.integers(0, max(1, h - 12)))
            length = int(rng.integers(int(K.HOP_TIME * K.FPS) + 16, int(K.HOP_TIME * K.FPS) + 40))
            c = min(h, a + length)
            if not p.rb[max(0, a - 1):min(h, c + 1)].any():
                p.rb[a:c] = 1
                p.dsign[a:c] = 1 if rng.random() < 0.5 else -1
        elif ev and r[1] < 0.55:  # move an event's release (or its start, if it starts later)
            a, c = ev[int(rng.integers(len(ev)))]
            if rng.random() < 0.6 or a == 0:
                nc = int(np.clip(c + rng.integers(-4, 5), a + 1, h))
                d = p.dsign[a]
                p.rb[a:c] = 0
                p.rb[a:nc] = 1
                p.dsign[a:nc] = d
                if nc < h and nc + 1 <= h:
                    p.rb[nc] = 0
            else:
                na = int(np.clip(a + rng.integers(-3, 4), 1, c - 1))
                d = p.dsign[a]
                p.rb[a:c] = 0
                p.rb[na:c] = 1
                p.dsign[na:c] = d
                p.rb[na - 1] = 0
        elif ev and r[1] < 0.65:  # drop an event
            a, c = ev[int(rng.integers(len(ev)))]
            p.rb[a:c] = 0
        elif ev and r[1] < 0.72:  # land the other way
            a, c = ev[int(rng.integers(len(ev)))]
            p.dsign[a:c] = -p.dsign[a:c]
        if r[2] < 0.12 * scale:  # a short brake or coast window
            a = int(rng.integers(0, h))
            p.pedal[a:a + int(rng.integers(1, 7))] = PEDAL_B if rng.random() < 0.6 else PEDAL_COAST
        elif r[2] < 0.3 and (p.pedal != PEDAL_A).any():  # or back to A
            idx = np.flatnonzero(p.pedal != PEDAL_A)
            a = int(idx[int(rng.integers(len(idx)))])
            p.pedal[a:a + int(rng.integers(1, 7))] = PEDAL_A
        return p

    def _evaluate(self, cands: list[Plan], fs, ist, lapt):
        """Roll the candidates out from one state; (scores, actions (N, H, 5))."""
        b = self.batch
        n = len(cands)
        h = self.cfg.horizon
        fsb = np.repeat(fs[None], n, 0)
        isb = np.repeat(ist[None], n, 0)
        lpb = np.zeros((n, 1))  # lap times are not scored (and a long race's lapt would be copied per candidate)
        offs = np.stack([c.off for c in cands])
        pedals = np.stack([c.pedal for c in cands])
        rbs = np.stack([c.rb for c in cands])
        dsigns = np.stack([c.dsign for c in cands])
        acts = np.zeros((n, h, 5), np.float32)
        edge_min = np.full(n, 1e9)
        ln, ex = self.line, self.expert
        eln = ex.line
        _rollout(fsb, isb, lpb, offs, pedals, rbs, dsigns, self.cfg.tail, acts,
                 ln.xy, ln.heading, ln.kappa, ln.nrm, ln.of_centre, ln.ds,
                 eln.xy, eln.heading, eln.kappa, eln.nrm, ex.vprof, ex.dzone, eln.of_centre, eln.ds,
                 self.track.nrm, self._half, edge_min, *b._args)
        self.rollouts += n
        falls = isb[:, P.FALLS] - ist[P.FALLS]
        score = fsb[:, P.PROG] + self.cfg.speed_weight * fsb[:, P.V] - 1e6 * falls
        if self.cfg.edge > 0.0:  # closer to the edge than ``edge``: 100 units a unit
            score -= 100.0 * np.maximum(0.0, self.cfg.edge - edge_min)
        return score, acts

    def replan(self, fs: np.ndarray, ist: np.ndarray, lapt: np.ndarray) -> tuple[np.ndarray, float]:
        """Search from one kart state (rows ``fs`` (NF,), ``ist`` (NI,), ``lapt`` (laps,): a KartBatch's or
        an env's ``sim`` row), warm-started by the current plan; keep the best plan and return its actions
        (H, 5) and score. The state given is not changed."""
        cfg = self.cfg
        rng = self.rng
        base = self.plan if self.plan is not None else Plan.plain(cfg.horizon)
        cands = [base, Plan.plain(cfg.horizon)]
        while len(cands) < cfg.samples:
            cands.append(self._mutate(base, rng, 1.0))
        score, acts = self._evaluate(cands, fs, ist, lapt)
        pool = list(zip(score.tolist(), range(len(cands)), strict=True))
        all_c, all_a = list(cands), [acts]
        for rnd in range(1, cfg.rounds):
            order = np.argsort(-np.array([s for s, _ in pool]), kind="stable")[:cfg.elite]
            elites = [all_c[int(i)] for i in order]
            new = [self._mutate(elites[i % len(elites)], rng, 0.5 / rnd) for i in range(cfg.samples)]
            s2, a2 = self._evaluate(new, fs, ist, lapt)
            pool += [(float(s), len(all_c) + i) for i, s in enumerate(s2)]
            all_c += new
            all_a.append(a2)
        best = max(pool, key=lambda t: (t[0], -t[1]))[1]
        self.plan = all_c[best]
        acts_all = np.concatenate(all_a)
        return acts_all[best], float(max(s for s, _ in pool))

    def label(self, fs: np.ndarray, ist: np.ndarray, lapt: np.ndarray) -> np.ndarray:
        """The action (5,) the planner takes from this state (its plan moves on one frame)."""
        if self.plan is not None:
            self.plan = self.plan.shifted(1)
        acts, _ = self.replan(fs, ist, lapt)
        return acts[0].copy()

    def step_plan(self, k: int) -> None:
        """The first ``k`` frames of the plan were executed: move it on."""
        if self.plan is not None:
            self.plan = self.plan.shifted(k)


def start_state(track: str, laps: int, seed: int) -> KartBatch:
    """One kart at the start exactly as ``envs.kartsim.make(track, seed=seed, laps=laps).reset()`` puts it."""
    from gymnasium.utils import seeding

    sim = KartBatch(1, track, laps=laps, render=False)
    rng, _ = seeding.np_random(seed)
    sim.reset_kart(0, rng)
    return sim


def plan_race(track: str, laps: int = 3, seed: int = 0, config: PlannerConfig | None = None,
              planner_seed: int = 0, progress=None) -> dict:
    """Plan a whole race from the start of ``make(track, seed=seed, laps=laps)``.

    Returns the figures and ``actions`` (frames, 5) float32. ``progress(lap, laps, t)`` is called
    each time a lap is completed (the CLI's progress line)."""
    cfg = config or PlannerConfig()
    t0 = time.perf_counter()
    sim = start_state(track, laps, seed)
    planner = Planner(track, laps, cfg, planner_seed)
    actions: list[np.ndarray] = []
    lap = 0
    done = False
    while not done:
        acts, _ = planner.replan(sim.fs[0], sim.ist[0], sim.lapt[0])
        for k in range(cfg.replan_every):
            a = acts[k]
            _, term, trunc = sim.step(a[None])
            actions.append(a.copy())
            if term[0] or trunc[0]:
                done = True
                break
        planner.step_plan(cfg.replan_every)
        if progress is not None and int(sim.ist[0, P.LAP]) > lap:
            lap = int(sim.ist[0, P.LAP])
            progress(lap, laps, time.perf_counter() - t0)
    info = sim.info(0)
    times = [float(t) for t in info["lap_times"]]
    return {"track": track, "seed": seed, "laps": laps, "lap_times": times,
            "best_lap_s": min(times) if times else None, "race_time_s": float(info["race_time"]),
            "finished": bool(info["finished"]), "falls": int(info["falls"]),
            "mini_turbos": int(info["mini_turbos"]), "frames": len(actions),
            "plan_time_s": time.perf_counter() - t0, "rollouts": planner.rollouts,
            "planner": {**cfg.to_dict(), "seed": planner_seed},
            "actions": np.array(actions, np.float32).reshape(-1, 5)}


def edge_clearance(track: str, actions: np.ndarray, laps: int, seed: int = 0) -> tuple[float, float]:
    """Replay ``actions`` from ``make(track, seed=seed, laps=laps)``'s start: the kart centre's least distance
    inside the road edge (units, negative: off the road) and the share of frames on the road within 0.5 units
    of its edge (falls and respawns not counted)."""
    sim = start_state(track, laps, seed)
    least, near, n = np.inf, 0, 0
    for a in np.asarray(actions, np.float32).reshape(-1, 5):
        _, term, trunc = sim.step(a[None])
        if sim.fs[0, P.FALL] <= 0.0 and sim.fs[0, P.HOLD] <= 0.0:
            d = float(sim.inside_edges()[0])
            least = min(least, d)
            near += int(0.0 <= d < NEAR_EDGE_U)
            n += 1
        if term[0] or trunc[0]:
            break
    return float(least), near / max(n, 1)


def lap_gap(best: float, other: float) -> float:
    """How much faster ``best`` is than ``other``, as a fraction of ``other``."""
    return (other - best) / other if other and math.isfinite(other) else float("nan")
