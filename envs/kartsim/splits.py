"""Split times: where along the lap a driver gains or loses time against another.

The lap is cut into ``sectors`` equal stretches of centreline progress (sector k
runs from ``k / n`` to ``(k + 1) / n`` of the lap, the finish line at 0). A
:class:`SplitTimer` is fed each frame's ``info`` (``lap``, ``progress``, ``t``,
``lap_times``) and gives every completed lap's sector times. A boundary is timed
at the first frame that reaches it, interpolated linearly in time between that
frame and the one before; the last sector ends where the env ended the lap, so a
lap's sector times add up to its lap time. A fall sends the kart back to a
checkpoint: the boundaries it had passed keep their first time, so the time lost
falls in the sector it fell in and the ones it drives again.

A :class:`LapStyle` is fed the same infos and the kart's position, and describes
how each completed lap was driven: the length of the line the kart drove, its
mean speed, the shares of the lap's frames spent boosting (a mini-turbo) and
drifting, the drifts begun and the mini-turbos fired, how long it drifted on a
charge already full and what charge its drifts ended with, and (given the kart's
distance inside the road edge) the closest it came to the edge and the share of
its frames within half a unit of it. A lap time is the line's length over the
mean speed, so two laps' styles say how much of a gap is the line and how much
the pace.

``movie_splits`` replays a kartsim movie (the planner's race) for its sectors;
``compare`` lines two best laps up sector by sector. Used by ``replay --json``
and by ``python -m train evaluate --against MOVIE``.
"""

from __future__ import annotations

import numpy as np

from common.defaults import SECTORS

from .kart import MT_CHARGE


def best_lap_index(measured: int, lap_times: list[float]) -> int | None:
    """The index of the fastest of the first ``measured`` laps that the env also timed (None: none)."""
    done = min(measured, len(lap_times))
    return int(np.argmin(lap_times[:done])) if done else None


class SplitTimer:
    """Sector times of each completed lap from per-frame ``info`` dicts of a kartsim env."""

    def __init__(self, sectors: int = SECTORS):
        if sectors < 1:
            raise ValueError(f"sectors must be >= 1, got {sectors}")
        self.n = int(sectors)
        self.laps: list[list[float]] = []  # completed laps: n sector times each
        self._reset_lap(0, 0.0, 0.0)

    def _reset_lap(self, lap: int, start: float, progress: float) -> None:
        self.lap, self.start, self.prev_p, self.prev_t = lap, start, progress, start
        self.cross: list[float] = []  # times the lap passed boundaries 1/n, 2/n, ...

    def see(self, info: dict) -> None:
        """Account one frame (the info an env step returned)."""
        lap, p, t = int(info["lap"]), float(info["progress"]), float(info["t"])
        if lap > self.lap:  # the env ended the lap on this frame, at time t
            while len(self.cross) < self.n - 1:  # boundaries passed within this very frame
                self.cross.append(t)
            edges = [self.start, *self.cross, t]
            self.laps.append([float(b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)])
            self._reset_lap(lap, t, p)
            return
        while len(self.cross) < self.n - 1 and p >= (k := (len(self.cross) + 1) / self.n):
            # first reached on this frame: interpolate from the frame before when it moved forward onto it
            self.cross.append(self.prev_t + (t - self.prev_t) * (k - self.prev_p) / (p - self.prev_p)
                              if self.prev_p < k < p else t)
        self.prev_p, self.prev_t = p, t

    def best(self, lap_times: list[float]) -> dict | None:
        """The best completed lap's sectors: ``{"lap": index, "lap_s", "sectors_s"}`` (None: no lap)."""
        i = best_lap_index(len(self.laps), lap_times)
        if i is None:
            return None
        return {"lap": i, "lap_s": float(lap_times[i]), "sectors_s": [round(s, 4) for s in self.laps[i]]}


NEAR_EDGE_U = 0.5  # "near the edge": the kart's centre within this of the road edge (plan's near_edge_share)


