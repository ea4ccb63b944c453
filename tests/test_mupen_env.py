"""The emulator env for real: mupen64plus + our plugin under Xvfb with the GPL test ROM.

Each test starts its own instances (each on its own Xvfb display, chosen by
Xvfb itself) and stops every process in ``finally``.
"""

from __future__ import annotations

import os
import signal
import struct
import time

import numpy as np
import pytest

from envs.mupen.rom import read_big_endian

pytestmark = pytest.mark.emulator

NEUTRAL = np.zeros(5, np.float32)


@pytest.fixture
def emu_ready(emulator_rom):
    return emulator_rom


def _rom_words(rom) -> list[int]:
    return list(struct.unpack(">4I", read_big_endian(rom, 0x1000, 16)))


def test_two_instances_frames_and_telemetry(emu_ready):
    from envs.mupen import VecMupen

    rom = emu_ready
    vec = VecMupen(2, rom=str(rom), max_steps=1000)
    try:
        obs, info = vec.reset(seed=0)
        assert obs.shape == (2, 240, 320, 3) and obs.dtype == np.uint8
        displays = {e.display for e in vec.envs}
        assert len(displays) == 2, "each instance has its own Xvfb display"
        from common.mupen import spread_cpus

        cpus = sorted(os.sched_getaffinity(0))
        for i, e in enumerate(vec.envs):  # instance i runs on CPU i (mod the CPUs): every thread of it
            pid = e.emulator_pid
            names = {int(t): open(f"/proc/{pid}/task/{t}/comm").read().strip() for t in os.listdir(f"/proc/{pid}/task")}
            hot = [t for t, name in names.items() if t == pid or name.startswith("llvmpipe")]
            assert len(hot) > 1  # the emulation thread and the rasteriser's, started after the pin
            expected = spread_cpus(i, 2)
            assert expected == ({cpus[i]} if len(cpus) >= 2 else None)  # one CPU each, if there are two
            # (Mesa's shader-cache thread widens its own affinity: it is idle)
            assert all(os.sched_getaffinity(t) == (expected or set(cpus)) for t in hot), names
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            # llvmpipe keeps the rasteriser threads it would have unpinned
            expected = os.environ.get("LP_NUM_THREADS", str(len(cpus))).encode()
            assert b"LP_NUM_THREADS=" + expected in environ
        first = info["frame_index"].copy()
        for _ in range(30):
            obs, reward, term, trunc, info = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        assert not term.any() and not trunc.any() and (reward == 0).all()
        assert (info["frame_index"] > first).all(), "the emulators advanced"
        for i in range(2):
            # the logo is drawn: not a blank screen, and the frame changes as it turns
            assert obs[i].std() > 5
            # telemetry read from RDRAM at the entry point equals the ROM's bytes at 0x1000,
            # including the byte and halfword reads (the core keeps RDRAM in host-endian words)
            assert list(info["words"][i]) == _rom_words(rom)
            assert info["h2"][i] == int.from_bytes(read_big_endian(rom, 0x1002, 2), "big")
            assert info["b1"][i] == read_big_endian(rom, 0x1001, 1)[0]
        before = obs.copy()
        obs, *_ = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        for _ in range(20):
            obs, *_ = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        assert any(not np.array_equal(before[i], obs[i]) for i in range(2)), "frames move"
    finally:
        vec.close()


def test_saved_state_is_whole_starts_a_new_instance_and_a_cut_one_is_refused(emu_ready, tmp_path):
    """save_state() returns once the core has written the whole file (it writes from a thread:
    a copy made at once used to be cut short, and a cut state silently booted the ROM afresh);
    a new instance starts from it with the same picture as a reload in the old one (the core's
    own --savestate at boot hung its recompilers on the test ROM); a cut state is an error
    naming the file."""
    from common.mupen import EmulatorError, savestate_whole
    from envs.mupen import MupenEnv

    whole, cut = tmp_path / "whole.st", tmp_path / "cut.st"
    env = MupenEnv(emu_ready)
    try:
        env.reset()
        for _ in range(30):
            env.step(NEUTRAL)
        env.save_state()
        assert savestate_whole(env.state_path)
        whole.write_bytes(env.state_path.read_bytes())
        reloaded, _ = env.reset()
    finally:
        env.close()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert not savestate_whole(cut)

    env = MupenEnv(emu_ready, state=whole)
    try:
        started, _ = env.reset()
        assert np.array_equal(started, reloaded)
    finally:
        env.close()
    env = MupenEnv(emu_ready, state=cut)
    try:
        with pytest.raises(EmulatorError, match=r"did not load the savestate .*cut\.st"):
            env.reset()
        assert env.emulator_pid is None and env.display is None  # nothing left running
    finally:
        env.close()


def test_reset_reloads_the_savestate(emu_ready):
    from envs.mupen import MupenEnv

    # a 2 s plugin timeout: the bridge answers a poll held > 1 s itself (idle learner)
    env = MupenEnv(emu_ready, action_repeat=2, timeout_ms=2000)
    try:
        env.reset()
        for _ in range(10):
            env.step(NEUTRAL)
        env.save_state()
        assert env.state_path.is_file() and env.state_path.stat().st_size > 1000
        later = None
        for _ in range(40):
            later, *_ = env.step(NEUTRAL)
        first, info1 = env.reset()
        for _ in range(25):
            env.step(NEUTRAL)
        second, info2 = env.reset()
        # two resets restore the same emulator state: the very same picture
        assert np.array_equal(first, second)
        assert not np.array_equal(first, later)
        assert info2["frame_index"] > info1["frame_index"]  # time went on: it really was reloaded
        _, _, _, _, info = env.step(NEUTRAL)
        assert not info["crashed"]
        # the learner idles past the hold: the emulator ran on neutral input meanwhile,
        # and the next reset still reaches the emulator and restores the same state
        time.sleep(2.5)
        third, info3 = env.reset()
        assert info3["idle_polls"] >= 1
        assert np.array_equal(first, third)
    finally:
        env.close()


def test_killed_instance_is_restarted_and_truncated(emu_ready):
    from envs.mupen import VecMupen

    vec = VecMupen(2, rom=str(emu_ready), max_steps=10_000, poll_timeout_s=10.0)
    try:
        vec.reset(seed=0)
        for _ in range(5):
            vec.step(np.stack([NEUTRAL, NEUTRAL]))
        victim = vec.envs[1]
        old_pid = victim.emulator_pid
        survivor_pid = vec.envs[0].emulator_pid
        os.kill(old_pid, signal.SIGKILL)
        obs, reward, term, trunc, info = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        assert list(trunc) == [False, True] and not term.any()
        assert info["crashed"][1] and not info["crashed"][0]
        assert vec.restarts == [0, 1]
        assert victim.emulator_pid != old_pid and victim.emulator_pid is not None
        assert vec.envs[0].emulator_pid == survivor_pid, "the other instance was not touched"
        # next step: autoreset of the restarted instance; then both run on
        obs, reward, term, trunc, info = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        assert not trunc.any()
        idx = info["frame_index"].copy()
        for _ in range(10):
            obs, reward, term, trunc, info = vec.step(np.stack([NEUTRAL, NEUTRAL]))
        assert (info["frame_index"] > idx).all() and not trunc.any()
        assert list(info["words"][1]) == _rom_words(emu_ready)
    finally:
        vec.close()
    for pid in (old_pid, survivor_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
