"""A Keyless server of the benchmark's own: `keyless init` + `keyless serve` in a fresh
temporary data directory, HTTPS on a free loopback port, no token gateway (its fixed default
port may be taken by another Keyless on a shared machine), always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.machine import cpu_times, log, session_members

_SCRIPT = Path(sys.executable).parent / "keyless"
# The installed console script, exactly as a user runs it.
KEYLESS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "keyless.cli.main"]
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
START_TIMEOUT_S = 60


def default_workers() -> int:
    """What `keyless serve` runs without --workers: one worker per usable CPU (at most 64)."""
    return max(1, min(len(os.sched_getaffinity(0)), 64))


def server_workers(workers: int | None) -> str | int:
    """The workers a report names: the number given, or the server's default."""
    return workers if workers else f"default ({default_workers()})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    data_dir: Path
    workers: int | None = 1  # None: no --workers, the server's default (one per usable CPU)
    experiment: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    tenant_id: str = ""
    subscription_id: str = ""

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "serve.log"

    def env(self, **extra: str) -> dict[str, str]:
        """This shell's environment minus anything that would change what is measured."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AZURE_", "KEYLESS_", "MSI_", "IDENTITY_"))
            and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
            and "proxy" not in k.lower()
        }
        env["KEYLESS_DATA_DIR"] = str(self.data_dir)
        env["NO_PROXY"] = "localhost,127.0.0.1,::1"
        env.update(extra)
        return env

    def serve_env(self) -> dict[str, str]:
        env = self.env()
        if self.experiment:
            # Prototype patches (bench/experiments/sitecustomize.py), server processes only.
            env["PYTHONPATH"] = os.pathsep.join(
                [str(EXPERIMENTS), *filter(None, [env.get("PYTHONPATH")])]
            )
            env["KEYLESS_BENCH_EXPERIMENT"] = ",".join(self.experiment)
        return env

    def shell_env(self) -> dict[str, str]:
        """The operator's shell after `eval "$(keyless env)"`."""
        exports = {}
        for line in self.cli("env").splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, value = words[1].split("=", 1)
                exports[name] = value
        return self.env(**exports)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*KEYLESS, *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"keyless {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args))

    def start(self) -> None:
        report = self.cli_json("init", "--port", str(self.port), "--gateway-port", "0")
        self.tenant_id, self.subscription_id = report["tenant"], report["subscription"]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *KEYLESS,
                    "serve",
                    "--port",
                    str(self.port),
                    *(["--workers", str(self.workers)] if self.workers else []),
                ],
                env=self.serve_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        context = self.ssl_context()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keyless serve exited: {self.log_path.read_text()[-3000:]}")
            if self.healthy(context) and (self.data_dir / "login.sock").exists():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"keyless serve did not start in {START_TIMEOUT_S}s")
        # With several workers the first answer comes from whichever is up first: wait until
        # the supervisor has all of its workers, then give them a moment to finish importing.
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self.pids()) < self.worker_count + (1 if self.worker_count > 1 else 0):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for _ in range(4 * self.worker_count):
            httpx.get(f"{self.endpoint}/healthz", verify=context, timeout=10)
        time.sleep(1.0)

    @property
    def worker_count(self) -> int:
        """The worker processes the server runs: --workers, or its default."""
        return self.workers or default_workers()

    def healthy(self, context: ssl.SSLContext) -> bool:
        try:
            return (
                httpx.get(f"{self.endpoint}/healthz", verify=context, timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.endpoint, verify=self.ssl_context(), timeout=30)

    def admin_token(self) -> str:
        """The first administrator's token (`keyless login`: the OS user, no password)."""
        self.cli("login")
        token = json.loads((self.data_dir / "cli" / "token.json").read_text())
        return str(token["accessToken"])

    def pids(self) -> list[int]:
        """Every process of the server (its session: supervisor, workers)."""
        return session_members(self.process.pid) if self.process is not None else []

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds used so far by every live server process."""
        return cpu_times(self.pids())

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by every live server process."""
        return sum(self.cpu_times())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@contextlib.contextmanager
def running_server(
    workers: int | None = 1,
    keep: bool = False,
    experiment: list[str] | None = None,
    prefix: str = "keyless-bench-",
) -> Iterator[Server]:
    """A started server in a temporary directory, stopped (and the directory removed unless
    `keep`) however the block ends."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = Server(root / "data", workers, experiment or [])
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
