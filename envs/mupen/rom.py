"""N64 ROM header: byte order, internal name and the two header CRCs.

A ROM comes in three byte orders (.z64 big-endian, .v64 16-bit swapped, .n64
32-bit little-endian); the header's magic word tells which, and
common.mupen.to_big_endian (the one place that knows them) turns any into the
N64's own order. The game profile checks the name and CRCs before anything
runs, so a wrong ROM is refused with a message instead of producing nonsense telemetry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from common.mupen import RomError, byte_order, to_big_endian

HEADER_SIZE = 0x40


@dataclass(frozen=True)
class RomHeader:
    path: str
    byte_order: str  # "z64" | "v64" | "n64"
    name: str  # internal name, trailing blanks stripped
    crc1: int
    crc2: int
    game_code: str  # e.g. "NKTE" (media, 2-char id, country)

    @property
    def crc(self) -> str:
        return f"{self.crc1:08X}-{self.crc2:08X}"


def read_header(path: str | Path) -> RomHeader:
    """Read and decode the 64-byte header of ``path``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(HEADER_SIZE)
    except OSError as exc:
        raise RomError(f"cannot read ROM {path}: {exc.strerror}") from exc
    if len(raw) < HEADER_SIZE:
        raise RomError(f"ROM {path} is {len(raw)} bytes, shorter than an N64 header")
    try:
        head = to_big_endian(raw)
    except RomError as exc:
        raise RomError(f"ROM {path}: {exc}") from exc
    crc1, crc2 = struct.unpack(">II", head[0x10:0x18])
    name = head[0x20:0x34].decode("ascii", "replace").rstrip(" \x00")
    code = head[0x3B:0x3F].decode("ascii", "replace")
    return RomHeader(str(path), byte_order(raw), name, crc1, crc2, code)


def read_big_endian(path: str | Path, offset: int, size: int) -> bytes:
    """``size`` bytes of the ROM at ``offset``, in the N64's (big-endian) order."""
    with open(path, "rb") as fh:
        start = offset - offset % 4
        fh.seek(start)
        chunk = fh.read(size + (offset - start) + 4)
    if len(chunk) < size:
        raise RomError(f"ROM {path} ends before offset 0x{offset + size:X}")
    # Re-use the header magic to know the byte order of this chunk.
    with open(path, "rb") as fh:
        magic = fh.read(4)
    be = to_big_endian(magic + chunk[: len(chunk) // 4 * 4])[4:]
    return be[offset - start : offset - start + size]
