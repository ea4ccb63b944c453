"""The real emulator as a Gymnasium environment (mupen64plus + our input plugin).

- :class:`MupenEnv` (envs/mupen/env.py): one instance on its own Xvfb display,
  lockstep through the drive protocol, reset from a savestate.
- :class:`VecMupen` (envs/mupen/vector.py): N instances, next-step autoreset,
  crashed instances restarted with their episode truncated.
- Game profiles (envs/mupen/profiles.py): Mario Kart 64 (USA) and the GPL test ROM.
- ``envs.mupen.backend``: the learner's ``--env mk64`` backend.
- ``python -m envs.mupen --help``: ROM check, savestate helper, smoke run.
"""

from envs.mupen.env import MupenEnv
from envs.mupen.profiles import MK64, PROFILES, TEST, GameProfile, get_profile, profile_for_rom
from envs.mupen.rom import RomError, read_header
from envs.mupen.vector import VecMupen


def make(rom, **kw) -> MupenEnv:
    """One emulator env (see MupenEnv for the options)."""
    return MupenEnv(rom, **kw)


__all__ = ["MK64", "PROFILES", "TEST", "GameProfile", "MupenEnv", "RomError", "VecMupen", "get_profile",
           "make", "profile_for_rom", "read_header"]