class LapStyle:
    """Per completed lap: the driven line's length (track units), mean speed, boost and drift shares,
    drifts begun and mini-turbos fired (a drift let go before its charge fires none), the share of
    frames drifting on a full charge (``MT_CHARGE`` reached: holding on only delays the boost, unless
    the turn needs the drift) and the median charge the lap's drifts ended with."""

    KEYS = ("surface", "speed", "boost", "drift", "charge", "lap", "mini_turbos")  # what ``see`` reads of an info

    def __init__(self):
        self.laps: list[dict] = []
        self.lap = 0
        self.drifting = False  # the last frame's
        self.charge = 0.0  # the last frame's mini-turbo charge
        self.mts_before = 0  # the env's mini-turbo count when this lap began
        self._reset()

    def _reset(self) -> None:
        self.frames = self.boost = self.drift = self.drifts = self.charged = self.edge_frames = self.near = 0
        self.releases: list[float] = []  # the charge each drift ended with
        self.path = self.speed = 0.0
        self.least = float("inf")
        self.prev: tuple[float, float] | None = None

    def see(self, info: dict, pos: tuple[float, float], edge: float | None = None) -> None:
        """Account one frame: the step from the last frame's position (none across a fall: the kart
        is put back on the road, which is no driving), its speed, boost and drift; ``edge``, how far
        the kart is inside the road edge (the env's ``inside_edge()``), for the closest it came and
        the share of its frames within ``NEAR_EDGE_U`` of the edge (falling frames not counted)."""
        falling = info["surface"] == "falling"
        if self.prev is not None and not falling:
            self.path += float(np.hypot(pos[0] - self.prev[0], pos[1] - self.prev[1]))
        self.prev = None if falling else (float(pos[0]), float(pos[1]))
        self.frames += 1
        self.speed += float(info["speed"])
        self.boost += bool(info["boost"])
        drifting = int(info["drift"]) != 0
        charge = float(info["charge"])
        self.drift += drifting
        self.drifts += drifting and not self.drifting  # a drift begins
        self.charged += drifting and charge >= MT_CHARGE  # drifting on a charge already full
        if self.drifting and not drifting:  # a drift ended: let go (or lost); the charge it had
            self.releases.append(self.charge)
        self.drifting, self.charge = drifting, charge
        if edge is not None and not falling:
            self.edge_frames += 1
            self.least = min(self.least, float(edge))
            self.near += 0.0 <= edge < NEAR_EDGE_U
        lap = int(info["lap"])
        if lap > self.lap:  # this frame ended the lap: it is the lap's last
            row = {"path_u": round(self.path, 2), "mean_speed_u_s": round(self.speed / self.frames, 3),
                   "boost_share": round(self.boost / self.frames, 4), "drift_share": round(self.drift / self.frames, 4),
                   "drifts": self.drifts, "mini_turbos": int(info["mini_turbos"]) - self.mts_before,
                   "charged_drift_share": round(self.charged / self.frames, 4),
                   "release_charge_median": round(float(np.median(self.releases)), 3) if self.releases else None}
            self.mts_before = int(info["mini_turbos"])
            if self.edge_frames:
                row.update(closest_to_edge_u=round(self.least, 3),
                           near_edge_share=round(self.near / self.edge_frames, 4))
            self.laps.append(row)
            prev = self.prev
            self._reset()
            self.prev, self.lap = prev, lap

    def best(self, lap_times: list[float]) -> dict | None:
        """The best completed lap's style, with its index ``lap`` and time ``lap_s`` (None: no lap)."""
        i = best_lap_index(len(self.laps), lap_times)
        if i is None:
            return None
        return {"lap": i, "lap_s": round(float(lap_times[i]), 4), **self.laps[i]}


def movie_splits(movie: dict, track: str | None = None, src: str = "<movie>", sectors: int = SECTORS) -> dict:
    """Replay ``movie`` in a plain env (as ``movie.replay`` does) and time its best lap's sectors."""
    from .movie import replay

    return replay(movie, track, src, sectors=sectors)["sectors"]


def compare(mine: dict, reference: dict) -> dict:
    """Two best laps' sectors (``SplitTimer.best`` dicts) side by side: ``delta_s`` per sector (mine minus the
    reference; positive: time lost), the lap's total and the sectors that lose most, largest first."""
    a, b = mine["sectors_s"], reference["sectors_s"]
    if len(a) != len(b):
        raise ValueError(f"sector counts differ: {len(a)} against the reference's {len(b)}")
    delta = [round(x - y, 4) for x, y in zip(a, b, strict=True)]
    order = sorted(range(len(delta)), key=lambda k: -delta[k])
    return {"delta_s": delta, "lap_delta_s": round(mine["lap_s"] - reference["lap_s"], 4),
            "worst_sectors": [k + 1 for k in order if delta[k] > 0][:3]}
