"""Several server processes on one port, each with a listening socket of its own.

uvicorn's supervisor binds one socket and hands it to every worker. The workers then race to
accept: all of them are woken for each new connection, and whichever runs first accepts every
connection waiting. Clients that open their keep-alive connections together (a connection
pool, a load test) could all land on one worker and stay there, leaving the other CPUs idle:
one of three 16-connection runs put 2.45 CPU-s on one worker and 0.03 on the other. With
`SO_REUSEPORT` each worker listens on a socket of its own, bound to the same port, and the
kernel spreads new connections over them. Everything else (starting, health checks,
restarting a dead worker, signals) is uvicorn's supervisor, unchanged.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from keyless.base import loop


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other sockets of this user may bind to the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = loop.tcp_listening_socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class OwnSocketWorkers(Multiprocess):
    """uvicorn's supervisor, giving each worker it starts a socket of its own."""

    def __init__(self, config: Config, bind: Callable[[], socket.socket]) -> None:
        self._bind = bind
        self._ours: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        """Read by the supervisor once for each worker it starts, just before starting it.

        The previous worker was started by now, and starting a worker hands it its socket
        (multiprocessing keeps a copy until the worker takes it), so this process's copies are
        closed here: a worker's socket must close when that worker dies, or new connections
        the kernel gives it would wait for an accept that never comes."""
        for old in self._ours:
            old.close()
        self._ours = [self._bind()]
        return self._ours

    @sockets.setter
    def sockets(self, _value: list[socket.socket]) -> None:
        """uvicorn's __init__ sets the one shared socket; there is none."""
