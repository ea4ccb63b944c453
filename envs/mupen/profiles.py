"""Game profiles: which RDRAM values the plugin reads, and what they mean.

A profile names RDRAM values (name, N64 address, type); the plugin reads them
every poll and sends them as ``X-Telemetry: name=value;...``. The profile turns
a stream of those readings into the episode's reward, its end and its info
dict. Decoding is plain Python over a dict of numbers, so it is tested on
synthetic RDRAM (``read_rdram``) without the commercial ROM.

Addresses and their sources: envs/mupen/MK64_ADDRESSES.md.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.protocol import TelemetryError, parse_telemetry  # noqa: F401 (the wire format's one home)
from envs.mupen.rom import RomError, RomHeader, read_header

TYPES = {"u8": ">B", "s8": ">b", "u16": ">H", "s16": ">h", "u32": ">I", "s32": ">i", "f32": ">f"}
RDRAM_SIZE = 0x800000  # 8 MiB (expansion pak), as the core allocates


@dataclass(frozen=True)
class Field:
    name: str
    address: int  # KSEG0 address as the game sees it (0x80xxxxxx)
    type: str  # one of TYPES
    doc: str = ""

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r} (one of {sorted(TYPES)})")
        size = struct.calcsize(TYPES[self.type])
        phys = self.address & 0x1FFFFFFF
        if phys % size or phys + size > RDRAM_SIZE:
            raise ValueError(f"field {self.name!r}: address 0x{self.address:08X} unaligned or outside RDRAM")


def plugin_profile(fields) -> str:
    """The plugin's profile string: ``name:0xADDRESS:type;...``."""
    return ";".join(f"{f.name}:0x{f.address:08X}:{f.type}" for f in fields)


def read_rdram(fields, rdram: bytes) -> dict[str, float]:
    """Read ``fields`` from an RDRAM image in the N64's own (big-endian) byte
    order, as the plugin does from the core's host-endian copy. Used to test
    profile decoding on synthetic memory."""
    out = {}
    for f in fields:
        phys = f.address & 0x1FFFFFFF
        (value,) = struct.unpack_from(TYPES[f.type], rdram, phys)
        out[f.name] = float(value)
    return out


def write_rdram(rdram: bytearray, address: int, type_: str, value) -> None:
    """Poke one value into a big-endian RDRAM image (for synthetic tests)."""
    struct.pack_into(TYPES[type_], rdram, address & 0x1FFFFFFF, value)


class Tracker:
    """Per-episode decoder: telemetry dicts in, (reward, terminated, info) out."""

    def start(self, tel: Mapping[str, float]) -> dict:
        return {}

    def step(self, tel: Mapping[str, float]) -> tuple[float, bool, dict]:
        return 0.0, False, {}


@dataclass(frozen=True)
class GameProfile:
    name: str
    description: str
    fields: tuple[Field, ...]
    rom_names: tuple[str, ...] = ()  # accepted internal names (empty: any ROM)
    rom_crcs: tuple[tuple[int, int], ...] = ()  # accepted (crc1, crc2)
    tracker_kw: dict = field(default_factory=dict)

    def check_rom(self, path: str | Path) -> RomHeader:
        """Read the header; raise RomError unless it is this profile's game."""
        head = read_header(path)
        if self.rom_names and head.name not in self.rom_names:
            raise RomError(
                f"ROM {path} is {head.name!r} (CRC {head.crc}); the {self.name} profile needs "
                f"{' or '.join(map(repr, self.rom_names))}"
            )
        if self.rom_crcs and (head.crc1, head.crc2) not in self.rom_crcs:
            want = ", ".join(f"{a:08X}-{b:08X}" for a, b in self.rom_crcs)
            raise RomError(
                f"ROM {path} ({head.name!r}) has header CRC {head.crc}; the {self.name} profile "
                f"was written for {want} (another region or revision has other addresses)"
            )
        return head

    def plugin_profile(self) -> str:
        return plugin_profile(self.fields)

    def tracker(self, **kw) -> Tracker:
        return _TRACKERS[self.name](**{**self.tracker_kw, **kw})

    def require(self, tel: Mapping[str, float]) -> None:
        missing = [f.name for f in self.fields if f.name not in tel]
        if missing:
            raise TelemetryError(
                f"telemetry lacks {missing} of the {self.name} profile: is the plugin's profile set "
                f"(got {sorted(tel)})?"
            )


# --------------------------------------------------------------------------- MK64
PLAYERS = 0x800F6990  # gPlayers[8], struct Player, size 0xDD8
PLAYER_SIZE = 0xDD8
COMPLETION = 0x801644D0  # f32 gCourseCompletionPercentByPlayerId[8]
LAP_COUNT = 0x80164390  # s32 gLapCountByPlayerId[8]
COURSE_TIMER = 0x800DC598  # f32 gCourseTimer (seconds)
COURSE_ID = 0x800DC5A0  # s16 gCurrentCourseId

