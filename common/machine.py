"""The machine line every benchmark prints: CPU model, cores, and the ISA TensorFlow's oneDNN runs.

Two benchmark runs on different machines of "the same kind" can differ by 3x
(e.g. an AMD EPYC with AVX-512 against one without), so each benchmark prints
``machine_line()`` and puts ``machine_info()`` in its ``--json`` as ``machine``.

Fields of ``machine_info()``:

* ``cpu``: the model name from /proc/cpuinfo (``platform.processor()`` elsewhere);
* ``cores``: CPUs this process may run on (its affinity), ``cpus_online`` all of them;
* ``cpu_isa``: the widest x86 vector extensions the CPU reports (avx2, avx512f,
  avx512_vnni, avx512_bf16, amx_*), from /proc/cpuinfo flags;
* ``tensorflow``: the TensorFlow version, ``onednn_opts`` the
  ``TF_ENABLE_ONEDNN_OPTS`` setting (unset = TensorFlow's default, on for x86 Linux);
* ``onednn``, ``onednn_isa``: the oneDNN version and the ISA its kernels
  dispatch to on this CPU, as oneDNN itself reports it (``ONEDNN_VERBOSE=1``
  in a short child process that runs one convolution with this process's
  environment, so ``ONEDNN_MAX_CPU_ISA`` and ``TF_ENABLE_ONEDNN_OPTS`` apply);
  ``None`` when oneDNN is off or TensorFlow is not installed (``onednn_note`` says why).

The probe costs one TensorFlow import in a child process (a few seconds); the
result is cached for the process.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys

# flags worth naming, widest last within each family (what oneDNN's dispatcher looks at)
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

_PROBE = (
    "import tensorflow as tf\n"
    "x = tf.ones((1, 16, 16, 3)); k = tf.ones((3, 3, 3, 8))\n"
    "tf.nn.conv2d(x, k, 1, 'SAME').numpy(); tf.matmul(tf.ones((8, 8)), tf.ones((8, 8))).numpy()\n"
    "print('tensorflow-version', tf.__version__)\n"
)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = val.split()
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def probe_onednn(timeout: float = 120.0) -> dict:
    """Run one convolution in a child process with ``ONEDNN_VERBOSE=1``; parse what oneDNN says."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"tensorflow": None, "onednn": None, "onednn_isa": None, "onednn_note": f"probe failed: {exc}"}
    text = proc.stdout + proc.stderr
    out: dict = {"tensorflow": None, "onednn": None, "onednn_isa": None}
    m = re.search(r"tensorflow-version (\S+)", text)
    if m:
        out["tensorflow"] = m.group(1)
    m = re.search(r"onednn_verbose,(?:v\d+,)?info,oneDNN (v[\d.]+)", text)
    if m:
        out["onednn"] = m.group(1)
    m = re.search(r"onednn_verbose,(?:v\d+,)?info,cpu,isa:([^\n]+)", text)
    if m:
        out["onednn_isa"] = m.group(1).strip()
    m = re.search(r"onednn_verbose,(?:v\d+,)?info,cpu,runtime:(\w+),nthr:(\d+)", text)
    if m:
        out["onednn_runtime"], out["onednn_threads"] = m.group(1), int(m.group(2))
    if out["tensorflow"] is None:
        tail = text.strip().splitlines()[-1:] or ["no output"]
        out["onednn_note"] = f"TensorFlow did not run in the probe: {tail[0][:200]}"
    elif out["onednn_isa"] is None:
        out["onednn_note"] = "oneDNN did not run (TF_ENABLE_ONEDNN_OPTS=0, or a build without it): Eigen kernels"
    return out


@functools.cache
def machine_info(tensorflow: bool = True) -> dict:
    """CPU model, cores, CPU vector ISA and (``tensorflow=True``) TensorFlow's oneDNN ISA; cached."""
    model, flags = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    info = {
        "cpu": model,
        "cores": cores,
        "cpus_online": os.cpu_count(),
        "cpu_isa": [f for f in _ISA_FLAGS if f in flags],
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
    if tensorflow:
        info.update(probe_onednn())
    return info


def machine_line(info: dict | None = None) -> str:
    """One human line: ``machine: AMD EPYC, 2 cores (avx2 avx512f ...); TensorFlow 2.21.0, oneDNN v3.7 ISA ...``."""
    info = machine_info() if info is None else info
    isa = " ".join(f for f in info["cpu_isa"] if f not in ("sse4_2", "fma")) or "no AVX"
    line = f"machine: {info['cpu']}, {info['cores']} cores ({isa})"
    if "tensorflow" in info:
        if info.get("tensorflow"):
            line += f"; TensorFlow {info['tensorflow']}"
            if info.get("onednn_isa"):
                line += f", oneDNN {info.get('onednn') or ''} ISA: {info['onednn_isa']}".replace("  ", " ")
            else:
                line += f", {info.get('onednn_note', 'oneDNN off')}"
        else:
            line += f"; {info.get('onednn_note', 'no TensorFlow')}"
        line += f" (TF_ENABLE_ONEDNN_OPTS={info['onednn_opts']})"
    return line


def main() -> int:
    import json

    info = machine_info()
    print(machine_line(info))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
