"""Keep numba's on-disk cache honest.

numba re-validates a cached function only against its own source file, not
against the modules it reads constants or helpers from (kart.py, race.py,
texture.py). So a fingerprint of all kartsim sources is kept next to the cache;
when any source changed, the cached machine code is dropped and recompiled.
Runs on package import, before anything is compiled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).parent


def refresh() -> None:
    cache = HERE / "__pycache__"
    digest = hashlib.sha1()
    for src in sorted(HERE.glob("*.py")):
        digest.update(src.name.encode() + src.read_bytes())
    stamp = cache / "kartsim_jit.stamp"
    want = digest.hexdigest()
    try:
        if stamp.exists() and stamp.read_text() == want:
            return
        cache.mkdir(exist_ok=True)
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink(missing_ok=True)
        stamp.write_text(want)
    except OSError:  # read-only checkout: numba falls back to compiling in memory
        pass
