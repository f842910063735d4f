"""A real, throwaway PostgreSQL server for tests: loopback only, password auth, always stopped.

Tests talk to a genuine server (not SQLite, not a mock) so SQL dialect, locking and auth
behave as in production. Every subprocess call is time-bounded, and an ``atexit`` hook
stops the server even if the test run crashes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from keyless.gateway.cluster import ClusterError, find_bindir

_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin. Run the project's test script, which installs the "
    "`postgresql` package from Debian."
)


def find_pg_bindir() -> Path:
    """Return the directory holding initdb/pg_ctl/postgres (PATH first, then newest Debian):
    the same search `keyless postgres server create` makes."""
    try:
        return find_bindir()
    except ClusterError:
        raise RuntimeError(_HINT) from None


def _free_port() -> int:
    """Ask the kernel for an unused loopback port (tiny race until postgres binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root, so pick an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor 'nobody' user exists")


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir; use as a context manager or start()/stop()."""

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(
        self,
        bindir: Path | None = None,
        hba_lines: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`hba_lines` replace initdb's pg_hba.conf rules for TCP clients (the superuser keeps
        scram over TCP and trust on the private socket); `env` is added to the server's
        environment (e.g. LDAPTLS_CACERT for `ldap` authentication over LDAPS)."""
        self.bindir = bindir or find_pg_bindir()
        self.hba_lines = list(hba_lines or [])
        self.extra_env = dict(env or {})
        self.password = secrets.token_urlsafe(24)  # never log this
        self.port = 0
        self._tmp: Path | None = None
        self._user = _run_as_user()

    @property
    def base_dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("PostgresServer is not started")
        return self._tmp

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool (as the unprivileged user if root), bounded by ``timeout``."""
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user.pw_name, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.update(self.extra_env)
        return subprocess.run(
            cmd, cwd=self.base_dir, env=env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> PostgresServer:
        """initdb a fresh cluster (scram over TCP, trust only on the private socket), start it."""
        if self._tmp is not None:
            return self
        self._tmp = Path(tempfile.mkdtemp(prefix="keyless-pg-", dir="/tmp"))  # mode 0700
        atexit.register(self.stop)
        try:
            if self._user is not None:
                os.chown(self._tmp, self._user.pw_uid, self._user.pw_gid)
            pwfile = self.base_dir / "pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password + "\n")
            if self._user is not None:
                os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
            try:
                res = self._run(
                    "initdb", "-D", str(self.data_dir), "-U", self.superuser,
                    "--pwfile", str(pwfile), "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--locale=C", "--no-sync", timeout=120,
                )  # fmt: skip
            finally:
                pwfile.unlink(missing_ok=True)
            if res.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{res.stdout}\n{res.stderr}")
            if self.hba_lines:
                self._write_hba()
            self.port = _free_port()
            fast = "fsync=off synchronous_commit=off full_page_writes=off"
            settings = [
                f"listen_addresses={self.host}", f"port={self.port}",
                f"unix_socket_directories={self.socket_dir}", *fast.split(),
                "max_connections=200", "shared_buffers=64MB",
            ]  # fmt: skip
            opts = " ".join(f"-c {shlex.quote(o)}" for o in settings)  # pg_ctl runs it via sh
            res = self._run(
                "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data_dir),
                "-l", str(self.log_path), "-o", opts, timeout=60,
            )  # fmt: skip
            if res.returncode != 0:
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(f"pg_ctl start failed:\n{res.stdout}\n{res.stderr}\n{log}")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_hba(self) -> None:
        rules = [
            "local all all trust",
            f"host all {self.superuser} {self.host}/32 scram-sha-256",
            *self.hba_lines,
        ]
        # Opening the existing file keeps its owner and mode (the server's account when root).
        with (self.data_dir / "pg_hba.conf").open("w") as handle:
            handle.write("\n".join(rules) + "\n")

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl cannot stop the server: SIGQUIT, then SIGKILL."""
        pidfile = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            for sig in (signal.SIGQUIT, signal.SIGKILL):
                os.kill(pid, sig)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                    time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its files. Safe to call repeatedly."""
        if self._tmp is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                try:
                    res = self._run(
                        "pg_ctl", "stop", "-m", "fast", "-t", "30", "-D", str(self.data_dir),
                        timeout=45,
                    )  # fmt: skip
                    if res.returncode != 0:
                        self._kill_postmaster()
                except (OSError, subprocess.TimeoutExpired):
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            atexit.unregister(self.stop)

    def admin_url(self) -> str:
        """libpq URL for the superuser over TCP (contains the password: do not log it)."""
        return self._url("postgresql", "postgres")

    def sqlalchemy_url(self, dbname: str) -> str:
        """SQLAlchemy URL using the psycopg 3 driver."""
        return self._url("postgresql+psycopg", dbname)

    def _url(self, scheme: str, dbname: str) -> str:
        pw = quote(self.password, safe="")
        return f"{scheme}://{self.superuser}:{pw}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (needs autocommit: it cannot run inside a transaction)."""
        with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server shared by the whole test session."""
    with PostgresServer() as server:
        yield server
