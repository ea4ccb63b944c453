"""The simulator as a game client: kartsim posts its frames to the drive server.

The same protocol as the C plugin (POST /<controller>, raw RGB body,
X-Frame / X-Frame-Index / X-Telemetry, keep-alive), so ``make drive SIM=1``
exercises the real server, modes and dashboard end to end without a ROM.
The answer's N64 JSON goes back through common.action.from_n64 into
``env.step``; ``"CMD": "reset"`` restarts the race.
"""

from __future__ import annotations

import http.client
import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

from common import action as act
from drive.client import DriveClient


class SimClientError(RuntimeError):
    """The server refused a frame or answered something unusable."""


class Window:
    """A pygame window showing what the kart sees (only where there is a display)."""

    def __init__(self, size: tuple[int, int], title: str, scale: int = 2):
        import pygame

        self.pg = pygame
        pygame.display.init()
        self.scale = scale
        self.screen = pygame.display.set_mode((size[1] * scale, size[0] * scale))
        pygame.display.set_caption(title)
        self.closed = False

    def show(self, frame: np.ndarray) -> None:
        pg = self.pg
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self.closed = True
        surf = pg.surfarray.make_surface(frame.swapaxes(0, 1))
        pg.transform.scale(surf, self.screen.get_size(), self.screen)
        pg.display.flip()

    def close(self) -> None:
        self.pg.display.quit()


def telemetry_header(info: dict) -> str:
    """kartsim's info -> ``name=value;...`` like the plugin's RDRAM profile: numbers only (the
    protocol's rule), so ``surface`` goes as its code, 0 road, 1 offroad, 2 falling."""
    from envs.kartsim.physics import SURFACES

    keys = ("progress", "lap", "speed", "surface", "falls", "t")
    parts = []
    for k in keys:
        v = info.get(k)
        if v is None:
            continue
        if k == "surface":
            v = SURFACES.index(v)
        parts.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
    return ";".join(parts)


def drive_sim(host: str, port: int, *, track: str = "luigi", laps: int = 1, controller: int = 0,
              size: tuple[int, int] = (240, 320), seed: int = 0, max_seconds: float | None = None,
              window: bool | None = None, progress: bool = True, timeout: float = 10.0) -> dict:
    """Race ``laps`` laps of kartsim with every action asked from the server at ``host:port``.

    ``window``: None = a window when DISPLAY is set. ``max_seconds``: game-time cap
    (default 180 s per lap). Returns lap times, falls, request counts and latencies.
    """
    from envs import kartsim

    env = kartsim.make(track, size=size, seed=seed, laps=laps)
    if window is None:
        window = bool(os.environ.get("DISPLAY"))
    view = Window(size, f"KartPilot drive: {track}") if window else None
    cap = max_seconds if max_seconds is not None else 180.0 * laps
    client = DriveClient(host, port, timeout=timeout)
    obs, info = env.reset(seed=seed)
    height, width = obs.shape[:2]
    latencies: list[float] = []
    resets = 0
    steps = 0
    laps_done = 0
    bar = tqdm(total=laps, desc=f"kartsim {track} via {host}:{port}", unit="lap", disable=not progress)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                status, data = client.post(controller, obs, index=steps, telemetry=telemetry_header(info))
            except (OSError, http.client.HTTPException) as exc:
                raise SimClientError(f"drive server {host}:{port} did not answer frame {steps}: {exc}") from exc
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise SimClientError(f"server answered {status} to frame {steps}: {data[:200]!r}")
            try:
                keys = json.loads(data)
                action = act.from_n64(keys)
            except (ValueError, act.ActionError) as exc:
                raise SimClientError(f"server answer to frame {steps} is not input-bot JSON: {data[:200]!r}") from exc
            if keys.get("CMD") == "reset":
                obs, info = env.reset()
                resets += 1
                laps_done = 0
                bar.reset()
                continue
            obs, _reward, terminated, truncated, info = env.step(action)
            steps += 1
            if info.get("lap", 0) > laps_done:
                bar.update(info["lap"] - laps_done)
                laps_done = info["lap"]
            if view is not None:
                view.show(obs)
                if view.closed:
                    break
            if terminated or truncated or info.get("t", 0.0) >= cap:
                break
    finally:
        bar.close()
        client.close()
        if view is not None:
            view.close()
        env.close()
    lat = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    lap_times = [float(t) for t in info.get("lap_times", [])]
    return {
        "track": track,
        "laps": laps,
        "laps_completed": int(info.get("lap", len(lap_times))),
        "lap_times": lap_times,
        "race_time": float(info.get("race_time", info.get("t", 0.0))),
        "falls": int(info.get("falls", 0)),
        "steps": steps,
        "resets": resets,
        "frame": [height, width],
        "client_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "client_p99_ms": round(float(np.percentile(lat, 99)), 3),
    }


def main(argv=None) -> int:
    """``python -m drive.simclient``: the simulator as a separate game process.

    ``python -m drive --sim`` runs it as a child: the kart, its window (pygame)
    and its HTTP client live in their own process, like the emulator, and never
    share a process with TensorFlow (SDL's display init crashes in one that loaded TF).
    """
    import argparse

    from common.cli import add_json, emit_json, reported, size_arg
    from common.defaults import DRIVE_PORT

    prog = "python -m drive.simclient"
    p = argparse.ArgumentParser(prog=prog, description=main.__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="drive server host (default: %(default)s)")
    p.add_argument("--port", type=int, default=DRIVE_PORT, help="drive server port (default: %(default)s)")
    p.add_argument("--track", default="luigi", help="kartsim track (default: %(default)s)")
    p.add_argument("--laps", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--controller", type=int, default=0, help="N64 port to poll as (default: %(default)s)")
    p.add_argument("--size", type=size_arg(8), default=(240, 320), metavar="HxW",
                   help="frame size, rows x columns (default: 240x320)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--max-seconds", type=float, default=None, help="game-time cap (default: 180 per lap)")
    p.add_argument("--headless", action="store_true", help="no window even if DISPLAY is set")
    add_json(p)
    a = p.parse_args(argv)
    with reported(prog, SimClientError, ValueError, OSError):  # ValueError: a bad --track
        res = drive_sim(a.host, a.port, track=a.track, laps=a.laps, controller=a.controller, size=a.size,
                        seed=a.seed, max_seconds=a.max_seconds, window=False if a.headless else None)
    if a.json:
        emit_json(res)
    else:
        for i, t in enumerate(res["lap_times"], 1):
            print(f"lap {i}: {t:.2f} s")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
