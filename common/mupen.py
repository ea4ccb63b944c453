"""mupen64plus, the one home: finding the emulator and our input plugin, the
plugin's settings, ROM byte order, and the one command line for every run.

Play (``python -m drive --rom``), RL (envs/mupen), the savestate helper, the
tests and the benchmarks all build their command with :func:`emulator_command`
and start it with :func:`launch`; :func:`common.proc.stop` stops it.

- The emulator: ``$KARTPILOT_MUPEN``, else ``mupen64plus`` on PATH, else
  ``/usr/games/mupen64plus`` (Debian's place).
- The plugin: an explicit path, else ``$KARTPILOT_PLUGIN``, else
  ``plugin_c/build/mupen64plus-input-kartpilot.so`` (``make plugin``).
- Plugin settings go on the command line as ``--set Input-KartPilot-ControlN[key]=value``
  (keys in plugin_c/README.md); :func:`plugin_sets` spells them.
- Savestates: the core writes one (gzip) from a thread after the VI that takes it, so a file
  read right after the save command can be part-written; :func:`savestate_whole` tells.
  ``--savestate`` at boot hangs the cached interpreter and the dynamic recompiler on some ROMs
  (mupen64plus-core issue 1089; the GPL test ROM is one): with our plugin, :func:`emulator_command`
  has the plugin load ``load_state`` at its first poll instead (``load_savestate``).
- ROMs come in three byte orders (.z64 big-endian, .v64 16-bit swapped, .n64
  32-bit little-endian); :func:`to_big_endian` turns any of them into the N64's own order.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugin_c"
PLUGIN_SO = PLUGIN_DIR / "build" / "mupen64plus-input-kartpilot.so"
MUPEN = "mupen64plus"
MUPEN_FALLBACK = "/usr/games/mupen64plus"
INSTALL_HINT = "apt-get install mupen64plus-ui-console mupen64plus-video-rice mupen64plus-rsp-hle"
GFX = "mupen64plus-video-rice"
RSP = "mupen64plus-rsp-hle"
DUMMY = "dummy"  # --input dummy: the core's own neutral controller (no plugin)
USER_INPUT = "user"  # no --input: the input plugin of the user's own configuration (keyboard, gamepad)

MAGIC_Z64 = bytes.fromhex("80371240")
MAGIC_V64 = bytes.fromhex("37804012")
MAGIC_N64 = bytes.fromhex("40123780")


class EmulatorError(RuntimeError):
    """mupen64plus, the plugin or Xvfb is missing, or failed to start (names what and why)."""


class RomError(ValueError):
    """A file that is not a usable N64 ROM, or not the ROM a profile needs."""


# ----------------------------------------------------------------------------- finding things
def find_mupen() -> str | None:
    """The ui-console front end: $KARTPILOT_MUPEN, PATH, /usr/games; None when not installed
    (or when $KARTPILOT_MUPEN names no executable)."""
    env = os.environ.get("KARTPILOT_MUPEN")
    if env:
        return shutil.which(env)
    exe = shutil.which(MUPEN)
    if exe:
        return exe
    return MUPEN_FALLBACK if os.access(MUPEN_FALLBACK, os.X_OK) else None


def require_mupen() -> str:
    """find_mupen(), or EmulatorError saying how to install it (or that $KARTPILOT_MUPEN is wrong)."""
    exe = find_mupen()
    if exe is not None:
        return exe
    env = os.environ.get("KARTPILOT_MUPEN")
    if env:
        raise EmulatorError(f"KARTPILOT_MUPEN={env} is not an executable mupen64plus")
    raise EmulatorError(f"mupen64plus is not installed ({INSTALL_HINT}; or set KARTPILOT_MUPEN)")


def find_plugin(path: str | os.PathLike | None = None) -> Path:
    """Our input plugin: ``path``, else $KARTPILOT_PLUGIN, else plugin_c/build/ (EmulatorError if absent)."""
    cand = Path(path or os.environ.get("KARTPILOT_PLUGIN") or PLUGIN_SO)
    if not cand.is_file():
        raise EmulatorError(f"input plugin {cand} not found: build it with `make plugin`")
    return cand.resolve()


def plugin_missing() -> str | None:
    """Why our plugin cannot be used (the find_plugin() message), or None when it is there."""
    try:
        find_plugin()
    except EmulatorError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- plugin settings
def section(controller: int = 0) -> str:
    """The plugin's config section for ``controller`` (0..3): ``Input-KartPilot-ControlN``."""
    if not 0 <= controller <= 3:
        raise ValueError(f"controller must be 0..3, got {controller}")
    return f"Input-KartPilot-Control{controller}"


