"""The live fine-tuning dashboard: a 4x2 grid of env feeds, throughput, episodes,
best lap, and the return and lap-time curves.

    GET /                   the page (static/finetune.html, plain JS, polls the two below)
    GET /api/stats          JSON: frames, frames/s, decisions/s, episodes, best lap, curves
    GET /api/feed/<i>.png   env i's latest model-view frame (i = 0..7)

Served by waitress on a background thread, 127.0.0.1 by default. The training
loop only hands over references (``on_step`` copies 8 frames at most 5 times a
second); PNG encoding happens on the server's threads when a browser asks.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time

import numpy as np
import waitress
from flask import Flask, Response, abort, jsonify
from PIL import Image
from waitress import wasyncore

FEEDS = 8  # 4 x 2 grid
STATIC = os.path.join(os.path.dirname(__file__), "static")


class Dashboard:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, feed_interval_s: float = 0.2):
        self.host, self._lock = host, threading.Lock()
        self.feed_interval_s = feed_interval_s
        self._frames: list[np.ndarray | None] = [None] * FEEDS
        self._last_feed = 0.0
        self._trainer = None
        self.app = self._make_app()
        self._server = waitress.create_server(self.app, host=host, port=port, threads=4, ident="finetune-dash")
        self.port = self._server.effective_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ---- hooks called by the trainer ----
    def attach(self, trainer) -> None:
        self._trainer = trainer

    def on_step(self, obs: np.ndarray, collector=None) -> None:
        now = time.monotonic()
        if now - self._last_feed < self.feed_interval_s:
            return
        self._last_feed = now
        with self._lock:
            for i in range(min(FEEDS, len(obs))):
                self._frames[i] = np.array(obs[i], np.uint8)

    def on_eval(self, rows, trainer) -> None:
        self._trainer = trainer

    # ---- what the page shows ----
    def stats(self) -> dict:
        t = self._trainer
        if t is None:
            return {"ready": False}
        hist, evals = list(t.history), list(t.evals)
        last = hist[-1] if hist else {}
        eval_laps = [e["best_lap_s"] for e in evals if e["track"] == t.cfg.track and e["best_lap_s"]]
        col = t.collector
        return {
            "ready": True,
            "track": t.cfg.track,
            "envs": t.env.num_envs,
            "frames": t.frames,
            "frames_target": t.cfg.frames,
            "updates": t.updates,
            "phase": last.get("phase", "starting"),
            "frames_per_s": last.get("frames_per_s"),
            "decisions_per_s": last.get("decisions_per_s"),
            "episodes": len(col.episodes),
            "best_lap_s": min(eval_laps) if eval_laps else None,
            "best_train_lap_s": min(col.laps) if col.laps else None,
            "baselines": {k: {"cloned": (v.get("cloned") or {}).get("best_lap_s"),
                              "expert": (v.get("expert") or {}).get("best_lap_s"),
                              "lower_bound_s": v.get("lower_bound_s"),
                              "planned_lap_s": v.get("planned_lap_s")} for k, v in t.baselines.items()},
            "returns": [[h["frames"], h["return_mean"]] for h in hist if h.get("return_mean") is not None],
            "reward_per_s": [[h["frames"], h["reward_per_s"]] for h in hist],
            "laps": {tr: [[e["frames"], e["best_lap_s"]] for e in evals if e["track"] == tr and e["best_lap_s"]]
                     for tr in t.cfg.eval_tracks},
        }

    def feed_png(self, i: int) -> bytes | None:
        with self._lock:
            frame = self._frames[i]
        if frame is None:
            return None
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    def _make_app(self) -> Flask:
        app = Flask(__name__, static_folder=STATIC, static_url_path="/static")

        @app.get("/")
        def page():
            resp = app.send_static_file("finetune.html")
            resp.headers["Cache-Control"] = "no-store"
            return resp

        @app.get("/api/stats")
        def api_stats():
            resp = jsonify(self.stats())
            resp.headers["Cache-Control"] = "no-store"
            return resp

        @app.get("/api/feed/<int:i>.png")
        def feed(i: int):
            if not 0 <= i < FEEDS:
                abort(404, f"feed {i} does not exist (0..{FEEDS - 1})")
            png = self.feed_png(i)
            if png is None:
                abort(404, f"feed {i}: no frame yet")
            return Response(png, mimetype="image/png", headers={"Cache-Control": "no-store"})

        return app

    # ---- server lifecycle ----
    def start(self) -> Dashboard:
        def serve():
            with contextlib.suppress(OSError, ValueError):  # map closed under select() by stop()
                self._server.run()

        self._thread = threading.Thread(target=serve, name="finetune-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self._server._map)
        if self._thread is not None:
            self._thread.join(timeout=5)
