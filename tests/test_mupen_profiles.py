"""Game profiles and ROM headers, on synthetic ROMs and synthetic RDRAM (no emulator, no commercial ROM)."""

from __future__ import annotations

import math
import struct

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
    assert "speed:0x800F6BBC:f32" in entries and "x:0x800F69A4:f32" in entries
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


class SyntheticMK64:
    """An 8 MiB big-endian RDRAM image with MK64's race variables."""

    def __init__(self):
        self.ram = bytearray(pf.RDRAM_SIZE)

    def set(self, completion=0.0, lap=0, timer=0.0, speed=0.0, pos=(0.0, 0.0, 0.0), rank=0, course=13):
        w = pf.write_rdram
        w(self.ram, pf.COMPLETION, "f32", completion)
        for i in range(1, 8):  # other players: must not leak into player 1's reward
            w(self.ram, pf.COMPLETION + 4 * i, "f32", 2.5 + i)
        w(self.ram, pf.LAP_COUNT, "s32", lap)
        w(self.ram, pf.LAP_COUNT + 4, "s32", 7)
        w(self.ram, pf.COURSE_TIMER, "f32", timer)
        w(self.ram, pf.COURSE_ID, "s16", course)
        w(self.ram, pf.PLAYERS + 0x04, "s16", rank)
        for off, v in zip((0x14, 0x18, 0x1C), pos, strict=True):
            w(self.ram, pf.PLAYERS + off, "f32", v)
        w(self.ram, pf.PLAYERS + 0x22C, "f32", speed)
        w(self.ram, pf.PLAYERS + pf.PLAYER_SIZE + 0x22C, "f32", 99.0)  # player 2's speed
        return pf.read_rdram(pf.MK64.fields, self.ram)


def test_mk64_decoding_on_synthetic_rdram():
    ram = SyntheticMK64()
    tel = ram.set(completion=0.0, lap=0, timer=0.0, speed=0.0, pos=(-10.5, 2.0, 300.25), rank=1, course=13)
    assert tel["completion0"] == 0.0 and tel["completion3"] == 5.5
    tr = pf.MK64.tracker()
    info = tr.start(tel)
    assert info["position"] == (-10.5, 2.0, 300.25) and info["course"] == 13 and info["rank"] == 1

    tel = ram.set(completion=0.25, lap=0, timer=4.0, speed=12.5)
    reward, done, info = tr.step(tel)
    assert reward == pytest.approx(25.0) and not done  # a quarter lap x scale 100
    assert info["progress"] == pytest.approx(0.25) and info["speed"] == 12.5 and info["race_time"] == 4.0

    tel = ram.set(completion=0.75, lap=0, timer=11.5, speed=13.0)
    assert tr.step(tel)[0] == pytest.approx(50.0)
    tel = ram.set(completion=1.125, lap=1, timer=15.5, speed=13.0)
    reward, done, info = tr.step(tel)
    assert reward == pytest.approx(37.5) and info["lap"] == 1 and info["lap_times"] == [15.5]
    assert info["progress"] == pytest.approx(0.125)

    tel = ram.set(completion=1.0, lap=1, timer=16.0)  # drove backwards: negative reward
    assert tr.step(tel)[0] == pytest.approx(-12.5)

    tel = ram.set(completion=1.9, lap=1, timer=17.0)  # a 0.9-lap jump in one step is not driving
    assert tr.step(tel)[0] == 0.0

    tel = ram.set(completion=2.0, lap=2, timer=29.0)
    reward, done, info = tr.step(tel)
    assert info["lap_times"] == [15.5, 13.5] and not done and reward == pytest.approx(10.0)

    tr.step(ram.set(completion=2.5, lap=2, timer=35.0))
    tel = ram.set(completion=3.0, lap=3, timer=41.75)
    reward, done, info = tr.step(tel)
    assert done and info["lap_times"] == [15.5, 13.5, 12.75] and reward == pytest.approx(50.0)


def test_mk64_floats_survive_the_plugin_text_format():
    """The plugin prints f32 with %.9g: that text parses back to the same float32."""
    ram = SyntheticMK64()
    tel = ram.set(completion=0.123456789, timer=1.0 / 3.0)
    header = ";".join(f"{k}={v:.9g}" for k, v in tel.items())
    back = pf.parse_telemetry(header)
    for k, v in tel.items():
        assert struct.pack(">f", back[k]) == struct.pack(">f", v)
    assert not math.isnan(back["timer"])


def test_mk64_lap_minus_one_at_the_start_line_is_not_a_lap():
    ram = SyntheticMK64()
    tr = pf.MK64.tracker(laps=1)
    tr.start(ram.set(completion=-0.02, lap=-1, timer=0.0))
    reward, done, info = tr.step(ram.set(completion=0.01, lap=0, timer=0.5))
    assert info["lap_times"] == [] and not done and reward == pytest.approx(3.0)
    tr.step(ram.set(completion=0.5, lap=0, timer=10.5))
    reward, done, info = tr.step(ram.set(completion=1.0, lap=1, timer=20.5))
    assert done and info["lap_times"] == [20.0]
