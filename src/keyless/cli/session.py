"""The CLI's connection to a Keyless server: where it is, and the signed-in user's token.

The token comes from the local sign-in socket and is cached 0600 in the data directory, as
`az` caches its tokens; when it is about to expire the CLI signs in again by itself.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from keyless.authority.config import DataDir, ServerConfig

_REFRESH_MARGIN_S = 120


class CliError(Exception):
    """Something the user can fix; the message says how."""


def endpoint_for(paths: DataDir) -> str:
    explicit = os.environ.get("KEYLESS_ENDPOINT")
    if explicit:
        return explicit.rstrip("/")
    state = _running_server(paths)
    if state is not None:
        return str(state["endpoint"])
    return ServerConfig.load_or_default(paths).endpoint()


def _running_server(paths: DataDir) -> dict[str, Any] | None:
    """server.json, if the process that wrote it is still alive (a killed server leaves it)."""
    try:
        state = json.loads(paths.server_state.read_text())
        os.kill(int(state["pid"]), 0)
    except (FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, run by another user
    return state if isinstance(state, dict) else None


def local_login(paths: DataDir, tenant: str | None = None) -> dict[str, Any]:
    if not paths.login_socket.exists():
        raise CliError(
            f"no Keyless server is running for {paths.root} (no {paths.login_socket.name}); "
            "start one with `keyless serve`"
        )
    request: dict[str, Any] = {"op": "login"}
    if tenant:
        request["tenant"] = tenant
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(str(paths.login_socket))
        except (ConnectionRefusedError, FileNotFoundError):
            raise CliError(
                "the Keyless server is not answering on its sign-in socket; is `keyless serve` "
                "running?"
            ) from None
        except PermissionError:
            raise CliError(
                f"you may not use {paths.login_socket}; only the data directory's owner can "
                "sign in locally"
            ) from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    answer = json.loads(reply or b"{}")
    if not isinstance(answer, dict) or "error" in answer or "accessToken" not in answer:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise CliError(f"sign-in refused: {message or 'no answer from the server'}")
    return answer


def _token_file(paths: DataDir) -> Path:
    return paths.cli_dir / "token.json"


def save_token(paths: DataDir, token: dict[str, Any]) -> None:
    paths.cli_dir.mkdir(mode=0o700, exist_ok=True)
    target = _token_file(paths)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(token, handle)
    tmp.replace(target)


def cached_token(paths: DataDir) -> dict[str, Any] | None:
    try:
        token = json.loads(_token_file(paths).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(token, dict) or token.get("expires_on", 0) - _REFRESH_MARGIN_S < time.time():
        return None
    return token


def forget_token(paths: DataDir) -> bool:
    try:
        _token_file(paths).unlink()
    except FileNotFoundError:
        return False
    return True


class ApiClient:
    def __init__(self, paths: DataDir) -> None:
        self.paths = paths
        self.endpoint = endpoint_for(paths)
        ca = os.environ.get("KEYLESS_CA_FILE") or str(paths.ca_cert)
        self._http = httpx.Client(
            base_url=self.endpoint, verify=ssl.create_default_context(cafile=ca), timeout=30
        )

    def token(self) -> dict[str, Any]:
        token = cached_token(self.paths)
        if token is None:
            token = local_login(self.paths)
            save_token(self.paths, token)
        return token

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
        token: str,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            return self._http.request(method, path, json=body, params=params, headers=headers)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the Keyless server at {self.endpoint} ({exc}); is `keyless "
                "serve` running?"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """The raw response, after signing in again once if the cached token was refused."""
        response = self._send(method, path, body, params, self.token()["accessToken"])
        if response.status_code == 401 and self.paths.login_socket.exists():
            # The cached token may have outlived its signing key or tenant: sign in afresh once.
            forget_token(self.paths)
            response = self._send(method, path, body, params, self.token()["accessToken"])
        return response

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = self.request(method, path, body, params)
        if response.status_code >= 400:
            try:
                error = response.json().get("error", {})
                message = error.get("message") or response.text
            except ValueError:
                message = response.text
            raise CliError(f"{message} (HTTP {response.status_code})")
        return response.json() if response.content else None
