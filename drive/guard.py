"""Who may talk to the drive server: Host, Origin and token checks.

The server answers only names it knows, so a web page cannot reach it through
DNS rebinding (its requests carry the attacker's Host), and a page on another
origin cannot change its state (mode, recording, reset):

* ``Host`` must be the bound address, ``localhost``, ``127.0.0.1`` or ``[::1]``
  (any port), or a name given with ``--allow-host``; a request without Host
  (HTTP/1.0, as mupen64plus-input-bot sends) is let through. Otherwise 403.
* A request other than GET/HEAD that carries an ``Origin`` must come from one
  of those names (or the request's own Host); a cross-origin state change
  is refused with 403, as is ``Sec-Fetch-Site: cross-site``.
* Bound to a non-loopback address the server needs a token (``--token`` or
  ``KARTPILOT_DRIVE_TOKEN``): a request from another machine must carry it as
  ``Authorization: Bearer <token>``, ``X-KartPilot-Token: <token>`` or the
  cookie the dashboard sets when opened once as ``/?token=<token>``. Requests
  from this machine (loopback peers) are judged by Host and Origin alone. A
  request carrying the valid token may use any Host name.
"""

from __future__ import annotations

import ipaddress
import secrets
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
TOKEN_ENV = "KARTPILOT_DRIVE_TOKEN"
TOKEN_HEADER = "X-KartPilot-Token"
TOKEN_COOKIE = "kartpilot_token"
SAFE_METHODS = ("GET", "HEAD")


class Refused(Exception):
    """A request the guard refuses (403 unless ``status`` says otherwise)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.message = message
        self.status = status


def is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost`` (a bind address or a peer address)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """``"Example.com:8082"`` -> ``"example.com"``, ``"[::1]:80"`` -> ``"[::1]"``; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[:end + 1], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def _bracket(host: str) -> str:
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Guard:
    """The checks for one server bound to ``bind_host``; ``check`` raises Refused."""

    def __init__(self, bind_host: str = "127.0.0.1", token: str | None = None, allow_hosts=()):
        self.bind_host = bind_host
        self.token = token or None
        names = set(LOOPBACK_NAMES) | {_bracket(h) for h in allow_hosts}
        if bind_host:
            names.add(_bracket(bind_host))
        self.allowed = frozenset(names)
        if not is_loopback(bind_host) and not self.token:
            raise ValueError(
                f"binding {bind_host or 'all addresses'} (not loopback) needs a token: pass --token or set "
                f"{TOKEN_ENV}; every request from another machine must then carry it")

    def token_matches(self, given: str | None) -> bool:
        return bool(self.token and given and secrets.compare_digest(given.encode(), self.token.encode()))

    def _has_token(self, headers, cookies) -> bool:
        if not self.token:
            return False
        auth = headers.get("Authorization", "")
        given = [auth[7:].strip()] if auth[:7].lower() == "bearer " else []
        given += [headers.get(TOKEN_HEADER), cookies.get(TOKEN_COOKIE)]
        return any(self.token_matches(g) for g in given)

    def check(self, method: str, headers, cookies, peer: str, query_token: str | None = None) -> None:
        """Refuse the request (raise Refused) unless it may be served."""
        token_ok = self._has_token(headers, cookies) or self.token_matches(query_token)
        if self.token and not token_ok and not is_loopback(peer or ""):
            raise Refused(f"this server is bound to {self.bind_host} and needs its token from {peer}: send "
                          f"'Authorization: Bearer <token>' or open the dashboard once as /?token=<token>", 401)
        host = headers.get("Host")
        if host is not None and not token_ok:
            name = host_name(host)
            if name not in self.allowed:
                raise Refused(f"Host {host[:80]!r} is not this server's name (allowed: "
                              f"{', '.join(sorted(self.allowed))}, any port; --allow-host adds one)")
        if method in SAFE_METHODS:
            return
        origin = headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin.strip().lower())
            name = host_name(parts.netloc) if parts.scheme in ("http", "https") else None
            same = host is not None and parts.netloc == host.strip().lower()
            if not same and name not in self.allowed:
                raise Refused(f"cross-origin {method} from {origin[:80]!r} refused: "
                              f"use the dashboard served by this server")
        elif headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise Refused(f"cross-site {method} refused (Sec-Fetch-Site: cross-site)")
