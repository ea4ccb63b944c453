"""The one command-line convention of every ``python -m ...`` command (README "Command lines").

* Sizes are ``HxW``: rows x columns, the numpy and model order (``66x200``, ``240x320``).
  ``parse_size`` is the one parser; any other form (``WxH`` cannot be told apart, but
  ``66,200``, ``66x200x3``, ``66X200``, ``x200``) is refused with a message naming the
  option and the format.
* Errors are one line, ``<prog>: error: <message>``, on stderr, exit status 2: argparse's
  own ``parser.error`` for bad options, ``fail`` / ``reported`` for what goes wrong after
  parsing (a missing file, a bad value, a domain error).
* ``--json`` prints one JSON object as the last line of stdout, through ``emit_json``.
* Subcommands dispatch one way: ``add_command`` makes the subparser and records its
  function (``args.fn``) and its prog (``args.prog``, for ``fail``).

This module imports only the standard library, so ``--help`` stays fast everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import PurePath
from typing import NoReturn

SIZE_FORMAT = "HxW (rows x columns, e.g. 66x200 or 240x320)"
_SIZE = re.compile(r"([0-9]+)x([0-9]+)")


class SizeError(ValueError, argparse.ArgumentTypeError):
    """A size not written as HxW (argparse reports it as ``argument --opt: <message>``)."""


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """``"66x200"`` -> ``(66, 200)`` (height, width); anything else raises SizeError.

    ``minimum``: the smallest height and width accepted."""
    m = _SIZE.fullmatch(str(text).strip())
    if m is None:
        raise SizeError(f"expected {SIZE_FORMAT}, got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < minimum or w < minimum:
        raise SizeError(f"{text!r}: height and width must be at least {minimum}")
    return h, w


def size_arg(minimum: int = 1):
    """An argparse ``type=`` for an HxW option; argparse names the option in the error."""

    def size(text: str) -> tuple[int, int]:
        return parse_size(text, minimum)

    return size


def int_at_least(minimum: int):
    """An argparse ``type=`` for a whole number of at least ``minimum``; argparse names the option in the error."""

    def whole(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {minimum}")
        return n

    return whole


def format_size(hw) -> str:
    """``(66, 200)`` -> ``"66x200"``: the inverse of parse_size."""
    h, w = hw
    return f"{int(h)}x{int(w)}"


def fail(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with status 2 (argparse's rule)."""
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def describe(exc: BaseException) -> str:
    """An exception as the message after ``error:`` (an OSError names its file)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


ERRORS = (ValueError, OSError)  # FileNotFoundError, FileExistsError, full disks; domain errors subclass these


@contextlib.contextmanager
def reported(prog: str, *errors: type[BaseException]):
    """Turn ``errors`` (default: ValueError and OSError) raised inside into ``fail(prog, ...)``."""
    caught = errors or ERRORS
    try:
        yield
    except caught as exc:
        fail(prog, describe(exc))


def _plain(obj):
    """What json cannot write by itself: paths, numpy scalars and arrays, sets and tuples."""
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


JSON_HELP = "print the result as one JSON object, the last line of stdout"


def add_json(parser, help: str = JSON_HELP) -> None:
    """The ``--json`` switch, with the same help everywhere."""
    parser.add_argument("--json", action="store_true", help=help)


def emit_json(obj) -> None:
    """Print ``obj`` as one JSON object on one line: the last line a ``--json`` command prints."""
    print(json.dumps(obj, default=_plain), flush=True)


def emit(obj: dict, as_json: bool) -> None:
    """A command's result: the one JSON line (``--json``), or ``key: value`` lines for people."""
    if as_json:
        emit_json(obj)
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def add_command(sub, name: str, fn, **kw) -> argparse.ArgumentParser:
    """``sub.add_parser(name, **kw)`` whose parse sets ``args.fn`` (what runs) and ``args.prog``."""
    p = sub.add_parser(name, **kw)
    p.set_defaults(fn=fn, prog=p.prog)
    return p
