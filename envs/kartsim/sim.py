"""KartBatch: N karts on one track, stepped and rendered together.

Both the single env (N = 1) and VecKartSim use it, so they agree step for step.
MultiTrackBatch: N karts each on its own track (one KartBatch of 1 per kart,
sharing N-row state arrays), with the same interface.
"""

from __future__ import annotations

import numpy as np

from common.action import clip_batch

from . import physics as P
from .render import Renderer
from .reward import RewardConfig
from .texture import CLASS_OF
from .track import CELL, NEAR_CELL, load

START_S = 2.0  # the grid: just past the start/finish line
JITTER_LAT, JITTER_HEAD = 1.0, 0.03  # seeded start jitter (units, rad)


def _state_arrays(b) -> None:
    """The per-kart state a batch of ``b.n`` karts keeps (``fs``, ``ist``, lap times, reward,
    finish flags, frames): one layout for KartBatch and MultiTrackBatch."""
    b.fs = np.zeros((b.n, P.NF), np.float64)
    b.ist = np.zeros((b.n, P.NI), np.int64)
    b.lapt = np.zeros((b.n, b.laps), np.float64)
    b.rew = np.zeros(b.n, np.float64)
    b.fin_now = np.zeros(b.n, np.int64)
    b.obs = np.zeros((b.n, *b.size, 3), np.uint8)


