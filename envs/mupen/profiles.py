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
    # reward terms the tracker computes from the game's memory; None: not a game (nothing to score)
    reward_terms: tuple[str, ...] | None = None

    def check_reward(self, weights: Mapping[str, float]) -> list[str]:
        """Refuse reward terms this profile cannot compute: ValueError naming them when a game
        profile lacks a term with a non-zero weight. For a profile that is not a game
        (``reward_terms`` None) the non-zero terms are returned, for the caller to warn about."""
        asked = sorted(k for k, w in weights.items() if w and k not in NOT_WEIGHTS)
        if self.reward_terms is None:
            return asked
        missing = [k for k in asked if k not in self.reward_terms]
        if missing:
            raise ValueError(
                f"the {self.name} profile cannot compute reward term(s) {missing} from the game's memory "
                f"(it has {list(self.reward_terms)}); set their weights to 0 (e.g. --r-{missing[0].replace('_', '-')} 0)"
            )
        return []

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
# Addresses (US release) and their sources in n64decomp/mk64: envs/mupen/MK64_ADDRESSES.md.
PLAYERS = 0x800F6990  # gPlayers[8], struct Player, size 0xDD8
PLAYER_SIZE = 0xDD8
COMPLETION = 0x801644D0  # f32 gCourseCompletionPercentByPlayerId[8]
LAP_COUNT = 0x80164390  # s32 gLapCountByPlayerId[8]
LAP_START = 0x8015F898  # f32 gTimePlayerLastTouchedFinishLine[8] (course time of the last line crossing)
COURSE_TIMER = 0x800DC598  # f32 gCourseTimer (seconds)
COURSE_ID = 0x800DC5A0  # s16 gCurrentCourseId
RACE_STATE = 0x800DC510  # gRaceState (D_800DC510), s32 as every file but main.c declares it
MODE = 0x800DC53C  # s32 gModeSelection (0 GP, 1 Time Trials, 2 VS, 3 Battle)

# struct Player offsets (include/common_structs.h)
P_RANK = 0x004  # s16 currentRank
P_POS = 0x014  # Vec3f pos
P_SPEED = 0x094  # f32 speed (horizontal speed, game units per frame)
P_EFFECTS = 0x0BC  # u32 effects (bit flags, include/defines.h)
P_LAKITU = 0x0CA  # s16 lakituProps (bit flags)
P_OOB = 0x0DE  # u16 oobProps (bit flags)
P_SURFACE = 0x0F8  # u16 surfaceType (enum SURFACE_TYPE)
P_TOP_SPEED = 0x214  # f32 topSpeed (gTopSpeedTable[cc][character])
P_DRIFT_COUNTER = 0x228  # s16 driftStateCounter (stick-swing counter)
P_DRIFT_STATE = 0x22A  # s16 driftState: mini-turbo charge, 0..3

# effects bits
HOP_EFFECT = 0x2
MIDAIR_EFFECT = 0x8
DRIFTING_EFFECT = 0x10
MINI_TURBO_EFFECT = 0x100
# lakituProps bits
LAKITU_RETRIEVAL = 0x1
HELD_BY_LAKITU = 0x2
LAKITU_SCENE = 0x8
LAKITU_RESCUE = LAKITU_RETRIEVAL | HELD_BY_LAKITU | LAKITU_SCENE  # any of them: a rescue is under way
# surfaceType values (enum SURFACE_TYPE)
AIRBORNE = 0x00
GRASS, SNOW_TWO, SAND_FOUR, OUT_OF_BOUNDS = 0x08, 0x0B, 0x0D, 0xFD
OFFROAD_SURFACES = frozenset({GRASS, SNOW_TWO, SAND_FOUR, OUT_OF_BOUNDS})
MT_CHARGE = 2  # driftState at which releasing the drift fires the mini-turbo (func_8002A79C)
KMH_PER_UNIT = 216.0 / 18.0  # the game's own conversion (player_controller.c: speed / 18 * 216)
RACE_IN_PROGRESS = 3

# Reward terms every profile may support (train.finetune.envs.RewardShaping / kartsim RewardConfig).
REWARD_TERMS = ("progress", "fall", "speed", "boost", "offroad", "drift_abort")
# Settings that travel with the reward weights but weigh no term (kartsim's edge term's margin, in units).
NOT_WEIGHTS = frozenset({"edge_margin"})


def _player(offset: int) -> int:
    return PLAYERS + offset


