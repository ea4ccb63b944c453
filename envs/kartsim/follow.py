"""The planned-line follower: a closed-loop driver of the planner's line and timings.

The planner relabels every state by a fresh sampled search, so the labels of
nearby frames can disagree (a drift or not), and cloning them failed (the
table in the README). The follower is a teacher with the planner's speed that
is a plain function of the state, like the expert:

* its **line** is the path the planner's kart drove over its best lap of a
  movie (the movie is replayed, so the path is exact); the kart moves along
  its heading, so the path's curvature is the planner's own yaw rate over
  speed, frame by frame, and is the steering feed-forward;
* its **commands** along that line are the planner's, per line sample: the
  pedal (A, coast or B), and the planner kart's phase (on the ground, in a hop,
  drifting) with the drift's side: it hops where the planner's kart is in the
  air or drifting, lands to the planner's side and lets go where the planner's
  drift ends (or sooner, when the drift carries it inside the line);
* steering is the expert's law (curvature feed-forward plus a Stanley-style
  correction of heading and sideways error, in drift or not), so off the line
  it steers back to it.

``PlannedLine.from_movie`` builds it from any movie, ``PlannedLine.plan`` from a
fresh plan made with ``PlannerConfig(edge=EDGE)``: the fastest planned race runs
within 0.5 units of rainbow's void edge for a fifth of its lap, a line no
closed-loop driver holds, while one kept 1.2 units inside costs about 1%
(measured in the README). ``PlannedLine.actions(fs, ist)`` drives a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from . import kart as K
from . import physics as P
from .expert import _wrap, drift_stick, line_steer
from .line import Line, nearest_points
from .track import Track

PEDAL_A, PEDAL_COAST, PEDAL_B = 0, 1, 2
PHASE_GROUND, PHASE_HOP, PHASE_DRIFT = 0, 1, 2  # the planner's kart after each frame
EDGE = 1.2  # the planner's edge setting for a line to follow: its race keeps 1.2 units inside void edges
SLACK = 1.0  # a drift is let go when it has carried the kart this far (units) inside the line (twice that uncharged)


@nb.njit(cache=True)
def follow_batch(fs, ist, out, lxy, lhead, lkap, lnrm, of_centre, ds, pedal, phase, side, slack):
    """Actions (N, 5) for karts in ``fs``/``ist``, following the line with its commands."""
    for n in range(fs.shape[0]):
        out[n, :] = 0.0
        if fs[n, P.FALL] > 0.0 or fs[n, P.HOLD] > 0.0:
            out[n, 2] = 1.0
            continue
        th, v = fs[n, P.TH], fs[n, P.V]
        j, look, e, w_ccw, wmax = line_steer(fs, ist, n, lxy, lhead, lkap, lnrm, of_centre, ds, 0.0)
        dd = ist[n, P.DDIR]
        r = 0
        if dd != 0:
            steer, _ = drift_stick(w_ccw, wmax, dd)
            r = 1 if phase[look] == PHASE_DRIFT and side[look] == dd else 0  # release where the planner did
            if -dd * e > (slack if fs[n, P.CHARGE] >= K.MT_CHARGE else 2.0 * slack):
                r = 0  # carried this far to the drift's inside of the line: let it go
            if r == 0:
                steer = -w_ccw / wmax
        else:
            steer = -w_ccw / wmax
            if fs[n, P.HOP] > 0.0:
                if fs[n, P.HOP] - K.DT <= 0.0:  # landing this frame: the stick picks the drift's side
                    if side[look] != 0:
                        r = 1
                        steer = side[look] * max(0.4, steer * side[look])
                else:
                    r = 1
            elif phase[look] != PHASE_GROUND and v > K.DRIFT_MIN_V + 2.0:
                r = 1  # hop where the planner is in the air or drifting: rejoin its drift
        if abs(_wrap(lhead[j] - th)) > 1.6:
            out[n, 2] = 1.0 if v < 1.5 else 0.0  # facing the wrong way: stop, then turn round
            out[n, 3] = 1.0 if v > 2.5 else 0.0
            out[n, 0] = 0.0 if v > 2.5 else (1.0 if _wrap(lhead[j] - th) < 0 else -1.0)
            continue
        out[n, 0] = min(1.0, max(-1.0, steer))
        p = pedal[look]
        if p == PEDAL_A:
            out[n, 2] = 1.0
        elif p == PEDAL_B:
            out[n, 3] = 1.0
        out[n, 4] = 1.0 if r != 0 else 0.0


@dataclass
class PlannedLine:
    """The planner's driven line over one lap, with its commands per line sample."""

    track: Track
    line: Line
    pedal: np.ndarray  # (M,) int64: PEDAL_A / PEDAL_COAST / PEDAL_B
    phase: np.ndarray  # (M,) int64: PHASE_GROUND / PHASE_HOP / PHASE_DRIFT of the planner's kart
    side: np.ndarray  # (M,) int64: its drift's side (+1 right, -1 left), in a hop the side it lands to
    lap_s: float  # the planner's lap this line was taken from
    lap_index: int
    slack: float = SLACK

    @classmethod
    def from_movie(cls, movie: dict, track: str | None = None, src: str = "<movie>") -> PlannedLine:
        """The line of the movie's best lap (replayed in a plain KartBatch, physics only); ``src`` names the
        movie in errors."""
        from .movie import check_track
        from .planner import start_state
        from .track import resample_closed

        name = check_track(movie, src, track)
        sim = start_state(name, int(movie["laps"]), int(movie["seed"]))
        tr = sim.track
        rows = []
        for a in np.asarray(movie["actions"], np.float32):
            before = (sim.fs[0].copy(), sim.ist[0].copy())
            _, term, trunc = sim.step(a[None])
            rows.append((before[0], before[1], a, int(sim.ist[0, P.DDIR]), int(sim.fs[0, P.HOP] > 0.0)))
            if term[0] or trunc[0]:
                break
        times = [float(t) for t in sim.info(0)["lap_times"]]
        if not times:
            raise ValueError(f"{src}: the movie completes no lap: there is no line to follow")
        best = int(np.argmin(times))
        lap_rows = [r for r in rows if int(r[1][P.LAP]) == best and r[0][P.FALL] <= 0.0 and r[0][P.HOLD] <= 0.0]
        if len(lap_rows) < 20:
            raise ValueError(f"{src}: the movie's lap {best + 1} has too few frames to follow ({len(lap_rows)})")
        fs = np.array([r[0] for r in lap_rows])
        xy = fs[:, [P.X, P.Y]]
        th = np.unwrap(fs[:, P.TH])
        seg = np.hypot(*np.diff(xy, axis=0).T)
        # the kart moves along its heading: curvature is its heading change per unit distance
        kap_f = np.diff(th) / np.maximum(seg, 1e-6)
        kap_f = np.append(kap_f, kap_f[-1])
        acts = np.array([r[2] for r in lap_rows])
        ped = np.where(acts[:, 3] > 0.5, PEDAL_B, np.where(acts[:, 2] > 0.5, PEDAL_A, PEDAL_COAST))
        after = np.array([(r[3], r[4]) for r in lap_rows], np.int64)  # (drift side, in the air) after each frame
        ddir, air = after[:, 0], after[:, 1]
        ph = np.where(ddir != 0, PHASE_DRIFT, np.where(air != 0, PHASE_HOP, PHASE_GROUND))
        sd = ddir.copy()
        for i in range(len(sd) - 2, -1, -1):  # a hop carries the side of the drift it lands in
            if ph[i] == PHASE_HOP:
                sd[i] = sd[i + 1] if ph[i + 1] != PHASE_GROUND else 0
        lxy, length = resample_closed(xy, tr.ds)
        m = len(lxy)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        s_line = np.arange(m) * (length / m)
        k = np.clip(np.searchsorted(cum, s_line, side="right") - 1, 0, len(lap_rows) - 1)  # the frame at or before
        head = np.interp(s_line, cum, th)
        head = (head + np.pi) % (2 * np.pi) - np.pi
        kap = np.interp(s_line, cum, kap_f)
        nrm = np.column_stack([-np.sin(head), np.cos(head)])
        line = Line(lxy, head, kap, nrm, length / m, length, nearest_points(tr.xy, lxy))
        return cls(tr, line, ped[k].astype(np.int64), ph[k].astype(np.int64), sd[k].astype(np.int64), times[best], best)

    @classmethod
    def plan(cls, track: str, config=None, seed: int = 0, planner_seed: int = 0) -> PlannedLine:
        """Plan a 3-lap race of ``track`` (default: ``PlannerConfig(edge=EDGE)``) and follow its best lap."""
        from .movie import make_movie
        from .planner import PlannerConfig, plan_race

        cfg = config or PlannerConfig(edge=EDGE)
        movie = make_movie(plan_race(track, laps=3, seed=seed, config=cfg, planner_seed=planner_seed), track)
        return cls.from_movie(movie, track)

    def actions(self, fs: np.ndarray, ist: np.ndarray) -> np.ndarray:
        out = np.zeros((fs.shape[0], 5), np.float32)
        ln = self.line
        follow_batch(fs, ist, out, ln.xy, ln.heading, ln.kappa, ln.nrm, ln.of_centre, ln.ds,
                     self.pedal, self.phase, self.side, self.slack)
        return out


def run_follower(track: str, laps: int = 3, seed: int = 0, line: PlannedLine | None = None) -> dict:
    """Drive ``laps`` laps with the follower (physics only): lap times, falls, mini-turbos."""
    from .sim import KartBatch

    pl = line or PlannedLine.plan(track)
    sim = KartBatch(1, track, laps=laps, render=False)
    sim.reset_kart(0, np.random.default_rng(seed))
    done = False
    while not done:
        _, term, trunc = sim.step(pl.actions(sim.fs, sim.ist))
        done = bool(term[0] or trunc[0])
    info = sim.info(0)
    times = [round(float(t), 3) for t in info["lap_times"]]
    return {"track": track, "lap_times": times, "best_lap_s": min(times) if times else None,
            "falls": int(info["falls"]), "mini_turbos": int(info["mini_turbos"]), "finished": bool(info["finished"]),
            "planned_lap_s": round(pl.lap_s, 3)}
