"""Game profiles and ROM headers, on synthetic ROMs and synthetic RDRAM (no emulator, no commercial ROM)."""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from pathlib import Path

import pytest

from common.mupen import to_big_endian
from envs.mupen import profiles as pf
from envs.mupen.rom import RomError, read_big_endian, read_header
from testing.emulator import find_test_rom

MK64_CRC = (0x3E5055B6, 0x2E92DA52)


def _header(name: str, crc1: int, crc2: int, code: bytes = b"NKTE") -> bytes:
    """A big-endian (.z64) N64 header + a little body."""
    head = bytearray(0x40)
    head[0:4] = bytes.fromhex("80371240")
    struct.pack_into(">II", head, 0x10, crc1, crc2)
    head[0x20:0x34] = name.encode().ljust(20, b" ")
    head[0x3B:0x3F] = code
    return bytes(head) + bytes(range(256)) * 32


def _as(order: str, z64: bytes) -> bytes:
    if order == "z64":
        return z64
    arr = bytearray(z64)
    if order == "v64":
        arr[0::2], arr[1::2] = arr[1::2], arr[0::2]
        return bytes(arr)
    words = struct.unpack(f">{len(z64) // 4}I", z64)
    return struct.pack(f"<{len(words)}I", *words)


@pytest.mark.parametrize("order", ["z64", "v64", "n64"])
def test_header_is_read_in_every_byte_order(tmp_path, order):
    rom = tmp_path / f"mk.{order}"
    rom.write_bytes(_as(order, _header("MARIOKART64", *MK64_CRC)))
    head = read_header(rom)
    assert (head.byte_order, head.name, head.crc, head.game_code) == (order, "MARIOKART64", "3E5055B6-2E92DA52", "NKTE")
    assert pf.MK64.check_rom(rom).name == "MARIOKART64"
    assert pf.profile_for_rom(rom) is pf.MK64
    assert read_big_endian(rom, 0x41, 6) == bytes(range(1, 7))


def test_mk64_profile_refuses_other_roms(tmp_path):
    other = tmp_path / "other.z64"
    other.write_bytes(_header("SUPER MARIO 64", 0x635A2BFF, 0x8B022326))
    with pytest.raises(RomError, match="SUPER MARIO 64.*MARIOKART64"):
        pf.MK64.check_rom(other)
    revision = tmp_path / "mk_eu.z64"
    revision.write_bytes(_header("MARIOKART64", 0xC3B6DE9D, 0x65D2DE76))
    with pytest.raises(RomError, match="C3B6DE9D-65D2DE76"):
        pf.MK64.check_rom(revision)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 0x80)
    with pytest.raises(RomError, match="not an N64 ROM"):
        read_header(junk)
    with pytest.raises(RomError, match="cannot read"):
        read_header(tmp_path / "missing.z64")


def test_gpl_test_rom_header_and_entry_bytes():
    rom = find_test_rom()
    if rom is None:
        pytest.skip("GPL test ROM not found (KARTPILOT_TEST_ROM or ../shared/roms/)")
    head = read_header(rom)
    assert head.byte_order == "v64" and head.name == "Mupen64Plus"
    assert pf.profile_for_rom(rom) is pf.TEST
    with pytest.raises(RomError):
        pf.MK64.check_rom(rom)
    assert to_big_endian(rom.read_bytes()[:4]) == bytes.fromhex("80371240")


def test_plugin_profile_string_matches_the_plugin_format():
    text = pf.MK64.plugin_profile()
    entries = text.split(";")
    assert entries[0] == "completion0:0x801644D0:f32"
    assert "lap:0x80164390:s32" in entries and "timer:0x800DC598:f32" in entries
    assert "speed:0x800F6A24:f32" in entries and "x:0x800F69A4:f32" in entries
    assert len(entries) == len(pf.MK64.fields) <= 64  # the plugin's KP_PROFILE_MAX
    with pytest.raises(ValueError, match="unaligned"):
        pf.Field("bad", 0x801644D1, "f32")


