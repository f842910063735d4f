"""`keyless app run`: start an app's process as that app, with its managed identity endpoint.

The child gets the app's settings as environment variables and the App Service identity
variables (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`; `MSI_ENDPOINT`, `MSI_SECRET` for older SDKs)
and nothing secret: the header is random per run, kept only in memory, and without the
process-tree check (Linux) it would still be useless outside this machine's loopback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from keyless.base import loop
from keyless.host import peer
from keyless.host.endpoint import (
    APP_SERVICE_PATH,
    Fetch,
    TokenSource,
    create_endpoint_app,
    peer_checked_protocol,
)

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# What the app must not inherit from whoever runs it: another identity's credentials, and the
# operator's own Keyless session.
STRIPPED_PREFIXES = ("KEYLESS_", "IDENTITY_", "MSI_")
STRIPPED_NAMES = {
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
}
RESTART_GRACE_S = 30.0


@dataclass
class RunningEndpoint:
    base: str
    url: str
    header: str
    source: TokenSource
    child_pid: list[int] = field(default_factory=list)

    def serve_to(self, pid: int) -> None:
        """The app's process is now `pid` (its first start, or a restart)."""
        self.child_pid[:] = [pid]


def child_environment(
    base: dict[str, str], settings: dict[str, str], endpoint: RunningEndpoint
) -> dict[str, str]:
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(STRIPPED_PREFIXES) and k not in STRIPPED_NAMES
    }
    env.update(settings)
    env.update(
        IDENTITY_ENDPOINT=endpoint.url,
        IDENTITY_HEADER=endpoint.header,
        MSI_ENDPOINT=endpoint.url,
        MSI_SECRET=endpoint.header,
    )
    return env


@contextlib.contextmanager
def serve_endpoint(
    fetch: Fetch, bind_to_process: bool = True, port: int = 0, *, shared_imds: bool = False
) -> Iterator[RunningEndpoint]:
    """The endpoint on a loopback port (a free one by default), in a thread of its own, for
    the block's duration. `shared_imds` opens the IMDS path to every local process (a machine
    identity, `keyless app serve-imds`); by default it needs the header secret too."""
    sock = loop.tcp_listening_socket(socket.AF_INET)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror})") from None
    port = sock.getsockname()[1]
    running = RunningEndpoint(
        base=f"http://127.0.0.1:{port}",
        url=f"http://127.0.0.1:{port}{APP_SERVICE_PATH}",
        header=secrets.token_urlsafe(32),
        source=TokenSource(fetch),
    )

    def root() -> int | None:
        return running.child_pid[0] if running.child_pid else None

    protocol: Any = (
        peer_checked_protocol(root) if bind_to_process and peer.supported() else "httptools"
    )
    config = uvicorn.Config(
        create_endpoint_app(running.source, running.header, shared_imds=shared_imds),
        http=protocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: loop.run(server.serve(sockets=[sock])), name="keyless-mi", daemon=True
    )
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _spawn(command: list[str], env: dict[str, str], cwd: str | None) -> subprocess.Popen[bytes]:
    if cwd is not None and not os.path.isdir(cwd):
        # Popen reports a missing cwd as FileNotFoundError too: say which one is missing.
        raise RuntimeError(
            f"cannot start in {cwd!r} (the app's workingDirectory): no such directory"
        )
    try:
        return subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
    except FileNotFoundError:
        raise RuntimeError(f"cannot start {command[0]!r}: no such program") from None
    except PermissionError:
        raise RuntimeError(f"cannot start {command[0]!r}: permission denied") from None
    except OSError as exc:  # e.g. ENOEXEC: a script without a #! line
        raise RuntimeError(f"cannot start {command[0]!r}: {exc.strerror}") from None


class Restarts:
    """Lets another thread (`keyless app run --watch`) end the running child and have
    `run_child` start it again with a new environment: SIGTERM, then SIGKILL if it has not
    ended within `grace` seconds. A terminating signal the user sends (SIGINT, SIGTERM,
    SIGQUIT) cancels a pending restart: the app then ends as asked."""

    def __init__(self, grace: float = RESTART_GRACE_S, say: Callable[[str], None] = print) -> None:
        self.grace = grace
        self._say = say
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._ended = threading.Event()
        self._env: dict[str, str] | None = None
        self._stopping = False

    def request(self, env: dict[str, str]) -> bool:
        """Restart the child with `env`; False if there is no running child to restart (it is
        ending on its own, or the user asked it to)."""
        with self._lock:
            child = self._child
            if child is None or child.poll() is not None or self._stopping:
                return False
            pending = self._env is not None
            self._env = env
            ended = self._ended
        if not pending:
            child.send_signal(signal.SIGTERM)
            threading.Thread(
                target=self._kill_late, args=(child, ended), name="keyless-restart", daemon=True
            ).start()
        return True

    def _kill_late(self, child: subprocess.Popen[bytes], ended: threading.Event) -> None:
        if not ended.wait(self.grace):
            self._say(f"the app did not end within {self.grace:g}s of SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def _started(self, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._child, self._ended = child, threading.Event()

    def _stopped(self) -> dict[str, str] | None:
        """After the child ended: the environment to start it again with, if asked to."""
        with self._lock:
            self._ended.set()
            self._child = None
            env, self._env = self._env, None
            return None if self._stopping else env

    def _user_signal(self, signum: int) -> None:
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            with self._lock:
                self._stopping = True


def run_child(
    command: list[str],
    env: dict[str, str],
    cwd: str | None,
    started: Callable[[int], None],
    restarts: Restarts | None = None,
) -> int:
    """Run the child to its end, forwarding signals; its exit code (128+N if killed by N).
    With `restarts`, a child ended for a restart is started again (`started` is called with
    each new pid) and only the last one's exit code counts."""
    child = _spawn(command, env, cwd)
    started(child.pid)
    current = [child]

    def forward(signum: int, _frame: Any) -> None:
        if restarts is not None:
            restarts._user_signal(signum)
        current[0].send_signal(signum)

    previous = {}
    for signum in FORWARDED_SIGNALS:
        previous[signum] = signal.signal(signum, forward)
    try:
        while True:
            if restarts is not None:
                restarts._started(child)
            code = child.wait()
            again = restarts._stopped() if restarts is not None else None
            if again is None:
                break
            child = _spawn(command, again, cwd)
            current[0] = child
            started(child.pid)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code