class KartBatch:
    def __init__(self, num: int, track="luigi", size=(240, 320), laps: int = 3,
                 reward: RewardConfig | dict | None = None, max_time_s: float | None = None,
                 render: bool = True):
        if laps < 1:
            raise ValueError(f"laps must be >= 1, got {laps}")
        self.track = load(track)
        self.n = int(num)
        self.laps = int(laps)
        self.reward = reward if isinstance(reward, RewardConfig) else RewardConfig.from_dict(reward)
        self.rw = self.reward.weights()
        if max_time_s is None:  # generous: a slow human (5 units/s on average) still finishes
            max_time_s = 60.0 + self.laps * self.track.length / 5.0
        self.max_time_s = float(max_time_s)
        if len(size) != 2 or int(size[0]) < 8 or int(size[1]) < 8:
            raise ValueError(f"size must be (height, width) of at least 8 pixels each, got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        _state_arrays(self)
        self.renderer = Renderer(self.track, self.size) if render else None
        t = self.track
        self._half = np.ascontiguousarray(t.width / 2.0)
        self._args = (t.xy, t.heading, t.s, t.tex, CLASS_OF, t.origin[0], t.origin[1], 1.0 / CELL,
                      t.near, t.near_origin[0], t.near_origin[1], NEAR_CELL, t.cp_s, t.cp_idx,
                      t.length, t.offroad_speed, t.void, self.laps, self.rw)

    def set_reward(self, reward: RewardConfig | dict) -> None:
        """Change the reward weights from the next step on (a schedule over a training run)."""
        self.reward = reward if isinstance(reward, RewardConfig) else RewardConfig.from_dict(reward)
        self.rw[:] = self.reward.weights()  # in place: the stepping arguments hold this array

    def reset_kart(self, n: int, rng: np.random.Generator) -> None:
        t = self.track
        idx = int(round(START_S / t.ds)) % len(t.xy)
        self.fs[n] = 0.0
        self.ist[n] = 0
        self.lapt[n] = 0.0
        P.place(self.fs, self.ist, n, idx, t.xy, t.heading)
        lat = rng.uniform(-1.0, 1.0) * min(JITTER_LAT, t.width[idx] / 6)
        self.fs[n, P.X] += lat * t.nrm[idx, 0]
        self.fs[n, P.Y] += lat * t.nrm[idx, 1]
        self.fs[n, P.TH] += rng.uniform(-1.0, 1.0) * JITTER_HEAD
        self.fs[n, P.PROG] = t.s[idx]
        self.ist[n, P.CPN] = 1
        self.ist[n, P.LASTCP] = 0

    def step(self, actions: np.ndarray):
        """Advance every kart one logic step; returns (reward, terminated, truncated)."""
        act = clip_batch(np.nan_to_num(np.asarray(actions, np.float32).reshape(self.n, 5)))  # NaN -> neutral
        P.step_batch(self.fs, self.ist, self.lapt, act, self.rew, self.fin_now, *self._args)
        if self.reward.edge and self.track.void:
            self.rew += self.reward.edge * self.edge_closeness()
        term = self.fin_now.astype(bool)
        trunc = (self.fs[:, P.T] >= self.max_time_s - 1e-9) & (self.ist[:, P.FIN] == 0)
        return self.rew.copy(), term, trunc

    def inside_edges(self) -> np.ndarray:
        """How far each kart's centre is inside the road edge, in track units (negative: off the road):
        the measure of ``plan``'s ``closest_to_edge_u`` and of the ``edge`` reward term."""
        t = self.track
        return np.array([P.inside_edge(self.fs, self.ist, i, t.xy, t.nrm, self._half) for i in range(self.n)])

    def edge_closeness(self) -> np.ndarray:
        """Per kart, what the ``edge`` reward term is paid times: 0 at ``edge_margin`` or more inside the
        road edge, rising linearly to 1 at the edge itself; 0 while the kart falls or waits for Lakitu."""
        m = self.reward.edge_margin
        near = np.clip((m - self.inside_edges()) / m, 0.0, 1.0)
        return np.where(self.ist[:, P.SURF] != P.SURF_FALLING, near, 0.0)

    def render(self) -> np.ndarray:
        if self.renderer is not None:
            self.renderer.draw(self.fs, self.ist, self.obs)
        return self.obs

    def infos(self) -> dict:
        """Info of every kart as arrays (lap_times and surface as object arrays)."""
        fs, ist, t = self.fs, self.ist, self.track
        lap = ist[:, P.LAP].copy()
        frac = (fs[:, P.PROG] - lap * t.length) / t.length
        lap_times = np.empty(self.n, dtype=object)
        surface = np.empty(self.n, dtype=object)
        for i in range(self.n):
            lap_times[i] = self.lapt[i, :min(int(lap[i]), self.laps)].tolist()
            surface[i] = P.SURFACES[int(ist[i, P.SURF])]
        return {
            "progress": np.clip(frac, 0.0, 1.0),
            "lap": lap,
            "lap_times": lap_times,
            "race_time": np.where(ist[:, P.FIN] != 0, fs[:, P.FINISH_T], fs[:, P.T]),
            "speed": fs[:, P.V].copy(),
            "surface": surface,
            "falls": ist[:, P.FALLS].copy(),
            "t": fs[:, P.T].copy(),
            "finished": ist[:, P.FIN] != 0,
            "checkpoint": ist[:, P.LASTCP].copy(),
            "drift": ist[:, P.DDIR].copy(),
            "charge": fs[:, P.CHARGE].copy(),  # the running drift's mini-turbo charge (kart.MT_CHARGE fires one)
            "boost": fs[:, P.BOOST] > 0,
            "mini_turbos": ist[:, P.MINITURBOS].copy(),  # fired this episode
        }

    def info(self, n: int) -> dict:
        """Info of kart ``n`` as plain Python values (same numbers as ``infos``)."""
        return {k: (v[n] if isinstance(v[n], (list, str)) else v[n].item()) for k, v in self.infos().items()}


class MultiTrackBatch:
    """N karts, kart ``i`` on ``tracks[i]``: one ``KartBatch(1)`` per kart whose state rows are
    views of shared (N, ...) arrays, so code written for a KartBatch (state save/restore, the
    expert, infos) works unchanged. Kart ``i`` steps exactly as ``KartBatch(1, tracks[i])``."""

    def __init__(self, tracks, size=(240, 320), laps: int = 3, reward=None, max_time_s=None,
                 render: bool = True):
        if not tracks:
            raise ValueError("tracks must name at least one track")
        self._kw = {"size": size, "laps": laps, "reward": reward, "max_time_s": max_time_s, "render": render}
        self.n = len(tracks)
        self.laps = int(laps)
        self.size = (int(size[0]), int(size[1]))
        _state_arrays(self)
        self.karts: list[KartBatch] = [None] * self.n  # type: ignore[list-item]
        for i, t in enumerate(tracks):
            self.set_track(i, t)

    @property
    def tracks(self):
        return [k.track for k in self.karts]

    def set_track(self, i: int, track) -> None:
        """Put kart ``i`` on ``track`` (it is then reset by ``reset_kart``)."""
        k = KartBatch(1, track, **self._kw)
        for name in ("fs", "ist", "lapt", "rew", "fin_now", "obs"):
            view = getattr(self, name)[i:i + 1]
            view[...] = 0
            setattr(k, name, view)
        self.karts[i] = k

    def set_reward(self, reward: RewardConfig | dict) -> None:
        """Change every kart's reward weights from the next step on (and of karts put on a track later)."""
        self._kw["reward"] = reward
        for k in self.karts:
            k.set_reward(reward)

    def reset_kart(self, n: int, rng: np.random.Generator) -> None:
        self.karts[n].reset_kart(0, rng)

    def step(self, actions: np.ndarray):
        act = np.asarray(actions, np.float32).reshape(self.n, 5)
        rew = np.zeros(self.n, np.float64)
        term = np.zeros(self.n, bool)
        trunc = np.zeros(self.n, bool)
        for i, k in enumerate(self.karts):
            r, te, tr = k.step(act[i:i + 1])
            rew[i], term[i], trunc[i] = r[0], te[0], tr[0]
        return rew, term, trunc

    def inside_edges(self) -> np.ndarray:
        return np.concatenate([k.inside_edges() for k in self.karts])

    def render(self) -> np.ndarray:
        for k in self.karts:
            k.render()
        return self.obs

    def infos(self) -> dict:
        parts = [k.infos() for k in self.karts]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