def test_parse_telemetry():
    assert pf.parse_telemetry("a=1;b=-2.5;c=1e+30;") == {"a": 1.0, "b": -2.5, "c": 1e30}
    assert pf.parse_telemetry(None) == {} and pf.parse_telemetry("") == {}
    with pytest.raises(pf.TelemetryError, match="'b'"):
        pf.parse_telemetry("a=1;b=x")
    with pytest.raises(pf.TelemetryError, match="name=value"):
        pf.parse_telemetry("a=1;junk")
    with pytest.raises(pf.TelemetryError, match="lacks"):
        pf.MK64.require({"lap": 0})


# The documented layout (envs/mupen/MK64_ADDRESSES.md), written out here by hand on purpose: the
# synthetic RDRAM below is built from these literals, not from the profile's own constants, so a
# wrong address or type in profiles.py fails these tests. name -> (KSEG0 address, struct format).
PLAYER1 = 0x800F6990  # gPlayers[0]; struct Player is 0xDD8 bytes
LAYOUT = {
    **{f"completion{i}": (0x801644D0 + 4 * i, ">f") for i in range(8)},
    "lap": (0x80164390, ">i"),
    "lap_start": (0x8015F898, ">f"),
    "timer": (0x800DC598, ">f"),
    "course": (0x800DC5A0, ">h"),
    "race_state": (0x800DC510, ">i"),
    "mode": (0x800DC53C, ">i"),
    "rank": (PLAYER1 + 0x004, ">h"),
    "x": (PLAYER1 + 0x014, ">f"),
    "y": (PLAYER1 + 0x018, ">f"),
    "z": (PLAYER1 + 0x01C, ">f"),
    "speed": (PLAYER1 + 0x094, ">f"),
    "effects": (PLAYER1 + 0x0BC, ">I"),
    "lakitu": (PLAYER1 + 0x0CA, ">h"),
    "oob": (PLAYER1 + 0x0DE, ">H"),
    "surface": (PLAYER1 + 0x0F8, ">H"),
    "top_speed": (PLAYER1 + 0x214, ">f"),
    "drift_counter": (PLAYER1 + 0x228, ">h"),
    "drift_state": (PLAYER1 + 0x22A, ">h"),
}
FORMATS = {">f": "f32", ">i": "s32", ">I": "u32", ">h": "s16", ">H": "u16", ">b": "s8", ">B": "u8"}
DRIFTING, MINI_TURBO, MIDAIR = 0x10, 0x100, 0x8
LAKITU_SCENE, HELD_BY_LAKITU = 0x8, 0x2
GRASS, PAVEMENT, AIRBORNE = 0x08, 0x01, 0x00


class SyntheticMK64:
    """An 8 MiB big-endian RDRAM image laid out as LAYOUT says, with MK64's race variables."""

    DEFAULTS = {"completion0": 0.0, "lap": 0, "lap_start": 0.0, "timer": 0.0, "course": 13, "race_state": 3,
                "mode": 1, "rank": 0, "x": 0.0, "y": 0.0, "z": 0.0, "speed": 0.0, "effects": 0, "lakitu": 0,
                "oob": 0, "surface": PAVEMENT, "top_speed": 10.0, "drift_counter": 0, "drift_state": 0}

    def __init__(self):
        self.ram = bytearray(pf.RDRAM_SIZE)
        self.values = dict(self.DEFAULTS)
        for i in range(1, 8):  # other players: must not leak into player 1's reward
            self.values[f"completion{i}"] = 2.5 + i
        # player 2's copy of every player-1 field holds something else: an address off by one
        # struct would read it
        for addr, fmt in LAYOUT.values():
            if PLAYER1 <= addr < PLAYER1 + 0xDD8:
                struct.pack_into(fmt, self.ram, (addr + 0xDD8) & 0x1FFFFFFF, 7 if fmt[1] in "hHiI" else 99.0)

    def set(self, **values):
        self.values.update(values)
        for name, (addr, fmt) in LAYOUT.items():
            struct.pack_into(fmt, self.ram, addr & 0x1FFFFFFF, self.values[name])
        return pf.read_rdram(pf.MK64.fields, self.ram)


