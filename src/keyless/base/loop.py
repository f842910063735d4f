"""The event loop Keyless's servers run on, and the sockets they listen on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop, as uvicorn's own runner picks for multi-worker servers; asyncio's loop where
    uvloop is not installed (it is optional in uvicorn[standard] on some systems)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run` on the loop above."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)


def tcp_listening_socket(family: socket.AddressFamily) -> socket.socket:
    """A socket for a server to bind and listen on, with SO_REUSEADDR.

    IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    listening socket says it is TCP, and without it Nagle's algorithm holds back each keep-alive
    response until the client's delayed ACK (~40 ms a request).
    """
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock
