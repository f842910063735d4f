"""A real Keyless server for tests: `keyless init` + `keyless serve` as subprocesses, HTTPS on a
loopback port, its own data directory, always stopped.

`KeylessServer.cli(...)` runs the real `keyless` command against it, so tests exercise exactly
what a user types.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

_SCRIPT = Path(sys.executable).parent / "keyless"
# The installed console script, exactly as a user runs it.
KEYLESS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "keyless.cli.main"]
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a user would have after `eval "$(keyless env)"`, minus anything this
    machine sets that would hide a bug (CA bundles, proxies, Azure variables)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "KEYLESS_", "MSI_", "IDENTITY_"))
        and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
        and "proxy" not in k.lower()
    }
    env["KEYLESS_DATA_DIR"] = str(data_dir)
    env["NO_PROXY"] = "localhost,127.0.0.1,::1"
    env.update(extra)
    return env


class CliFailed(AssertionError):
    pass


class KeylessServer:
    def __init__(
        self,
        data_dir: Path,
        store_url: str | None = None,
        workers: int | None = 1,  # None: no --workers, the server's default
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`env`: settings for every command against this server (e.g. KEYLESS_JWKS_MAX_AGE)."""
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.store_url = store_url
        self.workers = workers
        self.extra_args = extra_args or []
        self.port = free_port()
        # Every test server embeds its own token gateway on a port of its own.
        self.gateway_port = free_port()
        self.endpoint = f"https://localhost:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.tenant_id = ""
        self.subscription_id = ""
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca.pem"

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env(self.data_dir, **{**self.extra_env, **extra})
        if self.store_url:
            env["KEYLESS_STORE_URL"] = self.store_url
        return env

    def azure_env(self, **extra: str) -> dict[str, str]:
        """What `keyless env` exports, for azure-identity in a child process."""
        return self.env(
            AZURE_AUTHORITY_HOST=self.endpoint,
            AZURE_TENANT_ID=self.tenant_id,
            REQUESTS_CA_BUNDLE=str(self.ca_file),
            SSL_CERT_FILE=str(self.ca_file),
            KEYLESS_ENDPOINT=self.endpoint,
            **extra,
        )

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*KEYLESS, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise CliFailed(
                f"keyless {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def start(self) -> None:
        self.init()
        self.serve()

    def init(self) -> None:
        init_args = ["init", "--port", str(self.port), "--gateway-port", str(self.gateway_port)]
        report = self.cli_json(*init_args)
        self.tenant_id, self.subscription_id = report["tenant"], report["subscription"]

    def serve(self) -> None:
        """`keyless serve` on the data directory as it is (`init` has run), until healthy."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *KEYLESS,
                "serve",
                "--port",
                str(self.port),
                *(["--workers", str(self.workers)] if self.workers is not None else []),
                *self.extra_args,
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        context = ssl.create_default_context(cafile=str(self.ca_file))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keyless serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.endpoint}/healthz", verify=context, timeout=2)
                if response.status_code == 200 and (self.data_dir / "login.sock").exists():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"keyless serve did not start in {START_TIMEOUT_S}s")

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

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.endpoint,
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=30,
        )

    def token_url(self, tenant: str | None = None) -> str:
        return f"{self.endpoint}/{tenant or self.tenant_id}/oauth2/v2.0/token"

    def admin_token(self) -> str:
        self.cli("login")
        token = json.loads((self.data_dir / "cli" / "token.json").read_text())
        return str(token["accessToken"])

    def audit(self, **filters: str) -> list[dict[str, Any]]:
        args = ["audit", "list", "--limit", "1000"]
        for key, value in filters.items():
            args += [f"--{key}", value]
        return list(self.cli_json(*args))


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[KeylessServer]:
    server = KeylessServer(data_dir, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def keyless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    """One server shared by the tests that only add to the directory."""
    with running_server(tmp_path_factory.mktemp("keyless") / "data") as server:
        yield server
