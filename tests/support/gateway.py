"""The token gateway for tests: in-process on its own event loop thread (for protocol tests
with ldap3's client and raw sockets), or as the real `keyless gateway serve` subprocess (for
PostgreSQL end to end). Loopback only, bounded, always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from keyless.authority.context import Authority
from keyless.gateway.decision import BindChecker
from keyless.gateway.server import Gateway
from keyless.gateway.settings import GatewaySettings
from tests.support.server import KEYLESS, KeylessServer, free_port

START_TIMEOUT_S = 30


class GatewayThread:
    """A `Gateway` served by an event loop on a daemon thread; `port` once started."""

    def __init__(self, authority: Authority, settings: GatewaySettings) -> None:
        self.gateway = Gateway(settings, BindChecker(authority), authority.grant_log)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self._loop).result(10)
        self.port = self.gateway.port
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.gateway.close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


class GatewayProcess:
    """`keyless gateway serve` against a running Keyless server's data directory and store."""

    def __init__(self, server: KeylessServer, tls: bool = False) -> None:
        self.server = server
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        suffix = "ldaps" if tls else "ldap"
        self.log_path = server.data_dir.parent / f"{server.data_dir.name}-gateway-{suffix}.log"

    def __enter__(self) -> GatewayProcess:
        args = ["gateway", "serve", "--port", str(self.port), *(["--tls"] if self.tls else [])]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*KEYLESS, *args],
                env=self.server.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keyless gateway serve exited: {self.log_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"keyless gateway serve did not listen in {START_TIMEOUT_S}s")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def world_readable(path: Path) -> Iterator[Path]:
    """A world-readable copy of a public file (the CA certificate) for a server that runs as
    another OS user (PostgreSQL under root drops to `postgres`); removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="keyless-ca-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        copy = directory / path.name
        copy.write_bytes(path.read_bytes())
        copy.chmod(0o644)
        yield copy
    finally:
        shutil.rmtree(directory, ignore_errors=True)