def _doc_table() -> dict[str, tuple[int, str]]:
    """name -> (address, type) from the tables in MK64_ADDRESSES.md."""
    doc = (Path(pf.__file__).parent / "MK64_ADDRESSES.md").read_text()
    rows = {}
    for m in re.finditer(r"^\| `([a-z_0-9]+)` \| `0x([0-9A-F]{8})` \| (\w+) \|", doc, re.M):
        rows[m.group(1)] = (int(m.group(2), 16), m.group(3))
    return rows


def test_mk64_profile_is_the_documented_layout():
    fields = {f.name: (f.address, f.type) for f in pf.MK64.fields}
    assert fields == {k: (a, FORMATS[f]) for k, (a, f) in LAYOUT.items()}
    doc = _doc_table()
    documented = {k: v for k, v in fields.items() if not k.startswith("completion") or k == "completion0"}
    assert doc == documented  # every field has its row in the doc, with the same address and type


def test_mk64_decoding_is_byte_exact_on_synthetic_rdram():
    ram = SyntheticMK64()
    values = {"completion0": 1.375, "lap": -1, "lap_start": 41.25, "timer": 83.5, "course": 13, "race_state": 3,
              "mode": 1, "rank": 7, "x": -1234.5, "y": 0.25, "z": 98765.0, "speed": 17.75,
              "effects": 0x80000110, "lakitu": -32768 | LAKITU_SCENE, "oob": 0xFFFE, "surface": 0x00FD,
              "top_speed": 12.5, "drift_counter": -300, "drift_state": 3}
    tel = ram.set(**values)
    for name, want in values.items():
        assert tel[name] == want, name
    assert [tel[f"completion{i}"] for i in range(1, 8)] == [2.5 + i for i in range(1, 8)]
    # the same bytes, read the way the plugin prints them, parse back exactly (u32 printed as an integer)
    header = ";".join(f"{k}={int(v)}" if float(v).is_integer() else f"{k}={v:.9g}" for k, v in tel.items())
    assert pf.parse_telemetry(header) == tel


def test_mk64_race_decoding():
    ram = SyntheticMK64()
    tel = ram.set(completion0=0.0, lap=0, timer=0.0, x=-10.5, y=2.0, z=300.25, rank=1, course=13)
    assert tel["completion0"] == 0.0 and tel["completion3"] == 5.5
    tr = pf.MK64.tracker()
    info = tr.start(tel)
    assert info["position"] == (-10.5, 2.0, 300.25) and info["course"] == 13 and info["rank"] == 1
    assert info["mode"] == 1 and info["race_state"] == 3 and info["surface"] == "road"

    reward, done, info = tr.step(ram.set(completion0=0.25, timer=4.0, speed=12.5))
    assert reward == pytest.approx(25.0) and not done  # a quarter lap x scale 100
    assert info["progress"] == pytest.approx(0.25) and info["speed"] == 12.5 and info["race_time"] == 4.0
    assert info["speed_kmh"] == pytest.approx(150.0)  # the game's own speed / 18 * 216

    assert tr.step(ram.set(completion0=0.75, timer=11.5, speed=13.0))[0] == pytest.approx(50.0)
    # lap 1 ends: its time is the game's own crossing time, not the poll's timer
    reward, done, info = tr.step(ram.set(completion0=1.125, lap=1, lap_start=15.25, timer=15.5))
    assert reward == pytest.approx(37.5) and info["lap"] == 1 and info["lap_times"] == [15.25]
    assert info["progress"] == pytest.approx(0.125)

    assert tr.step(ram.set(completion0=1.0, timer=16.0))[0] == pytest.approx(-12.5)  # backwards
    assert tr.step(ram.set(completion0=1.9, timer=17.0))[0] == 0.0  # a 0.9-lap jump is not driving

    reward, done, info = tr.step(ram.set(completion0=2.0, lap=2, lap_start=28.75, timer=29.0))
    assert info["lap_times"] == [15.25, 13.5] and not done and reward == pytest.approx(10.0)
    tr.step(ram.set(completion0=2.5, timer=35.0))
    reward, done, info = tr.step(ram.set(completion0=3.0, lap=3, lap_start=41.5, timer=41.75))
    assert done and info["finished"] and info["lap_times"] == [15.25, 13.5, 12.75]
    assert reward == pytest.approx(50.0)


