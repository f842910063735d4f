"""One TCP socket's inode and owner uid by its 4-tuple, from the kernel's `sock_diag` netlink.

The managed identity endpoint needs the inode of the client's socket to find the process
behind a connection. Reading /proc/net/tcp for it makes the kernel walk every bucket of its
TCP hash tables and format every socket on the machine: ~7 ms on a VM with a large hash
table, however few sockets exist, and more with thousands in TIME_WAIT. A `sock_diag` query
for the exact 4-tuple (`inet_diag_req_v2` without NLM_F_DUMP) is one hash lookup in the
kernel: a few microseconds, whatever the machine holds. It needs no privilege and sees the
sockets of the caller's network namespace, as /proc/net/tcp does.

Layouts are those of <linux/netlink.h>, <linux/sock_diag.h> and <linux/inet_diag.h>.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
TCP_STATES_ALL = 0xFFFFFFFF
NO_COOKIE = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE, per 32-bit half: match any socket

# struct nlmsghdr: length, type, flags, sequence, port id (host byte order).
_HEADER = struct.Struct("=IHHII")
# struct inet_diag_req_v2 up to its sockid: family, protocol, extensions, pad, states.
_REQUEST = struct.Struct("=BBBxI")
# struct inet_diag_sockid: ports in network byte order, addresses as 16 raw bytes (an IPv4
# address in the first 4), the interface and the cookie in host byte order.
_PORTS = struct.Struct("!HH")
_TAIL = struct.Struct("=III")
# struct inet_diag_msg after its sockid: expires, rqueue, wqueue, uid, inode.
_MESSAGE_HEAD = struct.Struct("=BBBB")
_MESSAGE_TAIL = struct.Struct("=IIIII")
_SOCKID_SIZE = _PORTS.size + 16 + 16 + _TAIL.size
_MESSAGE_SIZE = _MESSAGE_HEAD.size + _SOCKID_SIZE + _MESSAGE_TAIL.size
_ERROR = struct.Struct("=i")
_TIMEOUT_S = 1.0  # the kernel answers while handling the send: this never waits in practice

_sequence = itertools.count(1)


class Unavailable(Exception):
    """This kernel or sandbox does not answer sock_diag queries (use /proc/net instead)."""


@dataclass(frozen=True)
class SocketOwner:
    inode: int  # 0 for a socket no process holds any more (TIME_WAIT)
    uid: int


def _address(host: str) -> tuple[int, bytes]:
    address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone
    if address.version == 4:
        return socket.AF_INET, address.packed + bytes(12)
    return socket.AF_INET6, address.packed


def lookup(local: tuple[str, int], remote: tuple[str, int]) -> SocketOwner | None:
    """The TCP socket whose own address is `local` and whose peer is `remote`; None if this
    network namespace has no such socket. Raises Unavailable where sock_diag cannot answer."""
    family, src = _address(local[0])
    remote_family, dst = _address(remote[0])
    if remote_family != family:
        return None
    sequence = next(_sequence) & 0xFFFFFFFF
    request = (
        _REQUEST.pack(family, socket.IPPROTO_TCP, 0, TCP_STATES_ALL)
        + _PORTS.pack(local[1], remote[1])
        + src
        + dst
        + _TAIL.pack(0, NO_COOKIE, NO_COOKIE)
    )
    message = (
        _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, sequence, 0)
        + request
    )
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(_TIMEOUT_S)
            nl.sendto(message, (0, 0))
            reply = nl.recv(8192)
    except (OSError, AttributeError) as exc:  # no AF_NETLINK, blocked by a sandbox, ...
        raise Unavailable(f"sock_diag query failed: {exc}") from None
    return _parse(reply, sequence, local[1], remote[1], src, dst)


def _parse(
    reply: bytes, sequence: int, local_port: int, remote_port: int, src: bytes, dst: bytes
) -> SocketOwner | None:
    if len(reply) < _HEADER.size:
        raise Unavailable("sock_diag answered with a truncated message")
    length, kind, _flags, seq, _port = _HEADER.unpack_from(reply)
    if seq != sequence or length > len(reply):
        raise Unavailable("sock_diag answered another request")
    if kind == NLMSG_ERROR:
        (code,) = _ERROR.unpack_from(reply, _HEADER.size)
        if -code == errno.ENOENT:
            return None
        raise Unavailable(f"sock_diag refused the query: {errno.errorcode.get(-code, -code)}")
    if kind != SOCK_DIAG_BY_FAMILY or length < _HEADER.size + _MESSAGE_SIZE:
        raise Unavailable(f"sock_diag answered with message type {kind}")
    at = _HEADER.size + _MESSAGE_HEAD.size
    ports = _PORTS.unpack_from(reply, at)
    at += _PORTS.size
    got_src, got_dst = reply[at : at + 16], reply[at + 16 : at + 32]
    # The kernel found the socket by this 4-tuple; check that it is the one we asked for.
    if ports != (local_port, remote_port) or got_src != src or got_dst != dst:
        raise Unavailable("sock_diag answered with another socket")
    _expires, _rqueue, _wqueue, uid, inode = _MESSAGE_TAIL.unpack_from(
        reply, _HEADER.size + _MESSAGE_HEAD.size + _SOCKID_SIZE
    )
    return SocketOwner(inode=inode, uid=uid)
