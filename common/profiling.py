"""cProfile around a hot path, for finding where its time goes (the one home of it).

``Profiler`` wraps calls (one at a time, from any thread) in one cProfile
profile: ``drive --profile`` wraps each request the server handles,
``bench.envs --profile`` each lockstep step. ``dump`` writes the pstats file
atomically (``python -m pstats FILE`` or snakeviz read it), and ``top`` turns
it into rows a benchmark prints: the functions with the most cumulative time,
in milliseconds per profiled call.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import threading

from common.atomic import replacing


class Profiler:
    """One cProfile profile over many calls; ``calls`` counts them."""

    def __init__(self):
        self.profile = cProfile.Profile()
        self.calls = 0
        self._lock = threading.Lock()  # cProfile profiles one thread at a time: calls are serialised

    def call(self, fn, *args, **kwargs):
        with self._lock:
            self.profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                self.profile.disable()
                self.calls += 1

    def wsgi(self, app):
        """``app`` as a WSGI app whose every request is profiled: Flask builds the whole response
        inside the call; iterating its body (bytes already made) is left to the server as usual."""

        def profiled(environ, start_response):
            return self.call(app, environ, start_response)

        return profiled

    def dump(self, path: str | os.PathLike) -> str:
        """Write the pstats file (temp file + rename); returns the path."""
        with replacing(path) as tmp:
            self.profile.dump_stats(tmp)
        return os.fspath(path)

    def top(self, n: int = 12) -> list[dict]:
        return top(pstats.Stats(self.profile), self.calls, n)


def top(stats: pstats.Stats | str | os.PathLike, calls: int, n: int = 12) -> list[dict]:
    """The ``n`` functions with the most cumulative time: ``function`` (file:line(name)),
    ``cum_ms`` and ``self_ms`` per profiled call (``calls`` of them), ``ncalls`` per call."""
    if not isinstance(stats, pstats.Stats):
        stats = pstats.Stats(os.fspath(stats))
    per = max(calls, 1)
    rows = []
    for (path, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        where = f"{os.path.basename(path)}:{line}({name})" if line else name
        rows.append({"function": where, "cum_ms": round(ct / per * 1000, 4), "self_ms": round(tt / per * 1000, 4),
                     "ncalls": round(nc / per, 2)})
    rows.sort(key=lambda r: r["cum_ms"], reverse=True)
    return rows[:n]


def format_top(rows: list[dict], title: str) -> str:
    """The rows as an aligned text table under ``title``."""
    lines = [title, f"{'cum ms':>9} {'self ms':>9} {'calls':>7}  function"]
    lines += [f"{r['cum_ms']:9.4f} {r['self_ms']:9.4f} {r['ncalls']:7.2f}  {r['function']}" for r in rows]
    return "\n".join(lines)
