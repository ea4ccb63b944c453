"""MupenEnv: one mupen64plus instance as a Gymnasium environment.

Lockstep through the drive protocol: between steps the env holds the
plugin's latest poll unanswered, so the emulator waits. ``step(action)``
answers it with the action, answers ``action_repeat - 1`` more polls with the
same action, then holds the next poll: its frame is the observation. The
telemetry of every poll of the step (one per game frame) goes to the game
profile's tracker, so the reward is summed frame by frame and no short event
(a fall, a mini-turbo) falls between two steps; the info is the last poll's. ``reset()``
answers with ``"CMD": "reset"`` (the plugin loads the savestate) until the
plugin confirms it, lets ``settle_polls`` polls pass while the core loads it,
checks the core's log for its word that it did (a state it cannot read is an
EmulatorError naming the file), and holds the next poll. A new instance boots
the ROM and loads the state the same way at its first poll: the core's own
``--savestate`` at boot hangs its recompilers on some ROMs (the GPL test ROM
is one; mupen64plus-core issue 1089). ``save_state()`` returns once the core
has written the whole file (it writes from a thread after the VI).

A crashed or frozen emulator (process gone, or no poll for
``poll_timeout_s``) is restarted on a fresh display; the step that saw it
returns ``truncated=True`` with ``info["crashed"] = True``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from common.action import HIGH, LOW, to_n64
from common.mupen import EmulatorError, file_stamp, find_plugin, savestate_whole
from envs.mupen.bridge import Bridge, Poll
from envs.mupen.process import Emulator, Xvfb
from envs.mupen.profiles import GameProfile, get_profile, profile_for_rom

log = logging.getLogger(__name__)

LOADED = "State loaded from"  # the core's log line once a savestate is in (savestates.c)


class EmulatorCrashed(RuntimeError):
    """The emulator died or stopped polling (internal: triggers a restart)."""


class MupenEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, rom: str | Path, *, profile: str | GameProfile | None = None,
                 state: str | Path | None = None, action_repeat: int = 1, max_steps: int | None = None,
                 resolution: str = "320x240", frame_size: tuple[int, int] | None = None,
                 plugin: str | Path | None = None, boot_timeout_s: float = 60.0,
                 poll_timeout_s: float = 15.0, settle_polls: int = 3, timeout_ms: int = 10000,
                 max_restarts: int = 20, tracker_kw: dict | None = None, render_mode: str | None = None,
                 cpus: set[int] | None = None):
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.rom = Path(rom).resolve()
        if isinstance(profile, GameProfile):
            self.profile = profile
        else:
            self.profile = get_profile(profile) if profile else profile_for_rom(self.rom)
        self.header = self.profile.check_rom(self.rom)  # refuse a wrong ROM before anything runs
        self.state = Path(state).resolve() if state else None
        if self.state is not None and not self.state.is_file():
            raise FileNotFoundError(f"savestate {self.state} not found (make one: python -m envs.mupen savestate)")
        self.plugin = find_plugin(plugin)
        self.action_repeat, self.max_steps, self.settle_polls = action_repeat, max_steps, settle_polls
        self.resolution, self.frame_size, self.timeout_ms = resolution, frame_size, timeout_ms
        self.boot_timeout_s, self.poll_timeout_s, self.max_restarts = boot_timeout_s, poll_timeout_s, max_restarts
        self.tracker_kw = tracker_kw or {}
        self.render_mode = render_mode
        self.cpus = cpus  # the CPUs mupen64plus runs on (VecMupen: one per instance); None: any
        w, h = frame_size or tuple(int(v) for v in resolution.split("x"))
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.action_space = gym.spaces.Box(LOW, HIGH, (5,), np.float32)
        self.restarts = 0
        self._bridge: Bridge | None = None
        self._xvfb: Xvfb | None = None
        self._emu: Emulator | None = None
        self._workdir: Path | None = None
        self._home: Path | None = None  # outlives restarts: holds the env's own savestate
        self._held: Poll | None = None
        self._obs = np.zeros(self.observation_space.shape, np.uint8)
        self._steps = 0
        self._tracker = None
        self._step_keys: dict | None = None  # between step_send and step_collect
        self._step_crash: Exception | None = None

    # ----------------------------------------------------------------- processes
    @property
    def emulator_pid(self) -> int | None:
        return self._emu.pid if self._emu else None

    @property
    def display(self) -> str | None:
        return self._xvfb.display if self._xvfb else None

    @property
    def state_path(self) -> Path:
        """The savestate reset loads: ``state`` or the env's own (save_state())."""
        if self.state is not None:
            return self.state
        if self._home is None:
            self._home = Path(tempfile.mkdtemp(prefix="kartpilot-mupen-"))
        return self._home / "kartpilot.st"

    def _launch(self) -> None:
        state = self.state_path
        self._workdir = Path(tempfile.mkdtemp(prefix="run-", dir=state.parent if self.state is None else None))
        self._bridge = Bridge(hold_s=max(0.5, self.timeout_ms / 1000 - 1.0))
        self._xvfb = Xvfb()
        self._emu = Emulator(
            self.rom, self._xvfb.display, self._bridge.port, self._workdir, plugin=self.plugin,
            profile=self.profile.plugin_profile(), savestate=str(state),
            resolution=self.resolution, frame_size=self.frame_size,
            timeout_ms=self.timeout_ms, cpus=self.cpus,
        )
        try:
            self._held = self._next(self.boot_timeout_s, "boot")
            if state.is_file():
                self._load_state()
        except EmulatorCrashed as exc:
            tail = self._emu.log_tail(8)
            self._shutdown()
            raise EmulatorError(f"{exc}; mupen64plus said:\n{tail}") from None
        except EmulatorError:  # the state did not load: no processes left behind
            self._shutdown()
            raise

    def _shutdown(self) -> None:
        if self._emu:
            self._emu.close()
        if self._xvfb:
            self._xvfb.close()
        if self._bridge:
            self._bridge.close()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._emu = self._xvfb = self._bridge = self._workdir = self._held = None

    def _restart(self, why: str) -> None:
        self.restarts += 1
        tail = self._emu.log_tail(5) if self._emu else ""
        log.warning("mupen64plus instance restarting (%s), restart %d; log tail:\n%s", why, self.restarts, tail)
        if self.restarts > self.max_restarts:
            self._shutdown()
            raise RuntimeError(f"mupen64plus crashed {self.restarts} times (last: {why}); giving up. Log:\n{tail}")
        self._shutdown()
        for attempt in range(3):
            try:
                self._launch()
                return
            except EmulatorError:
                if attempt == 2:
                    raise

    def _next(self, timeout: float, what: str) -> Poll:
        """The next live poll; EmulatorCrashed if the process is gone or silent."""
        deadline = time.monotonic() + timeout
        while True:
            if self._emu is None:
                raise EmulatorCrashed(f"mupen64plus is not running while waiting for {what}")
            # the process is checked only when no poll came within 0.5 s: a poll proves it alive,
            # and waitpid on every frame cost the lockstep path more than its own bookkeeping
            poll = self._bridge.next_poll(min(max(deadline - time.monotonic(), 0.0), 0.5))
            if poll is not None and not poll.expired:
                return poll
            if not self._emu.alive():
                raise EmulatorCrashed(f"mupen64plus exited (status {self._emu.proc.returncode}) while waiting "
                                      f"for {what}")
            if time.monotonic() >= deadline:
                raise EmulatorCrashed(f"no poll from the plugin for {timeout:.0f} s ({what})")

    def _answer_held(self, keys: dict, cmd: str | None, what: str, then: int = 0) -> None:
        """Answer the held poll (and have the bridge answer ``then`` more); if the bridge already
        answered it (the learner was idle past the hold), the emulator moved on: answer the next live one."""
        while not self._held.answer(keys, cmd=cmd, then=then):
            self._held = self._next(self.poll_timeout_s, what)

    def _command(self, cmd: str) -> None:
        """Send ``cmd`` on the held poll's controller: answers carry it until the plugin
        confirms it (X-KartPilot-Done; a plugin predating that contract never does, and the
        bridge stops after MAX_SENDS answers), then ``settle_polls`` polls pass while the core
        loads or saves, and the next poll is held."""
        controller = self._held.controller
        self._answer_held(to_n64(np.zeros(5)), cmd, cmd)
        while self._bridge.commands.status(controller) == "pending":
            self._next(self.poll_timeout_s, cmd).answer()
        if self._bridge.commands.status(controller) != "confirmed":
            log.warning("the plugin never confirmed CMD %s (X-KartPilot-Done): rebuild plugin_c (make plugin)", cmd)
        for _ in range(self.settle_polls):
            self._next(self.poll_timeout_s, cmd).answer()
        self._held = self._next(self.poll_timeout_s, cmd)

    def _load_state(self, extra_polls: int = 120) -> None:
        """CMD reset, then the core's log line that the state is in; up to ``extra_polls`` more
        polls pass when it is late. EmulatorError (with what the core said) when it never comes."""
        offset = self._emu.log_size()
        self._command("reset")
        for _ in range(extra_polls):
            if LOADED in self._emu.log_since(offset):
                return
            self._answer_held(to_n64(np.zeros(5)), None, "reset")
            self._held = self._next(self.poll_timeout_s, "reset")
        said = self._emu.log_since(offset).strip()
        if LOADED in said:
            return
        raise EmulatorError(f"mupen64plus did not load the savestate {self.state_path} (cut short, or made "
                            f"with another ROM or core version?); it said:\n{said[-1500:]}")

    # ----------------------------------------------------------------- gym API
    def _observe(self, poll: Poll) -> np.ndarray:
        if poll.frame is not None:
            frame = poll.frame
            if frame.shape != self._obs.shape:
                raise RuntimeError(f"plugin posted {frame.shape} frames, env expects {self._obs.shape}")
            self._obs = frame
        return self._obs

    def _base_info(self, poll: Poll) -> dict:
        return {"frame_index": poll.index, "restarts": self.restarts, "crashed": False,
                "idle_polls": self._bridge.idle_polls if self._bridge else 0}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        for _ in range(3):
            try:
                if self._emu is None:
                    self._launch()
                elif self.state_path.is_file():
                    self._load_state()
                break
            except EmulatorCrashed as exc:
                self._restart(str(exc))
        poll = self._held
        self.profile.require(poll.telemetry)
        self._tracker = self.profile.tracker(**self.tracker_kw)
        info = {**self._base_info(poll), **self._tracker.start(poll.telemetry)}
        self._steps = 0
        return self._observe(poll), info

    def step(self, action):
        self.step_send(action)
        return self.step_collect()

    def step_send(self, action) -> None:
        """The first half of ``step``: answer the held poll with ``action`` (the bridge answers the
        step's ``action_repeat - 1`` further polls itself as they come), so the emulator runs on
        while the caller sends to other envs; ``step_collect`` waits for the step's polls."""
        if self._tracker is None:
            raise RuntimeError("call reset() before step()")
        self._step_keys = to_n64(action)
        self._step_crash = None
        try:
            self._answer_held(self._step_keys, None, "step", then=self.action_repeat - 1)
        except EmulatorCrashed as exc:
            self._step_crash = exc  # step_collect restarts and reports it

    def step_collect(self):
        """The second half of ``step``: the step's polls, their telemetry, the next held poll."""
        keys, self._step_keys = self._step_keys, None
        if keys is None:
            raise RuntimeError("step_collect() without step_send()")
        reward, terminated, game_info, terms = 0.0, False, {}, {}
        try:
            if self._step_crash is not None:
                raise self._step_crash
            for k in range(self.action_repeat):
                poll = self._next(self.poll_timeout_s, "step")
                if k < self.action_repeat - 1:
                    poll.answer(keys)  # normally the bridge has already (then a no-op)
                else:
                    self._held = poll
                if not terminated:  # every poll (game frame) goes to the tracker, none after the end
                    r, terminated, game_info = self._tracker.step(poll.telemetry)
                    reward += r
                    for name, v in game_info.get("reward_terms", {}).items():
                        terms[name] = terms.get(name, 0.0) + v
        except EmulatorCrashed as exc:
            self._restart(str(exc))
            self._tracker = None  # the episode is over: the caller resets
            info = {"frame_index": -1, "restarts": self.restarts, "crashed": True, "reason": str(exc)}
            return self._obs, 0.0, False, True, info
        poll = self._held
        if terms:
            game_info["reward_terms"] = terms  # summed over the step's polls
        self._steps += 1
        truncated = bool(self.max_steps and self._steps >= self.max_steps and not terminated)
        info = {**self._base_info(poll), **game_info}
        return self._observe(poll), reward, bool(terminated), truncated, info

    def save_state(self, timeout_s: float = 60.0) -> None:
        """Answer the held poll with ``"CMD": "save"``: the core takes the state at the next VI
        and writes the file from a thread; this returns once the file is whole (polls pass,
        neutral, only while it is not after a second). EmulatorError after ``timeout_s``."""
        if self._held is None:
            raise RuntimeError("call reset() before save_state()")
        path = self.state_path
        before = file_stamp(path)
        self._command("save")
        t0 = time.monotonic()
        while not (file_stamp(path) not in (None, before) and savestate_whole(path)):
            if time.monotonic() - t0 > timeout_s:
                raise EmulatorError(f"mupen64plus did not write the savestate {path} within {timeout_s:.0f} s; "
                                    f"it said:\n{self._emu.log_tail(8)}")
            if time.monotonic() - t0 < 1.0:
                time.sleep(0.05)
            else:  # the VI that takes it may wait for the emulator to run on
                self._answer_held(to_n64(np.zeros(5)), None, "save")
                self._held = self._next(self.poll_timeout_s, "save")

    def render(self):
        return self._obs

    def close(self):
        self._shutdown()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        super().close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self._shutdown()
