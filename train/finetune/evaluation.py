"""Evaluation during fine-tuning: the baselines, the periodic deterministic laps, and ``best.keras``.

Every ``eval_every`` updates the actor drives ``eval_laps`` deterministic laps
on each evaluation track (its own small envs, built in this process); the best
0-fall lap on the training track keeps ``best.keras``, from an evaluation with
no fall on any of its tracks (with ``eval_envs`` > 1 starts, the median of the
starts' best laps: a closed-loop lap is sensitive to the smallest perturbation,
so the luckiest start's lap would choose by luck). Training on a track
distribution, the selection track is a set ``T1+T2+...`` of its tracks driven
together (one env each): an evaluation counts when every env completed its laps
with no fall, scored by the mean lap. The baselines, once per
run: the scripted expert (where the backend has one, per frame as scripted)
and the cloned policy (the actor before any update).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from envs.vecenv import VecEnvBackend
from train.finetune.checkpoint import export_actor
from train.finetune.logs import RunLog
from train.finetune.rollout import evaluate
from train.finetune.settings import Config, track_set


def median_best_lap(res: dict) -> float | None:
    """The median over an evaluation's envs (its starts) of each one's best lap; None unless every
    env drove a lap (one start: its best lap)."""
    best = res.get("best_laps") or [res["best_lap_s"]]
    return None if any(b is None for b in best) else float(np.median(best))


STYLE_COLUMNS = ("path_u", "mean_speed_u_s", "boost_share", "charged_drift_share", "release_charge_median",
                 "closest_to_edge_u")
EVAL_SEED_OFFSET = 777  # evaluation envs are seeded apart from the training envs
NO_BOUND_LAP_S = 180.0  # evaluation cap per lap without a lower bound (the real game)


class Evaluator:
    def __init__(self, cfg: Config, net, make_env: Callable[..., VecEnvBackend], log: RunLog, on_eval=None):
        self.cfg, self.net, self.make_env, self.log, self.on_eval = cfg, net, make_env, log, on_eval
        self.evals: list[dict] = []  # one row per (evaluation, track)
        self.baselines: dict = {}
        self.best_lap = float("inf")  # the selection score of best.keras (a set: its mean lap)
        self._envs: dict[tuple[str, int], VecEnvBackend] = {}

    def env(self, track: str, repeat: int) -> VecEnvBackend:
        if (track, repeat) not in self._envs:
            members = track_set(track)
            n = self.cfg.eval_envs if members is None else len(members)
            self._envs[(track, repeat)] = self.make_env(track, n, repeat,
                                                        self.cfg.seed + EVAL_SEED_OFFSET)
        return self._envs[(track, repeat)]

    def lower_bound(self, track: str) -> float | None:
        """kartsim's lap-time bound (a set: its longest); other backends (the real game) have none."""
        if self.cfg.env != "kartsim":
            return None
        from envs import kartsim

        return max(float(kartsim.lower_bound_s(t)) for t in (track_set(track) or [track]))

    def planned_lap(self, track: str) -> float | None:
        """kartsim's planned best lap of ``track`` from the plan cache (``envs.kartsim plan``), the reference
        a learned lap is measured against; None for a set, another backend, or a track never planned."""
        if self.cfg.env != "kartsim" or track_set(track):
            return None
        from envs.kartsim.movie import planned_lap

        return planned_lap(track)

    def max_frames(self, track: str, fps: float) -> int:
        """Evaluation cap: --eval-max-s, or by default 2.5x the lower bound per lap (+10 s to start);
        without a bound (the real game) 3 minutes per lap."""
        if self.cfg.eval_max_s:
            return int(self.cfg.eval_max_s * fps)
        bound = self.lower_bound(track)
        per_lap = NO_BOUND_LAP_S if bound is None else 2.5 * bound
        return int((10.0 + self.cfg.eval_laps * per_lap) * fps)

    def _laps(self, track: str, repeat: int, net=None) -> dict:
        env = self.env(track, repeat)
        return evaluate(env, self.cfg.eval_laps, self.max_frames(track, env.fps), net)

    def run_baselines(self) -> dict:
        """Expert (per frame, as scripted) and cloned (this actor before any update) on every eval track."""
        if self.baselines:
            return self.baselines
        for track in self.cfg.eval_tracks:
            expert = self._laps(track, 1) if self.env(track, 1).has_expert else {}
            cloned = self._laps(track, self.cfg.action_repeat, self.net)
            self.baselines[track] = {"expert": expert, "cloned": cloned, "lower_bound_s": self.lower_bound(track),
                                     "planned_lap_s": self.planned_lap(track)}
        return self.baselines

    def run(self, updates: int, frames: int, trainer=None) -> list[dict]:
        """One evaluation of the actor on every eval track; keeps ``best.keras``; logs ``eval.csv``."""
        c = self.cfg
        rows, score = [], None
        for track in c.eval_tracks:
            if c.shaping_final is not None:  # `return` is counted with the reward the training pays now
                self.env(track, c.action_repeat).set_shaping(c.shaping_at(frames))
            res = self._laps(track, c.action_repeat, self.net)
            row = {"update": updates, "frames": frames, "track": track,
                   "best_lap_s": res["best_lap_s"], "median_best_lap_s": median_best_lap(res),
                   # the first start alone (the start --eval-envs 1 drives from): a several-start run's
                   # evaluations read as a one-start run's, beside their median (the actions come from a
                   # batch of N, whose round-off alone can move a closed-loop lap by a frame)
                   "first_start_lap_s": (res.get("best_laps") or [res["best_lap_s"]])[0],
                   "first_start_falls": (res.get("falls_per_env") or [res["falls"]])[0],
                   "mean_lap_s": res["mean_lap_s"],
                   "laps": res["laps"], "falls": res["falls"], "mini_turbos": res["mini_turbos"],
                   "return": res["return"],
                   # how the best lap was driven (kartsim): line, pace, boosting, drifts let go late
                   **{k: (res.get("style") or {}).get(k) for k in STYLE_COLUMNS}}
            rows.append(row)
            self.log.scalars(f"eval_{track}", row, frames)
            if track == c.select_track:
                score = self.score(track, res)
        if self.keeps(score, rows):
            self.best_lap = score
            export_actor(self.net, os.path.join(c.out, "best.keras"))
        self.evals += rows
        self.log.table("eval.csv", self.evals)
        if self.on_eval:
            self.on_eval(rows, trainer)
        return rows

    def keeps(self, score: float | None, rows: list[dict]) -> bool:
        """Whether this evaluation's policy replaces best.keras: a better score, and no fall on any
        evaluation track, even one whose laps are not the score (a held-out void track such as
        rainbow vetoes a policy that falls there; its lap times choose nothing)."""
        return score is not None and score < self.best_lap and not any(r["falls"] for r in rows)

    def score(self, track: str, res: dict) -> float | None:
        """What best.keras is chosen by (lower is better), or None when this evaluation cannot count:
        one track, its best lap without a fall (over several starts, --eval-envs, the median of the
        starts' best laps, each start with a lap: a steadier figure than the luckiest start's); a set,
        its mean lap when every env completed its laps without a fall."""
        if res["falls"] or not res["best_lap_s"]:
            return None
        members = track_set(track)
        if members is None:
            return median_best_lap(res) if len(res.get("best_laps", ())) > 1 else res["best_lap_s"]
        return res["mean_lap_s"] if res["laps"] >= len(members) * self.cfg.eval_laps else None

    # ---- checkpoint part ----
    def get_state(self) -> dict:
        return {"evals": self.evals, "baselines": self.baselines, "best_lap": self.best_lap}

    def set_state(self, state: dict) -> None:
        self.evals, self.baselines, self.best_lap = state["evals"], state["baselines"], state["best_lap"]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs = {}
