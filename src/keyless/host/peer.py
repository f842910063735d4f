"""Which process is on the other end of a loopback TCP connection (Linux, through /proc).

The managed identity endpoint serves a token only to the app's own process tree: a leaked
`IDENTITY_HEADER` is useless to any other process. The kernel names the client's socket by
its inode: asked with a `sock_diag` netlink query for the connection's exact 4-tuple (one
hash lookup, see keyless.host.sock_diag), or, where netlink is unavailable, found in
/proc/net/tcp{,6}, which lists every TCP socket of the machine. The process owning the
client's socket has a `/proc/{pid}/fd/*` link to `socket:[inode]`. Only the pids of the app's
tree are searched.

Where it cannot apply: other operating systems; a client in another PID or network
namespace (a container) whose sockets and /proc entries we cannot see; /proc mounted with
hidepid; and a process of the same user can always ptrace or inject into the app itself — this
binding stops header theft, not a same-user attacker with debugger rights.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from keyless.host import sock_diag

PROC = Path("/proc")


@dataclass(frozen=True)
class PeerVerdict:
    allowed: bool
    pid: int | None
    reason: str


def supported() -> bool:
    return sys.platform.startswith("linux") and (PROC / "net" / "tcp").exists()


def _hex_address(host: str, port: int) -> str:
    """The address as /proc/net/tcp{,6} prints it: little-endian 32-bit words, then the port."""
    packed = ipaddress.ip_address(host).packed
    words = [packed[i : i + 4][::-1].hex().upper() for i in range(0, len(packed), 4)]
    return f"{''.join(words)}:{port:04X}"


# Whether sock_diag has found a socket in this process: until it has, its "no such socket"
# may mean that the kernel lacks the TCP handler (a module not loaded), so /proc is asked too.
_netlink_proven = False


def socket_inode(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The inode of the client's socket of the connection client -> server (None if none)."""
    global _netlink_proven
    try:
        owner = sock_diag.lookup(client, server)
    except sock_diag.Unavailable:
        return _proc_socket_inode(client, server)
    if owner is not None:
        _netlink_proven = True
        return owner.inode
    return None if _netlink_proven else _proc_socket_inode(client, server)


def _proc_socket_inode(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The fallback: the kernel formats every TCP socket of the namespace for this read."""
    local, remote = _hex_address(*client), _hex_address(*server)
    family = "tcp6" if ":" in client[0] else "tcp"
    try:
        table = (PROC / "net" / family).read_bytes()
    except OSError:
        return None
    # The table holds every socket on the machine (thousands in TIME_WAIT on a busy host):
    # find our line with one search instead of splitting them all.
    at = table.find(f" {local} {remote} ".encode())
    if at < 0:
        return None
    fields = table[at : table.find(b"\n", at)].split()
    return int(fields[8]) if len(fields) > 8 else None


def _children(pid: int) -> list[int] | None:
    """Direct children from /proc/{pid}/task/*/children; None where the kernel lacks it."""
    found: list[int] = []
    tasks = f"/proc/{pid}/task"
    try:
        names = os.listdir(tasks)
    except OSError:
        return []
    for task in names:
        try:
            with open(f"{tasks}/{task}/children", "rb") as listed:
                found.extend(int(c) for c in listed.read().split())
        except FileNotFoundError:
            return None
        except OSError:
            continue
    return found


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants, from each process's parent pid in /proc/{pid}/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: ppid is the 2nd field after ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def _owns_inode(pid: int, inode: int) -> bool:
    # Plain strings, not pathlib: this runs for every new connection, once per fd of each
    # process searched, and Path objects were most of its cost.
    target = f"socket:[{inode}]"
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{fds}/{name}") == target:
                return True
        except OSError:
            continue
    return False


def check_peer(sock: socket.socket, root_pid: int) -> PeerVerdict:
    """Whether the process at the other end of `sock` is `root_pid` or one of its descendants."""
    try:
        client = sock.getpeername()[:2]
        server = sock.getsockname()[:2]
    except OSError:
        return PeerVerdict(False, None, "the connection has no peer address")
    inode = socket_inode((client[0], client[1]), (server[0], server[1]))
    if not inode:  # none, or 0: no process holds it any more
        return PeerVerdict(False, None, "the caller's socket is not visible to this host")
    for pid in _tree_nearest_first(root_pid):
        if _owns_inode(pid, inode):
            return PeerVerdict(True, pid, f"process {pid} in the app's process tree")
    return PeerVerdict(
        False, None, "the calling process is not part of the app started by `keyless app run`"
    )


def _tree_nearest_first(root: int) -> Iterator[int]:
    """The app's processes, the app itself first: walking down from it reads only the tree's
    own /proc entries; without the kernel's children lists, every process's parent is read."""
    seen, frontier, done = {root}, [root], set()
    while frontier:
        pid = frontier.pop(0)
        yield pid
        done.add(pid)
        children = _children(pid)
        if children is None:
            yield from sorted(process_tree(root) - done)
            return
        for child in children:
            if child not in seen:
                seen.add(child)
                frontier.append(child)
