"""Environment throughput: the simulator, the real emulator, and the simulator over Ray.

    python -m bench.envs [--envs 24] [--steps 200] [--emu-steps 2000] --json
    -> sim_steps_per_s, emu_steps_per_s, emu_alone_steps_per_s, emu_of_alone, ray_sim_steps_per_s

sim: the learner's kartsim backend (66x200 frames, one game frame per step)
in this process. emu: 2 mupen64plus instances with the GPL test ROM through
our plugin (frames posted, telemetry read, lockstep), one poll per step. emu
alone: the same 2 instances, plugin and settings answered by a constant server
(testing/plugin_server.FastAnswerServer), polls per second: what mupen64plus can do
here, and ``emu_of_alone`` = emu over that (target >= 0.8). Both parts pin instance i
to CPU i as VecMupen does (``--no-pin``: neither). Where the gap goes:
``emu_env_cpu_ms_per_step`` (this process's CPU per lockstep step: bridge threads,
env, vector env) and ``emu_env_threads_ms_per_step`` (the same by thread: ``main``,
``process_request_thread`` = the bridges' handlers), ``emu_cpu_ms_per_frame`` and
``alone_emu_cpu_ms_per_poll`` (the mupen64plus processes' CPU per frame, in lockstep
and alone), split into user and system ms with context switches per frame
(``emu_*`` / ``alone_emu_*``). ``--profile FILE`` adds a cProfile of as many lockstep
steps again (the vector env's side). ray:
the same kartsim envs split over 2 Ray actors on a local Ray started here
(2 CPUs, small object store). All figures count env steps (one game frame per
env) per wall second over every env. A part whose tool is missing (ROM, mupen64plus,
Ray) reports null and why.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from common.cli import add_json, emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _self_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _task_usage(pid: int | str, tid: int | str) -> np.ndarray:
    """One thread's [run s (schedstat, ns exact), user s, system s, voluntary switches,
    involuntary switches] so far (zeros if it is gone)."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/schedstat") as fh:
            run = int(fh.read().split()[0]) / 1e9
        with open(f"{base}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        sw = {}
        with open(f"{base}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.endswith("ctxt_switches"):
                    sw[key] = int(value)
        return np.array([run, int(fields[11]) / tck, int(fields[12]) / tck,
                         sw.get("voluntary_ctxt_switches", 0), sw.get("nonvoluntary_ctxt_switches", 0)], float)
    except (OSError, IndexError, ValueError):
        return np.zeros(5)


def _proc_usage(pid: int) -> np.ndarray:
    """``_task_usage`` summed over the threads of process ``pid``."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return np.zeros(5)
    return sum((_task_usage(pid, t) for t in tids), np.zeros(5))


def _usage_per_frame(before: list[np.ndarray], after: list[np.ndarray], frames: int, prefix: str) -> dict:
    """The emulator processes' usage between two snapshots, per frame: CPU split into user and
    system time, and context switches (voluntary: it waited; involuntary: it was preempted)."""
    d = sum((a - b for a, b in zip(after, before, strict=True)), np.zeros(5)) / max(frames, 1)
    return {f"{prefix}_user_ms_per_frame": round(d[1] * 1000, 3), f"{prefix}_sys_ms_per_frame": round(d[2] * 1000, 3),
            f"{prefix}_voluntary_switches_per_frame": round(d[3], 2),
            f"{prefix}_involuntary_switches_per_frame": round(d[4], 2)}


def _thread_groups() -> dict[str, np.ndarray]:
    """This process's threads' usage, grouped: ``main``, the Python threads by their target
    (``process_request_thread``: the bridges' per-connection handlers; ``serve_forever``: their
    accept loops), and ``native`` (threads Python did not start: TensorFlow's, numba's)."""
    import threading

    names = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        name = t.name
        names[t.native_id] = ("main" if t is threading.main_thread()
                              else name[name.find("(") + 1:-1] if "(" in name else name.rstrip("0123456789:-"))
    groups: dict[str, np.ndarray] = {}
    for tid in os.listdir("/proc/self/task"):
        group = names.get(int(tid), "native")
        groups[group] = groups.get(group, np.zeros(5)) + _task_usage("self", tid)
    return groups


CPU = {}  # where the CPU went in the emulator parts (filled by bench_emu / bench_emu_alone)


def _rate(backend, steps: int, num_envs: int) -> float:
    backend.reset(seed=0)
    act = np.zeros((num_envs, 5), np.float32)
    act[:, 2] = 1.0
    for _ in range(5):  # warm-up (JIT, first frames)
        backend.step(act)
    t0 = time.perf_counter()
    for _ in range(steps):
        backend.step(act)
    return steps * num_envs / (time.perf_counter() - t0)


def bench_sim(envs: int, steps: int) -> float:
    from train.finetune.envs import make_backend

    b = make_backend("kartsim", track="luigi", num_envs=envs, action_repeat=1, seed=0)
    try:
        return _rate(b, steps, envs)
    finally:
        b.close()


def bench_emu(steps: int, instances: int = 2, profile: str | None = None, pin: bool = True) -> float:
    from envs.mupen.vector import VecMupen
    from testing.emulator import find_test_rom

    rom = find_test_rom()
    if rom is None:
        raise FileNotFoundError("GPL test ROM not found (KARTPILOT_TEST_ROM or ../shared/roms/)")
    vec = VecMupen(instances, rom=str(rom), profile="test", pin_cpus=pin)
    try:
        vec.reset(seed=0)
        act = np.zeros((instances, 5), np.float32)
        for _ in range(10):
            vec.step(act)
        pids = [e.emulator_pid for e in vec.envs]
        g0, u0 = _thread_groups(), [_proc_usage(p) for p in pids]
        c0, t0 = _self_cpu_s(), time.perf_counter()
        for _ in range(steps):
            vec.step(act)
        dt = time.perf_counter() - t0
        CPU["emu_env_cpu_ms_per_step"] = round((_self_cpu_s() - c0) / steps * 1000, 3)
        g1 = _thread_groups()
        CPU["emu_env_threads_ms_per_step"] = {k: round((v - g0.get(k, np.zeros(5)))[0] / steps * 1000, 3)
                                              for k, v in sorted(g1.items())}
        usage = _usage_per_frame(u0, [_proc_usage(p) for p in pids], steps * instances, "emu")
        CPU["emu_cpu_ms_per_frame"] = round(usage["emu_user_ms_per_frame"] + usage["emu_sys_ms_per_frame"], 3)
        CPU.update(usage)
        if profile:
            CPU["emu_profile"] = _profile_steps(vec, act, steps, profile)
        return steps * instances / dt
    finally:
        vec.close()


def _profile_steps(vec, act, steps: int, path: str) -> dict:
    """``steps`` more lockstep steps under cProfile (this thread: the vector env's send and collect;
    the bridge threads show in ``emu_env_threads_ms_per_step``), after the timed ones."""
    from common.profiling import Profiler, format_top

    prof = Profiler()
    for _ in range(steps):
        prof.call(vec.step, act)
    prof.dump(path)
    rows = prof.top()
    print(format_top(rows, f"bench.envs: profile of {steps} lockstep steps -> {path} (ms per step):"),
          file=sys.stderr, flush=True)
    return {"file": path, "steps": steps, "top": rows}


def bench_emu_alone(seconds: float, instances: int = 2, boot_polls: int = 60, pin: bool = True) -> float:
    """Polls/s of ``instances`` mupen64plus with bench_emu's settings, answered by a constant server."""
    import shutil
    import tempfile
    from pathlib import Path

    from common.mupen import spread_cpus
    from envs.mupen.env import MupenEnv
    from envs.mupen.process import Emulator, Xvfb
    from testing.emulator import find_test_rom
    from testing.plugin_server import FastAnswerServer

    rom = find_test_rom()
    if rom is None:
        raise FileNotFoundError("GPL test ROM not found (KARTPILOT_TEST_ROM or ../shared/roms/)")
    env = MupenEnv(str(rom), profile="test")  # not started: its settings, as MupenEnv._launch passes them
    server = FastAnswerServer(answer={"X_AXIS": 0, "Y_AXIS": 0}).start()
    work = Path(tempfile.mkdtemp(prefix="kp-bench-emu-alone-"))
    procs: list = []
    try:
        for i in range(instances):
            xvfb = Xvfb()
            procs.append(xvfb)
            procs.append(Emulator(env.rom, xvfb.display, server.port, work / f"run{i}", plugin=env.plugin,
                                  profile=env.profile.plugin_profile(), savestate=str(work / f"run{i}.st"),
                                  resolution=env.resolution, frame_size=env.frame_size,
                                  timeout_ms=env.timeout_ms, cpus=spread_cpus(i, instances) if pin else None))
        deadline = time.monotonic() + 120
        while server.requests < boot_polls * instances:  # both booted and polling
            if time.monotonic() > deadline or not all(e.alive() for e in procs if isinstance(e, Emulator)):
                raise RuntimeError(f"mupen64plus did not start polling ({server.requests} polls)")
            time.sleep(0.05)
        pids = [e.proc.pid for e in procs if isinstance(e, Emulator)]
        u0 = [_proc_usage(p) for p in pids]
        n0, t0 = server.requests, time.perf_counter()
        time.sleep(seconds)
        n, dt = server.requests - n0, time.perf_counter() - t0
        usage = _usage_per_frame(u0, [_proc_usage(p) for p in pids], n, "alone_emu")
        CPU["alone_emu_cpu_ms_per_poll"] = round(usage["alone_emu_user_ms_per_frame"]
                                                 + usage["alone_emu_sys_ms_per_frame"], 3)
        CPU.update(usage)
        return n / dt
    finally:
        for proc in reversed(procs):
            proc.close()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def bench_ray(envs: int, steps: int, actors: int = 2) -> float:
    import ray

    from train.finetune import ray_backend as rb

    rb.init_ray("local", num_cpus=actors, object_store_mb=100)
    try:
        b = rb.RayBackend(track="luigi", num_envs=envs, action_repeat=1, seed=0, inner="kartsim",
                          actors=actors, address="local")
        try:
            return _rate(b, steps, envs)
        finally:
            b.close()
    finally:
        ray.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.envs", description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", type=int, default=24, help="simulator envs (sim and ray)")
    p.add_argument("--steps", type=int, default=200, help="vector steps for sim and ray")
    p.add_argument("--emu-steps", type=int, default=2000,
                   help="vector steps for the 2 emulators (~8 s here, like --alone-seconds; default: %(default)s)")
    p.add_argument("--alone-seconds", type=float, default=10.0, help="seconds mupen64plus alone is counted")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let the scheduler move the emulators between CPUs (default: VecMupen's, one CPU per "
                   "instance, in both emulator parts)")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="after the timed emulator steps, as many again under cProfile; stats to FILE.prof")
    p.add_argument("--skip", nargs="*", default=[], choices=["sim", "emu", "ray"], help="parts to leave out")
    add_json(p)
    args = p.parse_args(argv)

    from common.machine import machine_info, machine_line

    print(machine_line(), flush=True)
    out: dict = {"bench": "envs", "machine": machine_info(), "envs": args.envs, "emu_instances": 2, "emu_pinned": args.pin,
                 "ray_actors": 2}
    parts = {"sim": lambda: bench_sim(args.envs, args.steps),
             "emu": lambda: bench_emu(args.emu_steps, profile=args.profile, pin=args.pin),
             "emu_alone": lambda: bench_emu_alone(args.alone_seconds, pin=args.pin),
             "ray": lambda: bench_ray(args.envs, args.steps)}
    keys = {"sim": "sim_steps_per_s", "emu": "emu_steps_per_s", "emu_alone": "emu_alone_steps_per_s",
            "ray": "ray_sim_steps_per_s"}
    for name, fn in parts.items():
        key = keys[name]
        if name.split("_")[0] in args.skip:
            out[key] = None
            continue
        print(f"bench.envs: {name} ...", file=sys.stderr, flush=True)
        try:
            out[key] = round(fn(), 1)
        except (ImportError, FileNotFoundError, RuntimeError) as exc:
            out[key] = None
            out[f"{name}_skipped"] = str(exc)
        print(f"bench.envs: {key} = {out[key]}", file=sys.stderr, flush=True)
    if out["emu_steps_per_s"] and out["emu_alone_steps_per_s"]:
        out["emu_of_alone"] = round(out["emu_steps_per_s"] / out["emu_alone_steps_per_s"], 3)
    out.update(CPU)  # the profile of the gap: env-side CPU per step, emulator CPU per frame both ways
    out["cpus"] = os.cpu_count()
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