def test_mk64_lap_time_falls_back_to_the_timer_when_the_crossing_is_stale():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker()
    tr.start(ram.set(timer=0.0, lap_start=90.0))  # left over from an earlier race
    tr.step(ram.set(completion0=0.9, timer=20.0))
    info = tr.step(ram.set(completion0=1.01, lap=1, timer=21.0))[2]
    assert info["lap_times"] == [21.0]
    tr.step(ram.set(completion0=1.5, timer=30.0, lap_start=35.0))  # moved without a lap: not this lap's
    info = tr.step(ram.set(completion0=2.01, lap=2, timer=40.0))[2]
    assert info["lap_times"] == [21.0, 19.0]


def test_mk64_falls_come_from_the_lakitu_flags():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker(reward={"progress": 1.0, "fall": -10.0})
    tr.start(ram.set())
    reward, _, info = tr.step(ram.set(surface=AIRBORNE, effects=MIDAIR))
    assert info["surface"] == "airborne" and info["airborne"] and info["falls"] == 0 and reward == 0.0
    reward, _, info = tr.step(ram.set(lakitu=LAKITU_SCENE))  # Lakitu called: one fall
    assert info["falls"] == 1 and info["surface"] == "falling" and reward == pytest.approx(-10.0)
    assert info["reward_terms"]["fall"] == 1.0
    for flags in (LAKITU_SCENE | HELD_BY_LAKITU, HELD_BY_LAKITU, LAKITU_SCENE):  # the same rescue
        reward, _, info = tr.step(ram.set(lakitu=flags))
        assert info["falls"] == 1 and reward == 0.0
    info = tr.step(ram.set(lakitu=0, surface=PAVEMENT, effects=0))[2]
    assert info["surface"] == "road"
    assert tr.step(ram.set(lakitu=0x100))[2]["falls"] == 1  # WENT_OVER_OOB alone is not a rescue
    reward, _, info = tr.step(ram.set(lakitu=LAKITU_SCENE))
    assert info["falls"] == 2 and reward == pytest.approx(-10.0)
    assert tr.start(ram.set(lakitu=LAKITU_SCENE))["falls"] == 0  # reset mid-rescue: not a new fall
    assert tr.step(ram.set())[2]["falls"] == 0


def test_mk64_drift_mini_turbo_and_drift_abort():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker(reward={"progress": 0.0, "boost": 0.1, "drift_abort": -3.0})
    tr.start(ram.set())
    # a drift charged to 2 and released: the game fires the mini-turbo the poll after
    for charge in (0, 1, 2, 2):
        reward, _, info = tr.step(ram.set(effects=DRIFTING, drift_state=charge))
        assert info["drift"] == 1 and info["drift_charge"] == charge and reward == 0.0
    reward, _, info = tr.step(ram.set(effects=0, drift_state=2))  # released
    assert reward == 0.0 and info["mini_turbos"] == 0 and not info["boost"]
    reward, _, info = tr.step(ram.set(effects=MINI_TURBO, drift_state=0))
    assert info["boost"] and info["mini_turbos"] == 1 and reward == pytest.approx(0.1)
    reward, _, info = tr.step(ram.set(effects=MINI_TURBO))
    assert info["mini_turbos"] == 1 and reward == pytest.approx(0.1)  # the same boost, still paid per poll
    tr.step(ram.set(effects=0))
    # a drift given up at charge 1: half the charge missing, paid once, the poll after the release
    tr.step(ram.set(effects=DRIFTING, drift_state=1))
    reward, _, info = tr.step(ram.set(effects=0, drift_state=1))
    assert reward == 0.0 and info["drift"] == 0
    reward, _, info = tr.step(ram.set(effects=0, drift_state=0))
    assert reward == pytest.approx(-3.0 * 0.5) and info["reward_terms"]["drift_abort"] == 0.5
    assert tr.step(ram.set())[0] == 0.0
    # released at a charge seen as 1, but the game fires anyway (it reached 2 between polls): no penalty
    tr.step(ram.set(effects=DRIFTING, drift_state=1))
    tr.step(ram.set(effects=0, drift_state=1))
    reward, _, info = tr.step(ram.set(effects=MINI_TURBO, drift_state=0))
    assert info["mini_turbos"] == 2 and reward == pytest.approx(0.1)
    # a drift with no charge at all costs the whole weight
    tr.step(ram.set(effects=DRIFTING, drift_state=0))
    tr.step(ram.set(effects=0))
    assert tr.step(ram.set())[0] == pytest.approx(-3.0)