MK64_FIELDS = (
    *(Field(f"completion{i}", COMPLETION + 4 * i, "f32", f"course completion of player {i} (laps)")
      for i in range(8)),
    Field("lap", LAP_COUNT, "s32", "completed laps of player 1"),
    Field("lap_start", LAP_START, "f32", "course time of player 1's last finish-line crossing (s)"),
    Field("timer", COURSE_TIMER, "f32", "race timer (s)"),
    Field("course", COURSE_ID, "s16", "current course id"),
    Field("race_state", RACE_STATE, "s32", "race state (3 = in progress)"),
    Field("mode", MODE, "s32", "game mode (1 = Time Trials)"),
    Field("rank", _player(P_RANK), "s16", "player 1 currentRank"),
    Field("x", _player(P_POS), "f32", "player 1 pos[0]"),
    Field("y", _player(P_POS + 4), "f32", "player 1 pos[1]"),
    Field("z", _player(P_POS + 8), "f32", "player 1 pos[2]"),
    Field("speed", _player(P_SPEED), "f32", "player 1 speed"),
    Field("effects", _player(P_EFFECTS), "u32", "player 1 effects bits"),
    Field("lakitu", _player(P_LAKITU), "s16", "player 1 lakituProps bits"),
    Field("oob", _player(P_OOB), "u16", "player 1 oobProps bits"),
    Field("surface", _player(P_SURFACE), "u16", "player 1 surfaceType"),
    Field("top_speed", _player(P_TOP_SPEED), "f32", "player 1 topSpeed"),
    Field("drift_counter", _player(P_DRIFT_COUNTER), "s16", "player 1 driftStateCounter"),
    Field("drift_state", _player(P_DRIFT_STATE), "s16", "player 1 driftState (mini-turbo charge)"),
)

MK64 = GameProfile(
    name="mk64",
    description="Mario Kart 64 (USA), Time Trials from a savestate at the start line",
    fields=MK64_FIELDS,
    rom_names=("MARIOKART64",),
    rom_crcs=((0x3E5055B6, 0x2E92DA52),),
    reward_terms=REWARD_TERMS,
)


def mk64_surface(surface: int, lakitu: int) -> str:
    """kartsim's surface names for MK64: ``falling`` while Lakitu rescues the kart, ``airborne``
    over no ground (hops, jumps, the fall itself), ``offroad`` on OFFROAD_SURFACES, else ``road``."""
    if lakitu & LAKITU_RESCUE:
        return "falling"
    if surface == AIRBORNE:
        return "airborne"
    return "offroad" if surface in OFFROAD_SURFACES else "road"


