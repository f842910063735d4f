"""The README's main command, as a new user runs it: `scripts/quickstart --stop` on a fresh
data directory sets up Keyless, creates a PostgreSQL server and an app with a system-assigned
identity, connects them, and runs the sample app, which writes and reads rows with a token.
Run twice: the second run reuses everything. Afterwards nothing is left running."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyless.gateway.cluster import cluster_directory
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "keyless"
    yield data
    cluster = cluster_directory(data.resolve(), "todo-pg")
    pidfile = cluster / "data" / "postmaster.pid"
    if pidfile.exists():  # the script failed before stopping it
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 15)
    shutil.rmtree(cluster, ignore_errors=True)


def _run(data: Path, port: int, gateway_port: int) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYLESS_", "AZURE_", "IDENTITY_", "MSI_", "PG"))
        and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
    }
    env.update(
        KEYLESS_DATA_DIR=str(data),
        KEYLESS_PORT=str(port),
        KEYLESS_GATEWAY_PORT=str(gateway_port),
        KEYLESS_VENV=str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv"))),
    )
    return subprocess.run(
        [str(ROOT / "scripts" / "quickstart"), "--stop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_runs_the_passwordless_postgres_scenario(data_dir: Path) -> None:
    port, gateway_port = free_port(), free_port()
    first = _run(data_dir, port, gateway_port)
    assert first.returncode == 0, first.stderr[-4000:]
    out = first.stdout
    assert "no password in the app's environment" in out
    assert "connected as database role aad_postgres_todo with a Keyless token" in out
    assert "read 3 rows:" in out
    assert "PASS  login through the gateway" in out
    assert "password=" not in out.lower()
    assert "stopped Keyless and PostgreSQL" in first.stderr
    assert not _listening(port) and not _listening(gateway_port)

    second = _run(data_dir, port, gateway_port)  # everything exists: reused, not recreated
    assert second.returncode == 0, second.stderr[-4000:]
    assert "read 6 rows:" in second.stdout
    assert "already exists" in second.stderr
    assert not _listening(port)