def plugin_sets(settings: Mapping[str, object], controller: int = 0) -> dict[str, str]:
    """``{"port": 8082, ...}`` -> ``{"Input-KartPilot-Control0[port]": "8082", ...}``."""
    sec = section(controller)
    return {f"{sec}[{key}]": str(value) for key, value in settings.items()}


# ----------------------------------------------------------------------------- ROM byte order
def byte_order(data: bytes) -> str:
    """'z64', 'v64', 'n64' from the header magic, or 'unknown'."""
    return {MAGIC_Z64: "z64", MAGIC_V64: "v64", MAGIC_N64: "n64"}.get(bytes(data[:4]), "unknown")


def to_big_endian(data: bytes) -> bytes:
    """Any of the three byte orders -> .z64 (big-endian) order; RomError for anything else."""
    magic = bytes(data[:4])
    if magic == MAGIC_Z64:
        return bytes(data)
    if magic == MAGIC_V64:
        arr = bytearray(data[: len(data) // 2 * 2])
        arr[0::2], arr[1::2] = arr[1::2], arr[0::2]
        return bytes(arr)
    if magic == MAGIC_N64:
        n = len(data) // 4 * 4
        words = struct.unpack(f"<{n // 4}I", data[:n])
        return struct.pack(f">{n // 4}I", *words)
    raise RomError(f"not an N64 ROM: header magic {magic.hex()} is none of .z64/.v64/.n64")


def read_rom(path: str | os.PathLike) -> bytes:
    """The whole ROM in big-endian (.z64) order; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RomError(f"cannot read ROM {path}: {exc.strerror}") from exc
    try:
        return to_big_endian(data)
    except RomError as exc:
        raise RomError(f"ROM {path}: {exc}") from exc


# ----------------------------------------------------------------------------- the command line
def file_stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """(mtime_ns, size) of ``path``, None when it is missing: tells a file written anew."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def savestate_whole(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a whole mupen64plus savestate: a gzip stream that ends with its
    trailer (a part-written one ends early; the core creates it empty first, and gzip reads
    an empty file as nothing, without error). Decompresses it (16 MB for a .st, about 0.1 s)."""
    size = 0
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                return False
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                size += len(chunk)
    except (OSError, EOFError, zlib.error):  # missing, not gzip (BadGzipFile is an OSError), cut short
        return False
    return size > 0


def emulator_command(rom: str | os.PathLike, *, plugin: str | os.PathLike | None = None,
                     settings: Mapping[str, object] | None = None, sets: Mapping[str, object] | None = None,
                     config_dir: str | os.PathLike | None = None, headless: bool = True,
                     speed_limit: bool = False, gfx: str | None = None, emumode: int = 2,
                     resolution: str | None = None, load_state: str | os.PathLike | None = None,
                     testshots: int | str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The mupen64plus (ui-console) command line; raises EmulatorError naming what is missing.

    ``plugin``: None = our plugin (find_plugin()), a path to another build of it, ``DUMMY``
    (neutral input) or ``USER_INPUT`` (the user's configured input plugin, no ``--input``).
    ``settings``: our plugin's keys for controller 0 (``{"port": 8082, "frame": 1}``).
    ``sets``: any other ``Section[key]`` -> value.
    ``config_dir``: a private config folder (the user's ~/.config is never read or written);
    screenshots, savestates and SRAM then go to its ``shots/``, ``states/``, ``sram/`` (created here).
    ``headless``: no on-screen display, dummy audio, HLE RSP, Rice video unless ``gfx`` says
    otherwise, the dynamic recompiler (``emumode`` 2); False leaves all of it to the user's config.
    ``speed_limit``: False adds ``--nospeedlimit``. ``load_state``: the savestate to start from; our
    plugin loads it at its first poll (its ``savestate``, ``load_savestate``), the other input
    plugins get the core's ``--savestate`` (which can hang the recompilers: see the module doc).
    ``testshots``: frame numbers to screenshot (the core quits after the last).
    """
    if not Path(rom).is_file():
        raise EmulatorError(f"ROM not found: {rom}")
    cmd = [require_mupen(), "--nosaveoptions"]
    if headless:
        cmd += ["--noosd", "--audio", "dummy", "--rsp", RSP]
    if headless or gfx:
        cmd += ["--gfx", gfx or GFX]
    if headless:
        cmd += ["--emumode", str(emumode)]
    if not speed_limit:
        cmd.append("--nospeedlimit")
    if resolution:
        cmd += ["--resolution", resolution]
    all_sets: dict[str, object] = {}
    if config_dir is not None:
        cfg = Path(config_dir)
        cmd += ["--configdir", str(cfg)]
        for key, sub in (("ScreenshotPath", "shots"), ("SaveStatePath", "states"), ("SaveSRAMPath", "sram")):
            (cfg / sub).mkdir(parents=True, exist_ok=True)
            all_sets[f"Core[{key}]"] = f"{cfg / sub}/"
    if plugin == DUMMY:
        cmd += ["--input", DUMMY]
    elif plugin != USER_INPUT:
        cmd += ["--input", str(find_plugin(plugin))]
    ours = plugin not in (DUMMY, USER_INPUT)
    if load_state is not None and ours:
        settings = {**(settings or {}), "savestate": str(load_state), "load_savestate": True}
    if settings:
        if not ours:
            raise ValueError(f"plugin settings {sorted(settings)} need our plugin, not --input {plugin}")
        all_sets.update(plugin_sets(settings))
    all_sets.update(sets or {})
    for key, value in all_sets.items():
        cmd += ["--set", f"{key}={value}"]
    if load_state is not None and not ours:
        cmd += ["--savestate", str(load_state)]
    if testshots is not None:
        cmd += ["--testshots", str(testshots)]
    return [*cmd, *extra, str(rom)]


def launch(cmd: Sequence[str], *, display: str | None = None, log: str | os.PathLike | None = None,
           cwd: str | os.PathLike | None = None, dummy_audio: bool = True,
           cpus: Iterable[int] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (stop it with common.proc.stop).

    ``display``: the X display for its window (default: ours). ``log``: a file that gets its
    stdout and stderr, line-buffered so it can be read while it runs (default: our terminal).
    ``dummy_audio``: no sound device (headless runs). ``cpus``: the CPUs it (and every thread
    it starts: the emulation, the software rasteriser's) may run on (default: any)."""
    env = dict(os.environ)
    if display:
        env["DISPLAY"] = display
    if dummy_audio:
        env["SDL_AUDIODRIVER"] = "dummy"
    if cpus is not None:  # Mesa's llvmpipe sizes its rasteriser pool by the CPUs it may use:
        # keep the pool it has unpinned (with one CPU it rasterises inline, which is slower)
        env.setdefault("LP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    cmd = list(cmd)
    if log is None:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, start_new_session=True)
    else:
        if shutil.which("stdbuf"):
            cmd = ["stdbuf", "-oL", "-eL", *cmd]
        with open(log, "wb") as fh:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    if cpus is not None:
        pin(proc.pid, cpus)
    return proc


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Restrict process ``pid`` and its threads to ``cpus``. Popen returns once the child has
    exec'd, before the emulator starts any thread, so the threads it starts later inherit this."""
    cpus = set(cpus)
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that already ended
            os.sched_setaffinity(tid, cpus)


def spread_cpus(index: int, count: int) -> set[int] | None:
    """The CPU for emulator instance ``index`` of ``count`` (indices counted over the whole
    vector, across Ray actors' slices): the CPUs this process may use, one instance each.

    With one emulator per CPU, each keeps its caches (N64 RAM, recompiled code) warm between
    frames instead of being moved between cores while it waits for the env's answer. With more
    instances than CPUs, None (not pinned): a fixed round-robin would give some CPUs one more
    instance than others, and the lockstep waits for the most loaded one."""
    avail = sorted(os.sched_getaffinity(0))
    if count > len(avail):
        return None
    return {avail[index]}