def test_mk64_speed_and_offroad_terms():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker(reward={"progress": 1.0, "speed": 0.5, "offroad": -0.2})
    tr.start(ram.set())
    reward, _, info = tr.step(ram.set(speed=5.0, top_speed=10.0))
    assert reward == pytest.approx(0.25) and info["reward_terms"]["speed"] == pytest.approx(0.5)
    reward, _, info = tr.step(ram.set(speed=10.0, surface=GRASS))
    assert info["surface"] == "offroad" and reward == pytest.approx(0.5 - 0.2)
    for surf in (0x0B, 0x0D, 0xFD):  # Frappe / Kalimari off course, out of bounds
        assert tr.step(ram.set(speed=0.0, surface=surf))[2]["surface"] == "offroad"
    with pytest.raises(ValueError, match="unknown reward terms"):
        pf.MK64.tracker(reward={"jump": 1.0})


def test_reward_terms_a_profile_lacks_are_refused(monkeypatch):
    from envs.mupen.backend import MupenBackend
    from train.finetune.envs import RewardShaping

    assert pf.MK64.check_reward(RewardShaping().as_dict()) == []  # MK64 computes every term
    assert pf.TEST.check_reward({"progress": 1.0, "fall": -10.0, "speed": 0.0}) == ["fall", "progress"]
    nofall = dataclasses.replace(pf.MK64, name="nofall", reward_terms=("progress", "speed"))
    monkeypatch.setitem(pf.PROFILES, "nofall", nofall)
    with pytest.raises(ValueError, match=r"cannot compute reward term\(s\) \['boost', 'drift_abort', 'fall'\]"):
        MupenBackend(profile="nofall", rom="never-opened.z64", num_envs=1, shaping=RewardShaping())
    assert nofall.check_reward({"progress": 1.0, "speed": 0.1, "fall": 0.0}) == []


def test_the_default_reward_shaping_builds_an_mk64_tracker():
    """The learner's default shaping carries kartsim-only terms weighted 0 (drift_hold, edge) and the
    edge term's margin: the MK64 tracker gets only the terms it computes, and a kartsim-only term with a
    weight is refused by name."""
    from envs.mupen.backend import MupenBackend, _weights
    from train.finetune.envs import RewardShaping

    weights = _weights(RewardShaping())
    assert set(weights) == set(pf.REWARD_TERMS) and weights["fall"] == -10.0
    assert pf.MK64.tracker(reward=weights).weights == weights
    with pytest.raises(ValueError, match=r"cannot compute reward term\(s\) \['edge'\].*--r-edge 0"):
        MupenBackend(profile="mk64", rom="never-opened.z64", num_envs=1, shaping=RewardShaping(edge=-0.1))


def test_mk64_floats_survive_the_plugin_text_format():
    """The plugin prints f32 with %.9g: that text parses back to the same float32."""
    ram = SyntheticMK64()
    tel = ram.set(completion0=0.123456789, timer=1.0 / 3.0)
    header = ";".join(f"{k}={v:.9g}" for k, v in tel.items())
    back = pf.parse_telemetry(header)
    for k, v in tel.items():
        assert struct.pack(">f", back[k]) == struct.pack(">f", v)
    assert not math.isnan(back["timer"])


def test_mk64_lap_minus_one_at_the_start_line_is_not_a_lap():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker(laps=1)
    tr.start(ram.set(completion0=-0.02, lap=-1, timer=0.0))
    reward, done, info = tr.step(ram.set(completion0=0.01, lap=0, lap_start=0.4, timer=0.5))
    assert info["lap_times"] == [] and not done and reward == pytest.approx(3.0)
    tr.step(ram.set(completion0=0.5, lap=0, timer=10.5))
    reward, done, info = tr.step(ram.set(completion0=1.0, lap=1, lap_start=20.4, timer=20.5))
    assert done and info["lap_times"] == [20.0]
