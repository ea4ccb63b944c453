"""Replace a file atomically: write a temp file in the same folder, fsync it, rename it over the target.

A crash, a kill or a full disk in the middle of a write leaves the previous
good file in place (and at worst a ``.NAME.tmp-*`` file beside it); readers
only ever see the old complete file or the new complete one.

    with replacing("data/models/pilotnet.keras") as tmp:
        model.save(tmp)          # any writer that takes a path

The temp name keeps the target's extension, so writers that check it (Keras
wants ``.keras``) accept it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp path beside ``path``; on a clean exit fsync it and rename it over ``path``.

    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    ext = os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=ext, dir=folder)
    os.close(fd)
    with contextlib.suppress(OSError):  # mkstemp makes 0600: keep the old file's mode, or the usual 0644
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Atomically replace ``path`` with ``data``."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def write_text(path: str | os.PathLike, text: str) -> str:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))
