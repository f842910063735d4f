"""Local PostgreSQL clusters for `keyless postgres server create`: the quickstart's and the
tests' database, made from the system's PostgreSQL binaries and enabled from birth.

No password is ever set. The cluster's superuser logs in only over its private Unix socket
(trust, in a directory only the cluster's account can open); TCP on loopback accepts the
gateway's token logins (the lines `register` writes) and SCRAM for roles someone later gives a
password. PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres`
account, in a directory that account owns.

The postmaster starts with `SASL_PATH` naming an empty directory. PostgreSQL's `ldap` method
links libldap, which starts Cyrus SASL in every new backend, and SASL then loads every plugin it
finds (8 shared libraries on Debian) though PostgreSQL only makes simple binds: ~1 ms of CPU and
of latency on every token login (docs/postgres.md says how to do the same for a registered
server).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from keyless.base.errors import KeylessError

_TOOLS = ("initdb", "pg_ctl", "postgres")
ROOT_CLUSTERS = Path("/var/lib/keyless-postgres")


class ClusterError(KeylessError, RuntimeError):
    """The local cluster cannot be made or run; the message says what to do."""


def find_bindir() -> Path:
    """The PostgreSQL server binaries: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    found = [shutil.which(t) for t in _TOOLS]
    if all(found):
        dirs = {Path(p).resolve().parent for p in found if p}
        if len(dirs) == 1:
            return dirs.pop()

    def version(d: str) -> tuple[int, ...]:
        return tuple(int(x) for x in Path(d).parent.name.split(".") if x.isdigit())

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(d, t), os.X_OK) for t in _TOOLS):
            return Path(d)
    raise ClusterError(
        "PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found on PATH or in "
        "/usr/lib/postgresql/*/bin; install them (Debian: apt-get install postgresql) or "
        "register an existing server with `keyless postgres server register`"
    )


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "PostgreSQL does not run as root and there is no `postgres` account to run it as; "
            "create one (useradd --system postgres) or run keyless as an ordinary user"
        ) from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """A cluster directory: `data/` (PGDATA), the socket, `postgres.log`."""

    directory: Path
    port: int
    superuser: str
    run_as: str | None = None  # the account PostgreSQL runs as, when it is not ours

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.directory

    @property
    def sasl_dir(self) -> Path:
        """Empty on purpose: the postmaster's SASL_PATH, so no SASL plugin is loaded."""
        return self.directory / "sasl-none"

    def _make_sasl_dir(self) -> None:
        self.sasl_dir.mkdir(mode=0o700, exist_ok=True)
        if self.run_as is not None:
            account = pwd.getpwnam(self.run_as)
            os.chown(self.sasl_dir, account.pw_uid, account.pw_gid)

    def admin_url(self, database: str = "postgres") -> str:
        """The superuser over the private socket: no password, only this account can use it."""
        host = quote(str(self.socket_dir), safe="")
        return (
            f"postgresql://{quote(self.superuser)}@/{quote(database)}?host={host}&port={self.port}"
        )

    def _tool(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(find_bindir() / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["SASL_PATH"] = str(self.sasl_dir)  # the postmaster inherits it from pg_ctl
        try:
            return subprocess.run(
                command, cwd=self.directory, env=env, capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{args[0]} did not finish in {timeout:.0f} s") from None

    def running(self) -> bool:
        return self._tool("pg_ctl", "status", "-D", str(self.data), timeout=15).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        self._make_sasl_dir()  # clusters made before it get it at their next start
        result = self._tool(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log_file),
            timeout=90,
        )  # fmt: skip
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
            raise ClusterError(
                f"PostgreSQL did not start (port {self.port} in use?):\n{result.stderr.strip()}"
                f"\n{tail}"
            )

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        result = self._tool(
            "pg_ctl", "stop", "-m", "fast", "-t", "30", "-D", str(self.data), timeout=45
        )
        if result.returncode != 0 and self.running():
            raise ClusterError(f"PostgreSQL did not stop: {result.stderr.strip()}")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def cluster_directory(data_dir: Path, name: str) -> Path:
    """`<data dir>/postgres/<name>`; as root, a directory the postgres account owns (the data
    directory is 0700 root, which PostgreSQL's account cannot enter)."""
    if os.geteuid() != 0:
        return data_dir / "postgres" / name
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return ROOT_CLUSTERS / f"{name}-{digest}"


def _install_tls(
    cluster: Cluster, account: pwd.struct_passwd | None, cert: bytes, key: bytes
) -> dict[str, str]:
    """The certificate and its key in the cluster's data directory (0600, the cluster's
    account's: PostgreSQL refuses a key others may read); the settings that serve them."""
    for name, data in (("server.crt", cert), ("server.key", key)):
        path = cluster.data / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
    return {"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}


def initialise(
    directory: Path, port: int | None = None, tls: tuple[bytes, bytes] | None = None
) -> Cluster:
    """initdb a new cluster in `directory` (which must not exist yet) and start it; with `tls`
    (certificate PEM, private key PEM) it serves TLS with them."""
    if directory.exists():
        raise ClusterError(
            f"{directory} already exists; delete the server (`keyless postgres server delete`) "
            "or remove the directory"
        )
    account = _run_as()
    superuser = "postgres" if account is not None else pwd.getpwuid(os.getuid()).pw_name
    # As root the parent is shared by clusters of several data directories and must let the
    # postgres account through; each cluster's own directory stays 0700.
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o755 if account else 0o700)
    if account is not None:
        directory.parent.chmod(0o755)
    directory.mkdir(mode=0o700)
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
    cluster = Cluster(
        directory, port or free_port(), superuser, account.pw_name if account else None
    )
    try:
        result = cluster._tool(
            "initdb", "-D", str(cluster.data), "-U", superuser, "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", timeout=180,
        )  # fmt: skip
        if result.returncode != 0:
            raise ClusterError(f"initdb failed:\n{result.stderr.strip()}")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": "'" + str(cluster.socket_dir).replace("'", "''") + "'",
            "unix_socket_permissions": "0700",
            "max_connections": "200",
        }
        if tls is not None:
            settings.update(_install_tls(cluster, account, *tls))
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# keyless postgres server create\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster
