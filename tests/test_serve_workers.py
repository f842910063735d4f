"""`keyless serve` without `--workers` uses the machine: one worker process per CPU it may run
on (its affinity mask, as a container or `taskset` sets it), and `--workers` still overrides.

Real parts: `keyless init` and `keyless serve` as subprocesses; the worker processes are
counted in /proc (uvicorn spawns each with `multiprocessing.spawn`), and every count is checked
by issuing a token through the running server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyless.server.run import MAX_WORKERS, default_workers
from tests.support.server import KeylessServer

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only"
)


def _session_processes(leader: int) -> list[str]:
    """The command lines of every process in the server's session (it starts one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[3]) == leader:
            found.append(cmdline)
    return found


def _workers(server: KeylessServer, expected: int) -> int:
    """Worker processes of a running server; waits (bounded) for the supervisor to spawn them."""
    assert server.process is not None
    deadline = time.monotonic() + 60
    while True:
        spawned = [c for c in _session_processes(server.process.pid) if "spawn_main" in c]
        if len(spawned) >= expected or time.monotonic() > deadline:
            return len(spawned)
        time.sleep(0.2)


@contextlib.contextmanager
def _affinity(cpus: set[int]) -> Iterator[None]:
    """Start children on these CPUs only (they inherit the mask when forked)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _issues_token(server: KeylessServer) -> None:
    sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", "workers-check", "--secret")
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": sp["appId"],
                "client_secret": sp["password"],
                "scope": "api://keyless/management/.default",
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def test_default_is_one_worker_per_usable_cpu(tmp_path: Path) -> None:
    usable = len(os.sched_getaffinity(0))
    assert default_workers() == min(usable, MAX_WORKERS)
    server = KeylessServer(tmp_path / "data", workers=None)
    try:
        server.start()
        # One CPU: one process serves everything itself (uvicorn spawns no workers).
        assert _workers(server, default_workers()) == (
            default_workers() if default_workers() > 1 else 0
        )
        _issues_token(server)
    finally:
        server.stop()


def test_default_follows_the_affinity_mask(tmp_path: Path) -> None:
    """Limited to one CPU (as `taskset -c 0 keyless serve` would), the default is one
    process: no spawned workers competing for that CPU."""
    one = {min(os.sched_getaffinity(0))}
    server = KeylessServer(tmp_path / "data", workers=None)
    try:
        server.init()
        with _affinity(one):
            server.serve()
        assert server.process is not None
        assert os.sched_getaffinity(server.process.pid) == one
        time.sleep(1)  # a supervisor would have spawned its workers by now
        assert _workers(server, 0) == 0
        _issues_token(server)
    finally:
        server.stop()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell 1 from N")
def test_workers_option_overrides_the_default(tmp_path: Path) -> None:
    server = KeylessServer(tmp_path / "data", workers=1)
    try:
        server.start()
        time.sleep(1)
        assert _workers(server, 0) == 0
        _issues_token(server)
    finally:
        server.stop()


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the sockets listening on this TCP port (/proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def _worker_pids(server: KeylessServer) -> list[int]:
    assert server.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
            session = int(stat[stat.rfind(")") + 2 :].split()[3])
            if session == server.process.pid and b"spawn_main" in cmdline:
                pids.append(int(entry.name))
    return sorted(pids)


def _wait_for(condition: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for 2 workers")
def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """One shared socket let whichever worker woke first accept every connection waiting;
    with a socket per worker (SO_REUSEPORT) the kernel spreads them. A worker that dies takes
    its socket with it, even the last one started (whose socket the supervisor handed over),
    and its replacement listens on a new one."""
    server = KeylessServer(tmp_path / "data", workers=2)
    try:
        server.start()
        _wait_for(lambda: len(_worker_pids(server)) == 2)
        _wait_for(lambda: len(_listening_sockets(server.port)) == 2)
        before = _listening_sockets(server.port)
        last = _worker_pids(server)[-1]
        os.kill(last, signal.SIGKILL)
        _wait_for(lambda: last not in _worker_pids(server) and len(_worker_pids(server)) == 2)
        _wait_for(lambda: len(_listening_sockets(server.port)) == 2)
        after = _listening_sockets(server.port)
        assert len(before & after) == 1  # the survivor's socket stays, the dead one's is gone
        _issues_token(server)
    finally:
        server.stop()