MK64_FIELDS = (
    *(Field(f"completion{i}", COMPLETION + 4 * i, "f32", f"course completion of player {i} (laps)")
      for i in range(8)),
    Field("lap", LAP_COUNT, "s32", "completed laps of player 1"),
    Field("timer", COURSE_TIMER, "f32", "race timer (s)"),
    Field("course", COURSE_ID, "s16", "current course id"),
    Field("rank", PLAYERS + 0x004, "s16", "player 1 currentRank"),
    Field("x", PLAYERS + 0x014, "f32", "player 1 pos[0]"),
    Field("y", PLAYERS + 0x018, "f32", "player 1 pos[1]"),
    Field("z", PLAYERS + 0x01C, "f32", "player 1 pos[2]"),
    Field("speed", PLAYERS + 0x22C, "f32", "player 1 speed"),
)

MK64 = GameProfile(
    name="mk64",
    description="Mario Kart 64 (USA), Time Trials from a savestate at the start line",
    fields=MK64_FIELDS,
    rom_names=("MARIOKART64",),
    rom_crcs=((0x3E5055B6, 0x2E92DA52),),
)


class MK64Tracker(Tracker):
    """Reward = change in player 1's course completion (laps) x ``scale``.

    Course completion is lap count + the fraction of the lap's path points
    passed, so a lap is worth ``scale``. A jump larger than ``max_jump`` laps in
    one step is not progress (a reload or a path-index wrap) and pays 0. The
    race ends when the lap count reaches ``laps``.
    """

    def __init__(self, laps: int = 3, scale: float = 100.0, max_jump: float = 0.5):
        self.laps, self.scale, self.max_jump = laps, scale, max_jump

    def _info(self, tel) -> dict:
        lap = int(tel["lap"])
        comp = float(tel["completion0"])
        return {
            "completion": comp,
            "progress": float(min(max(comp - lap, 0.0), 1.0)),
            "lap": max(lap, 0),
            "lap_times": list(self.lap_times),
            "race_time": float(tel["timer"]),
            "t": float(tel["timer"]),
            "speed": float(tel["speed"]),
            "position": (float(tel["x"]), float(tel["y"]), float(tel["z"])),
            "rank": int(tel["rank"]),
            "course": int(tel["course"]),
        }

    def start(self, tel):
        self.prev = float(tel["completion0"])
        self.prev_lap = int(tel["lap"])
        self.lap_start = float(tel["timer"])
        self.lap_times: list[float] = []
        return self._info(tel)

    def step(self, tel):
        comp, lap, timer = float(tel["completion0"]), int(tel["lap"]), float(tel["timer"])
        delta = comp - self.prev
        reward = 0.0 if (not math.isfinite(delta) or abs(delta) > self.max_jump) else delta * self.scale
        self.prev = comp
        if lap > self.prev_lap and self.prev_lap >= 0:
            self.lap_times.append(round(timer - self.lap_start, 3))
            self.lap_start = timer
        elif lap > self.prev_lap:
            self.lap_start = timer  # crossing the line at the start (lap -1 -> 0) starts lap 1
        self.prev_lap = lap
        return float(reward), lap >= self.laps, self._info(tel)


# --------------------------------------------------------------------------- test ROM
TEST_ENTRY = 0x800F1800  # the ROM's bytes from offset 0x1000 are loaded here
TEST_ROM_OFFSET = 0x1000

TEST = GameProfile(
    name="test",
    description="mupen64plus GPL demo ROM: RDRAM at its entry point equals the ROM at 0x1000",
    fields=(
        *(Field(f"w{i}", TEST_ENTRY + 4 * i, "u32", f"entry word {i}") for i in range(4)),
        Field("h2", TEST_ENTRY + 2, "u16", "entry halfword at +2"),
        Field("b1", TEST_ENTRY + 1, "u8", "entry byte at +1"),
    ),
    rom_names=("Mupen64Plus",),
)


class DemoRomTracker(Tracker):
    """No game to score: reward 0, never terminates (use max_steps)."""

    def _info(self, tel):
        return {"words": [int(tel[f"w{i}"]) for i in range(4)], "h2": int(tel["h2"]), "b1": int(tel["b1"])}

    def start(self, tel):
        return self._info(tel)

    def step(self, tel):
        return 0.0, False, self._info(tel)


_TRACKERS = {"mk64": MK64Tracker, "test": DemoRomTracker}
PROFILES = {"mk64": MK64, "test": TEST}


def get_profile(name: str) -> GameProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown game profile {name!r} (one of {sorted(PROFILES)})") from None


def profile_for_rom(path: str | Path) -> GameProfile:
    """Pick the profile whose ROM name matches ``path``'s header."""
    head = read_header(path)
    for prof in PROFILES.values():
        if head.name in prof.rom_names:
            return prof
    raise RomError(f"ROM {path} is {head.name!r}: no game profile for it (known: {sorted(PROFILES)})")