class MK64Tracker(Tracker):
    """Player 1's race from the game's memory, one call per controller poll (game frame).

    Reward terms (raw, before the weights), as kartsim's ``RewardConfig``:

    - ``progress``: change in course completion (laps) x ``scale`` (one lap = 100). A jump larger
      than ``max_jump`` laps in one poll is not driving (a reload, a path-index wrap) and pays 0.
    - ``fall``: 1 on the poll a Lakitu rescue starts (``lakituProps`` gains any of
      ``LAKITU_RESCUE``), so each fall counts once.
    - ``speed``: ``speed / topSpeed`` (the kart's own top speed from the game's table).
    - ``boost``: 1 while the mini-turbo runs (``MINI_TURBO_EFFECT``).
    - ``offroad``: 1 while ``surfaceType`` is an off-road surface (``OFFROAD_SURFACES``).
    - ``drift_abort``: when a drift (``DRIFTING_EFFECT``) ends without firing its mini-turbo,
      ``1 - charge / MT_CHARGE`` (``charge`` = ``driftState`` last seen while drifting). The game
      fires the mini-turbo on the frame after the release, so the decision waits one poll.

    ``reward`` maps term -> weight (default: progress only); the step's reward is the weighted
    sum. Lap times are the game's own: differences of ``gTimePlayerLastTouchedFinishLine`` at
    each lap increase (a ``-1 -> 0`` crossing at the start only starts lap 1). The race ends when
    the lap count reaches ``laps``.
    """

    def __init__(self, laps: int = 3, scale: float = 100.0, max_jump: float = 0.5, reward: Mapping | None = None):
        self.laps, self.scale, self.max_jump = laps, scale, max_jump
        weights = {"progress": 1.0} if reward is None else dict(reward)
        unknown = set(weights) - set(REWARD_TERMS)
        if unknown:
            raise ValueError(f"unknown reward terms {sorted(unknown)}; known: {list(REWARD_TERMS)}")
        self.weights = {k: float(weights.get(k, 0.0)) for k in REWARD_TERMS}

    def _info(self, tel) -> dict:
        lap = int(tel["lap"])
        comp = float(tel["completion0"])
        surface, lakitu, effects = int(tel["surface"]), int(tel["lakitu"]), int(tel["effects"])
        speed = float(tel["speed"])
        return {
            "completion": comp,
            "progress": float(min(max(comp - lap, 0.0), 1.0)),
            "lap": max(lap, 0),
            "lap_times": list(self.lap_times),
            "race_time": float(tel["timer"]),
            "t": float(tel["timer"]),
            "speed": speed,
            "speed_kmh": speed * KMH_PER_UNIT,
            "surface": mk64_surface(surface, lakitu),
            "surface_type": surface,
            "airborne": surface == AIRBORNE or bool(effects & MIDAIR_EFFECT),
            "falls": self.falls,
            "drift": int(bool(effects & DRIFTING_EFFECT)),
            "drift_charge": int(tel["drift_state"]),
            "boost": bool(effects & MINI_TURBO_EFFECT),
            "mini_turbos": self.mini_turbos,
            "effects": effects,
            "lakitu": lakitu,
            "oob": int(tel["oob"]),
            "race_state": int(tel["race_state"]),
            "finished": lap >= self.laps,
            "position": (float(tel["x"]), float(tel["y"]), float(tel["z"])),
            "rank": int(tel["rank"]),
            "course": int(tel["course"]),
            "mode": int(tel["mode"]),
        }

    def start(self, tel):
        self.prev = float(tel["completion0"])
        self.prev_lap = int(tel["lap"])
        self.last_cross = float(tel["timer"])  # lap 1 starts now (or at the -1 -> 0 crossing)
        self.prev_lap_start = float(tel["lap_start"])
        self.lap_times: list[float] = []
        self.falls = self.mini_turbos = 0
        effects = int(tel["effects"])
        self.prev_rescue = bool(int(tel["lakitu"]) & LAKITU_RESCUE)
        self.prev_mt = bool(effects & MINI_TURBO_EFFECT)
        self.prev_drifting = bool(effects & DRIFTING_EFFECT)
        self.charge = int(tel["drift_state"])
        self.pending_abort: float | None = None  # missing charge of a drift released last poll
        return self._info(tel)

    def terms(self, tel) -> dict[str, float]:
        """This poll's raw reward terms; updates the episode's counters."""
        comp, lap = float(tel["completion0"]), int(tel["lap"])
        effects, lakitu = int(tel["effects"]), int(tel["lakitu"])
        delta = comp - self.prev
        progress = 0.0 if (not math.isfinite(delta) or abs(delta) > self.max_jump) else delta * self.scale
        self.prev = comp
        if lap > self.prev_lap:
            cross, timer = float(tel["lap_start"]), float(tel["timer"])
            fresh = cross != self.prev_lap_start and self.last_cross < cross <= timer + 0.5
            cross = cross if fresh else timer  # a stale crossing time: the race timer is the next best
            if self.prev_lap >= 0:
                self.lap_times.append(round(cross - self.last_cross, 3))
            self.last_cross = cross  # (a -1 -> 0 crossing at the start only starts lap 1)
        self.prev_lap = lap
        self.prev_lap_start = float(tel["lap_start"])

        rescue = bool(lakitu & LAKITU_RESCUE)
        fall = float(rescue and not self.prev_rescue)
        self.falls += int(fall)
        self.prev_rescue = rescue

        mt, drifting = bool(effects & MINI_TURBO_EFFECT), bool(effects & DRIFTING_EFFECT)
        mt_fired = mt and not self.prev_mt
        self.mini_turbos += int(mt_fired)
        abort = 0.0
        if self.pending_abort is not None:  # released last poll: a mini-turbo now means it was charged
            abort = 0.0 if mt_fired else self.pending_abort
            self.pending_abort = None
        if drifting:
            self.charge = int(tel["drift_state"])
        elif self.prev_drifting and not mt_fired:
            charge = max(self.charge, int(tel["drift_state"]))
            if charge < MT_CHARGE:
                self.pending_abort = max(0.0, 1.0 - charge / MT_CHARGE)
        self.prev_mt, self.prev_drifting = mt, drifting

        top = float(tel["top_speed"])
        speed = float(tel["speed"]) / top if top > 0 and math.isfinite(top) else 0.0
        surface = mk64_surface(int(tel["surface"]), lakitu)
        return {"progress": progress, "fall": fall, "speed": speed, "boost": float(mt),
                "offroad": float(surface == "offroad"), "drift_abort": abort}

    def step(self, tel):
        terms = self.terms(tel)
        reward = sum(self.weights[k] * v for k, v in terms.items())
        info = self._info(tel)
        info["reward_terms"] = terms
        return float(reward), int(tel["lap"]) >= self.laps, info


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
    """No game to score: reward 0, never terminates (use max_steps). Its profile has
    ``reward_terms=None``, so the learner's backend warns about any non-zero reward weight."""

    def __init__(self, reward: Mapping | None = None):
        self.reward = dict(reward or {})

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
