"""Ray backend: the environments as Ray actors, the learner on the driver.

``RayBackend`` implements the learner's ``VecEnvBackend`` (envs/vecenv.py)
by splitting ``num_envs`` into contiguous slices, one per actor; each actor
builds the *inner* backend (``kartsim``, ``mk64``, ...) for its slice. A step
scatters the action slices, gathers the results and concatenates them, so
the learner sees one vector env. Actions are computed on the driver with the
current weights at every step, so the acting policy is never behind: the
policy lag is 0 updates by construction (reported as such).

Emulator actors ask for a custom resource (``--ray-resource``, default
``mupen`` for emulator backends), one unit per emulator in their slice, so
they land only on machines started with ``ray start --resources='{"mupen": N}'``
(N emulators, about one per core), i.e. ones that have mupen64plus, the
plugin and the ROM. An actor that dies is replaced by a fresh one on the
same slice; that slice's episodes are truncated and the run goes on.

Use: ``python -m train.finetune --env NAME --ray auto|ADDRESS|local`` (``Config.ray``):
the trainer builds its training envs as a ``RayBackend`` over ``--env``'s backend
and its small evaluation envs in the driver process, so evaluation never waits
for cluster slots the training actors hold. Ray is the optional extra
``make setup EXTRAS=ray``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from envs.vecenv import StepResult, VecEnvBackend
from train.finetune.envs import EMULATOR_BACKENDS, make_backend

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def _require_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--ray needs the optional Ray extra: make setup EXTRAS=ray "
                          "(pip install 'ray[default]==2.60.0')") from exc
    return ray


def _inner_backend(inner, **kw) -> VecEnvBackend:
    """Build the inner backend in the actor's process: a ``--env`` name or ``"module:factory"``
    (``train.finetune.envs.make_backend``), or a factory callable (shipped to the actor by value)."""
    return inner(**kw) if callable(inner) else make_backend(inner, **kw)


class EnvSlice:
    """The actor body: one inner backend over a slice of the envs."""

    def __init__(self, inner, kw: dict):
        self.backend = _inner_backend(inner, **kw)
        self.pid = os.getpid()

    def where(self) -> dict:
        import socket

        import ray

        return {"host": socket.gethostname(), "pid": self.pid, "node": ray.get_runtime_context().get_node_id()}

    def reset(self, seed):
        return self.backend.reset(seed=seed)

    def step(self, actions):
        t0 = time.perf_counter()
        res = self.backend.step(actions)
        res.info["env_s"] = time.perf_counter() - t0
        return res

    def has_expert(self) -> bool:
        return self.backend.has_expert

    def has_state(self) -> bool:
        return self.backend.has_state

    def state(self):
        return self.backend.state()

    def expert_actions(self):
        return self.backend.expert_actions()

    def close(self):
        self.backend.close()


@functools.cache
def _actor_class():
    ray = _require_ray()
    return ray.remote(max_restarts=0)(EnvSlice)


LOOPBACK = "127.0.0.1"
_RAY_CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's own switch (read when ray is imported)


@contextlib.contextmanager
def _loopback_node():
    """While a local Ray starts: keep its node on 127.0.0.1.

    On Linux Ray replaces a node address of 127.0.0.1 by the machine's network address (so that other
    machines could join) unless its cluster mode is off, as it is on macOS and Windows. A local Ray is
    one node that nobody joins: turn that mode off for the start (the flag, read when ray was imported,
    and the variable its child processes read), so the node advertises, and is reached at, loopback
    only; then restore both, so a later ``ray.init(address=...)`` in this process behaves as usual."""
    from ray._private import ray_constants

    old_flag, old_var = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_RAY_CLUSTER_VAR)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_RAY_CLUSTER_VAR] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_var is None:
            os.environ.pop(_RAY_CLUSTER_VAR, None)
        else:
            os.environ[_RAY_CLUSTER_VAR] = old_var


def init_ray(address: str | None = "auto", num_cpus: int | None = None, object_store_mb: int = 200,
             resources: dict | None = None):
    """Connect to Ray (``auto``, ``host:port``, ``ray://...``) or start a small
    local one (``local``; ``resources`` such as ``{"mupen": 4}`` mark this
    machine as able to run emulators) on loopback only: no dashboard, node
    address 127.0.0.1. Returns True when this call started or connected it."""
    ray = _require_ray()
    if ray.is_initialized():
        return False
    env_vars = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for var in ("KARTPILOT_ROM", "KARTPILOT_STATE", "KARTPILOT_TEST_ROM", "KARTPILOT_PLUGIN"):
        if os.environ.get(var):
            env_vars[var] = os.environ[var]
    runtime_env = {"env_vars": env_vars}
    if address in (None, "local"):
        with _loopback_node():
            ray.init(num_cpus=num_cpus or 2, object_store_memory=object_store_mb * 1024 * 1024,
                     resources=resources, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False,
                     _node_ip_address=LOOPBACK)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return True


def split(num_envs: int, actors: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices, sizes differing by at most one."""
    if not 1 <= actors <= num_envs:
        raise ValueError(f"need 1 <= actors <= envs, got actors={actors}, envs={num_envs}")
    bounds = np.linspace(0, num_envs, actors + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class RayBackend(VecEnvBackend):
    def __init__(self, track: str = "rainbow", num_envs: int = 24, action_repeat: int = 4,
                 seed: int | None = 0, shaping=None, *, inner: str = "kartsim", address: str | None = "auto",
                 actors: int = 2, resource: str | None = None, cpus_per_actor: float = 1.0,
                 max_replacements: int = 20, place_timeout_s: float = 120.0, **inner_kw):
        ray = _require_ray()
        self._ray = ray
        self._owns_ray = init_ray(address)
        self.track, self.num_envs, self.action_repeat = track, num_envs, action_repeat
        self.inner, self._seed, self.max_replacements = inner, seed, max_replacements
        self.inner_name = inner if isinstance(inner, str) else getattr(inner, "__name__", repr(inner))
        if resource is None and inner in EMULATOR_BACKENDS:
            resource = "mupen"
        self.resource = resource
        self.cpus_per_actor = cpus_per_actor
        self.slices = split(num_envs, min(actors, num_envs))
        self._kw = dict(track=track, action_repeat=action_repeat, shaping=shaping, **inner_kw)
        self.replacements = 0
        self._actors = [self._spawn(k) for k in range(len(self.slices))]
        refs = [a.where.remote() for a in self._actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=place_timeout_s)
        if len(ready) < len(refs):
            self.close()
            need = {"CPU": cpus_per_actor, **({resource: max(self.slice_sizes)} if resource else {})}
            raise RuntimeError(f"only {len(ready)} of {len(refs)} Ray env actors started within "
                               f"{place_timeout_s:.0f} s: each needs {need}; the cluster has "
                               f"{ray.available_resources()} free (start nodes with e.g. "
                               f"ray start --resources='{{\"{resource or 'mupen'}\": 8}}')")
        self.placement = ray.get(refs)
        self.has_expert = ray.get(self._actors[0].has_expert.remote())
        self.has_state = ray.get(self._actors[0].has_state.remote())  # kart state rows (common.state)
        print(f"ray: {len(self._actors)} env actors x {self.slice_sizes} envs ({self.inner_name}) on "
              f"{sorted({p['host'] for p in self.placement})}; policy lag 0 updates (actions computed on "
              f"the driver every step)", file=sys.stderr)

    # ---- actors ----
    @property
    def slice_sizes(self) -> list[int]:
        return [b - a for a, b in self.slices]

    def _slice_seed(self, k: int, seed: int | None) -> int | None:
        # env i of the whole vector gets seed + i, as in one process
        return None if seed is None else seed + self.slices[k][0]

    def _spawn(self, k: int):
        a, b = self.slices[k]
        opts = {"num_cpus": self.cpus_per_actor}
        if self.resource:
            opts["resources"] = {self.resource: b - a}  # one unit per env: "mupen" counts emulators
        kw = {**self._kw, "num_envs": b - a, "seed": self._slice_seed(k, self._seed)}
        if isinstance(self.inner, str) and self.inner in EMULATOR_BACKENDS:  # emulator i of the whole vector on CPU i, as in one process
            kw["cpu_offset"], kw["cpu_count"] = a, self.num_envs
        return _actor_class().options(**opts).remote(self.inner, kw)

    def _replace(self, k: int, err: Exception, seed: int | None):
        self.replacements += 1
        log.warning("Ray env actor %d (envs %d..%d) died (%s); replacing it (%d so far)", k, *self.slices[k],
                    type(err).__name__, self.replacements)
        if self.replacements > self.max_replacements:
            raise RuntimeError(f"Ray env actors died {self.replacements} times; last: {err}") from err
        _kill(self._ray, self._actors[k])
        self._actors[k] = self._spawn(k)
        return self._ray.get(self._actors[k].reset.remote(self._slice_seed(k, seed)))

    def kill_actor(self, k: int, timeout: float = 30.0) -> None:
        """Kill actor ``k`` (tests, chaos drills) and wait until Ray reports it dead (``ray.kill``
        only asks: a call made at once could still be served); the next step replaces it."""
        actor = self._actors[k]
        self._ray.kill(actor, no_restart=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._ray.get(actor.where.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except self._ray.exceptions.GetTimeoutError:
                break
            except self._ray.exceptions.RayActorError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"Ray env actor {k} was not reported dead within {timeout:.0f} s of ray.kill")

    def stats(self) -> dict:
        return {"ray_actors": len(self._actors), "slice_per_actor": self.slice_sizes, "policy_lag": 0,
                "actor_replacements": self.replacements, "inner": self.inner_name, "resource": self.resource,
                "nodes": sorted({p["host"] for p in getattr(self, "placement", [])}),
                "node_ids": sorted({p["node"] for p in getattr(self, "placement", [])})}

    # ---- VecEnvBackend ----
    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        parts = []
        for k, ref in enumerate([a.reset.remote(self._slice_seed(k, seed)) for k, a in enumerate(self._actors)]):
            try:
                parts.append(self._ray.get(ref))
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorDiedError) as err:
                parts.append(self._replace(k, err, seed))
        return np.concatenate(parts)

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions, np.float32)
        refs = [a.step.remote(actions[lo:hi]) for a, (lo, hi) in zip(self._actors, self.slices, strict=True)]
        results = []
        for k, ref in enumerate(refs):
            try:
                results.append(self._ray.get(ref))
            except (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorDiedError) as err:
                obs = self._replace(k, err, None)
                n = len(obs)
                # the slice's episodes were cut short: truncated, no reward, fresh frames
                results.append(StepResult(obs, np.zeros(n, np.float32), np.zeros(n, bool), np.ones(n, bool),
                                          {"progress": np.zeros(n), "lap": np.zeros(n), "speed": np.zeros(n),
                                           "falls": np.zeros(n), "new_laps": []}))
        return self._merge(results)

    def _merge(self, results: list[StepResult]) -> StepResult:
        info: dict = {"new_laps": [], "policy_lag": np.zeros(self.num_envs)}
        for (lo, _), res in zip(self.slices, results, strict=True):
            info["new_laps"] += [(lo + i, sec) for i, sec in res.info.get("new_laps", [])]
        for key in ("progress", "lap", "speed", "falls"):
            info[key] = np.concatenate([np.asarray(r.info.get(key, np.zeros(len(r.reward))), np.float64)
                                        for r in results])
        info["env_s"] = max(float(r.info.get("env_s", 0.0)) for r in results)
        return StepResult(np.concatenate([r.obs for r in results]),
                          np.concatenate([r.reward for r in results]).astype(np.float32),
                          np.concatenate([r.terminated for r in results]),
                          np.concatenate([r.truncated for r in results]), info)

    def state(self) -> np.ndarray | None:
        """The kart state rows of the last returned observations, gathered from the actors (one more call
        per step, made only for a model that takes them); None where the inner backend has none."""
        if not self.has_state:
            return None
        return np.concatenate(self._ray.get([a.state.remote() for a in self._actors]))

    def expert_actions(self) -> np.ndarray:
        """The inner backend's scripted expert (where ``has_expert``)."""
        if not self.has_expert:
            raise NotImplementedError(f"the {self.inner_name} backend has no scripted expert")
        return np.concatenate(self._ray.get([a.expert_actions.remote() for a in self._actors]))

    def close(self) -> None:
        if self._actors:
            print(f"ray: closing {self.stats()}", file=sys.stderr)
        for a in self._actors:
            with contextlib.suppress(Exception):  # a dead actor has nothing left to close
                self._ray.get(a.close.remote(), timeout=30)
            _kill(self._ray, a)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()


def _kill(ray, actor) -> None:
    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)
