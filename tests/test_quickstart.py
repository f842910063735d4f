"""The README's main command, as a new user runs it: `scripts/quickstart --stop` on a fresh
data directory sets up Keyless, creates a PostgreSQL server and an app with a system-assigned
identity, connects them, and runs the sample app, which writes and reads rows with a token.
Run twice: the second run reuses everything. Afterwards nothing is left running."""

from __future__ import annotations

import os
import shutil
import signal
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


def _env(data: Path, port: int, gateway_port: int) -> dict[str, str]:
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
    return env


def _run(data: Path, port: int, gateway_port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "quickstart"), "--stop"],
        env=_env(data, port, gateway_port),
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


def _postgres_running(data: Path) -> bool:
    return (cluster_directory(data.resolve(), "todo-pg") / "data" / "postmaster.pid").exists()


def test_ctrl_c_stops_both_and_the_printed_lines_run_as_printed(data_dir: Path) -> None:
    """Without --stop the quickstart waits and prints lines for another terminal: pasted into a
    shell that has neither the virtualenv nor KEYLESS_DATA_DIR, they run. Then Ctrl-C (SIGINT to
    the whole foreground process group, as a terminal sends it) stops Keyless and PostgreSQL."""
    port, gateway_port = free_port(), free_port()
    env = _env(data_dir, port, gateway_port)
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "quickstart")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # its own process group: the "terminal" we send Ctrl-C to
    )
    try:
        assert process.stderr is not None
        printed: list[str] = []
        for line in process.stderr:
            printed.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        text = "".join(printed)
        assert "In another terminal:" in text, text[-4000:]
        pasted = [
            ln.strip() for ln in text.split("In another terminal:", 1)[1].splitlines()
            if ln.startswith("  ")
        ]  # fmt: skip
        assert pasted[0].startswith("source ")
        new_terminal = {k: v for k, v in env.items() if not k.startswith("KEYLESS_")}
        new_terminal["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        ran = subprocess.run(
            ["bash", "-ec", "\n".join(pasted)],
            env=new_terminal,
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "AZURE_POSTGRESQL_CONNECTIONSTRING" in ran.stdout
        assert "read 6 rows:" in ran.stdout
        assert _postgres_running(data_dir) and _listening(port)

        os.killpg(process.pid, signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "stopped Keyless and PostgreSQL" in rest, rest[-3000:]
    assert process.returncode == 130
    assert not _postgres_running(data_dir)
    assert not _listening(port) and not _listening(gateway_port)
