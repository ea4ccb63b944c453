"""Where a process tree's TCP sockets point: to check that something (a local Ray) stays on loopback.

``tcp_sockets(pids)`` lists the TCP sockets the given processes hold (from ``/proc/PID/fd`` and
``/proc/net/tcp``, ``tcp6``: this network namespace), ``off_loopback`` those bound to or connected
to anything but loopback (a listener on 0.0.0.0 or :: counts: it listens on every interface), and
``process_tree(pid)`` is a process and all of its descendants. Linux only.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

# /proc/net/tcp "st" codes (include/net/tcp_states.h)
STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
          7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def process_tree(root: int) -> set[int]:
    """``root`` and every process below it (by parent pid, read from /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state"
            children.setdefault(ppid, []).append(int(d.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


def _address(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # the kernel prints the address as 32-bit words in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def tcp_sockets(pids: set[int] | list[int]) -> list[dict]:
    """The TCP sockets (IPv4 and IPv6) that ``pids`` hold: pid, state, local and remote (host, port)."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[9] in owner:
                found.append({"pid": owner[f[9]], "state": STATES.get(int(f[3], 16), f[3]),
                              "local": _address(f[1]), "remote": _address(f[2])})
    return found


def _loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def off_loopback(sockets: list[dict]) -> list[dict]:
    """The sockets bound (a listener) or connected (any other) to an address that is not loopback."""
    return [s for s in sockets
            if not _loopback(s["local"][0]) or (s["state"] != "LISTEN" and not _loopback(s["remote"][0]))]
