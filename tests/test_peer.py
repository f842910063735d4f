"""The managed identity endpoint's process binding (Linux): the socket lookup (sock_diag
netlink, and /proc/net as the fallback) and the process-tree walk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from keyless.host import peer, sock_diag

pytestmark = pytest.mark.skipif(not peer.supported(), reason="process binding needs Linux /proc")

# A child that starts a grandchild, prints both pids, and waits to be killed.
TREE = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(grandchild.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        yield child.pid, grandchild
    finally:
        subprocess.run(["pkill", "-P", str(child.pid)], check=False)
        child.kill()
        child.wait(timeout=10)


@pytest.mark.parametrize("children_lists", [True, False], ids=["kernel-lists", "ppid-scan"])
def test_the_walk_finds_the_whole_tree_the_app_first(
    tree: tuple[int, int], children_lists: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the kernel's children lists (the fast path) and without them (the scan of every
    process's parent), the same processes, the app itself first, and nothing outside it."""
    child, grandchild = tree
    if not children_lists:
        monkeypatch.setattr(peer, "_children", lambda _pid: None)
    walked = list(peer._tree_nearest_first(child))
    assert walked[0] == child
    assert set(walked) == {child, grandchild}
    assert len(walked) == len(set(walked))


# A process outside the test's control flow that holds a client socket: it connects to the
# given address, prints its own port, and waits to be killed.
CLIENT = """
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family)
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def _loopback(family: socket.AddressFamily) -> str:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        with socket.socket(family) as probe:
            probe.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} loopback here")
    return host


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    host = _loopback(request.param)
    with socket.socket(request.param) as server:
        server.bind((host, 0))
        server.listen()
        yield server


@pytest.fixture
def netlink_or_proc(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the sock_diag path, or with netlink unavailable (the /proc fallback)."""
    if request.param == "proc":

        def unavailable(*_args: object) -> None:
            raise sock_diag.Unavailable("switched off for this test")

        monkeypatch.setattr(sock_diag, "lookup", unavailable)
    return str(request.param)


def _pair(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.socket(server.family)
    client.connect(server.getsockname()[:2])
    accepted, _ = server.accept()
    return client, accepted


def test_sock_diag_finds_the_clients_socket_and_agrees_with_proc(
    listener: socket.socket,
) -> None:
    """By the exact 4-tuple: the client's own socket (its inode is what fstat reports), owned
    by this process's user; the server's end is a different socket; /proc/net says the same."""
    client, accepted = _pair(listener)
    with client, accepted:
        mine, theirs = client.getsockname()[:2], accepted.getsockname()[:2]
        owner = sock_diag.lookup(mine, theirs)
        assert owner is not None
        assert owner.inode == os.fstat(client.fileno()).st_ino
        assert owner.uid == os.geteuid()
        server_end = sock_diag.lookup(theirs, mine)
        assert server_end is not None
        assert server_end.inode == os.fstat(accepted.fileno()).st_ino
        assert peer._proc_socket_inode(mine, theirs) == owner.inode
        assert peer.socket_inode(mine, theirs) == owner.inode


def test_sock_diag_answers_none_for_a_connection_that_does_not_exist(
    listener: socket.socket,
) -> None:
    client, accepted = _pair(listener)
    with client, accepted:
        host, port = client.getsockname()[:2]
        theirs = accepted.getsockname()[:2]
        assert sock_diag.lookup((host, port), theirs) is not None
        with socket.socket(listener.family) as unused:  # a port nobody is connected from
            unused.bind((host, 0))
            assert sock_diag.lookup((host, unused.getsockname()[1]), theirs) is None
        other = "::1" if listener.family == socket.AF_INET else "127.0.0.1"
        assert sock_diag.lookup((host, port), (other, theirs[1])) is None  # mixed families


@pytest.mark.parametrize("netlink_or_proc", ["netlink", "proc"], indirect=True)
def test_only_the_process_holding_the_socket_and_its_ancestors_pass(
    listener: socket.socket, netlink_or_proc: str
) -> None:
    """A client in another process: allowed when the app's root is that process or an
    ancestor of it, refused for an unrelated root, on the netlink path and the /proc path."""
    host, port = listener.getsockname()[:2]
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, host, str(port)], stdout=subprocess.PIPE, text=True
    )
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert client.stdout is not None
        client_port = int(client.stdout.readline())
        accepted, address = listener.accept()
        with accepted:
            assert address[1] == client_port
            verdict = peer.check_peer(accepted, client.pid)
            assert verdict.allowed and verdict.pid == client.pid, verdict
            assert peer.check_peer(accepted, os.getpid()) == verdict  # the client's parent
            refused = peer.check_peer(accepted, unrelated.pid)
            assert not refused.allowed and refused.pid is None
            assert "not part of the app" in refused.reason
    finally:
        for process in (client, unrelated):
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("netlink_or_proc", ["netlink", "proc"], indirect=True)
def test_a_socket_no_process_holds_is_refused(
    listener: socket.socket, netlink_or_proc: str
) -> None:
    """The client closed its end (now orphaned in FIN_WAIT2, inode 0): no process can be shown
    to own it, even though the caller was this very process."""
    client, accepted = _pair(listener)
    mine, theirs = client.getsockname()[:2], accepted.getsockname()[:2]
    client.close()
    with accepted:
        assert accepted.recv(1) == b""  # the client's FIN has arrived
        assert peer.socket_inode(mine, theirs) == 0
        verdict = peer.check_peer(accepted, os.getpid())
        assert not verdict.allowed and verdict.pid is None
        assert "not visible" in verdict.reason
