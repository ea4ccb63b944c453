"""Keeping the C allocator from handing frame-sized buffers back to the kernel per request.

A process that receives a 230 KB frame per poll allocates and frees buffers of
that size hundreds of times a second. glibc serves sizes over its mmap threshold
(128 KiB at start) with mmap and returns them with munmap, so every page of every
such buffer is faulted in again on the next poll. glibc raises the threshold by
itself to the size of a mapped buffer when one is freed, but waitress reads with
``recv(1 MiB)``: CPython allocates 1 MiB and shrinks it to the 230 KB that came,
so the threshold only ever rises to 230 KB and every next 1 MiB read is mapped
afresh (tests/test_common_memory.py: 58 faults per frame, 0.1 with this).
Measured on the drive server's HTTP floor (``bench.drive``'s route that only
reads the frame): about 120 page faults per poll on a server's first
connection, none on later ones, and twice the latency (0.55 against 0.28 ms at
p50). The plugin keeps its first connection for the whole race.

``keep_freed_memory`` fixes both thresholds once, at start: buffers up to
``mmap_threshold`` come from the heap, and up to ``trim_threshold`` of freed
heap stays mapped for the next poll. It only changes where memory is kept, not
how much the program can use. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for the dynamic threshold (64-bit): frames and recv buffers
TRIM_THRESHOLD = 128 << 20


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where there is no glibc mallopt."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
