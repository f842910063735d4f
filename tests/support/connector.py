"""Helpers for Service Connector tests: a `keyless postgres server create`d cluster that is
always removed, the cluster's superuser over its private Unix socket (to break things by hand
and to look at what a connection made), and apps run with `keyless app run`.

The superuser session needs no password: `server create` gives the cluster's own account trust
on its private socket (as root, the socket directory belongs to `postgres`, which root may
enter).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from keyless.gateway.cluster import Cluster, cluster_directory
from tests.support.server import KEYLESS, KeylessServer

PYTHON = sys.executable  # the venv's interpreter: the app imports keyless.identity and psycopg
RUN_TIMEOUT_S = 120  # an upper bound so nothing hangs, never a performance assertion


def superuser(server: dict[str, Any], dbname: str = "postgres") -> psycopg.Connection[Any]:
    """An autocommit session as the cluster's superuser, over its private socket."""
    props = server["properties"]
    managed = props["managed"]
    return psycopg.connect(
        host=managed["socketDirectory"],
        port=int(props["port"]),
        user=managed["superuser"],
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


def remove_cluster(server: KeylessServer, name: str, record: dict[str, Any] | None) -> None:
    """Stop and remove a cluster that `keyless postgres server delete` could not (the Keyless
    server died, the delete failed...): by its recorded properties, or where `server create`
    puts it. Only this test's own directory is touched."""
    directory = cluster_directory(server.data_dir.resolve(), name.lower())
    port, superuser_name, run_as = 0, "postgres", None
    if record is not None:
        props = record["properties"]
        directory = Path(props["managed"]["dataDirectory"]).parent
        port, superuser_name = int(props["port"]), props["managed"]["superuser"]
        run_as = props["managed"].get("runAs")
    if not directory.exists():
        return
    cluster = Cluster(directory, port, superuser_name, run_as)
    try:
        cluster.remove()
    except Exception:  # pg_ctl failed: end the postmaster by its own pid, then remove
        pidfile = cluster.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)


def run_app(
    server: KeylessServer,
    tmp_path: Path,
    group: str,
    app: str,
    script: str,
    args: dict[str, Any] | None = None,
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`keyless app run -g G -n APP -- python script OUT ARGS` to its end: (the run, the JSON the
    app wrote to OUT, or None if it wrote nothing). The app never writes a token there."""
    path = tmp_path / f"app_{uuid.uuid4().hex[:8]}.py"
    path.write_text(script)
    out = path.with_suffix(".json")
    done = subprocess.run(
        [*KEYLESS, "app", "run", "-g", group, "-n", app, "--",
         PYTHON, str(path), str(out), json.dumps(args or {})],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    result = json.loads(out.read_text()) if out.exists() else None
    out.unlink(missing_ok=True)
    return done, result


@contextlib.contextmanager
def created_cluster(
    server: KeylessServer, group: str, name: str, *databases: str
) -> Iterator[dict[str, Any]]:
    """`keyless postgres server create` with databases; always deleted (and, should the delete
    fail, stopped and removed by hand)."""
    record: dict[str, Any] | None = None
    try:
        args = ["postgres", "server", "create", "-g", group, "-n", name]
        for db in databases:
            args += ["--database", db]
        record = json.loads(server.cli(*args, timeout=240).stdout)
        yield record
    finally:
        try:
            if record is not None:
                server.cli("postgres", "server", "delete", "-g", group, "-n", name, "-y")
        finally:
            remove_cluster(server, name, record)
