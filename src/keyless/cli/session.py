"""The CLI's connection to a Keyless server: where it is, and the signed-in user's token.

The sign-in comes from the local sign-in socket (`keyless login`) or from the device code flow
(`keyless login --use-device-code`, on another machine), and is cached 0600 as `token.json` in
the CLI's state directory: `$KEYLESS_CONFIG_DIR`, by default `{data dir}/cli` (which is
`~/.keyless/cli` unless a data directory is chosen), as `az` caches its tokens. It holds the
management token, a refresh token and tokens for other resources; when a token is about to
expire the CLI refreshes it (rotating the refresh token), or signs in again over the socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt

from keyless.authority.config import DataDir, ServerConfig
from keyless.base.errors import KeylessError

_REFRESH_MARGIN_S = 120
# The Keyless CLI's public client ID (keyless.authority.sessions.CLI_APP_ID), kept here so the
# CLI's start does not import the server side.
CLI_APP_ID = "7d0c9d42-3b4a-4f83-9d0c-6b5e0c1f2a11"
MANAGEMENT = "api://keyless/management"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NOT_SIGNED_IN = (
    "you are not signed in: run `keyless login --use-device-code --endpoint https://HOST:PORT "
    "--tenant TENANT_ID` (or `keyless login` on the Keyless server's machine)"
)


class CliError(KeylessError):
    """Something the user can fix; the message says how."""


class SignInEnded(CliError):
    """The server refused the refresh token (revoked, replayed, expired): sign in again."""


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


def local_login(paths: DataDir, tenant: str | None = None, offline: bool = True) -> dict[str, Any]:
    """Sign in over the server's Unix socket; `offline` also asks for a refresh token."""
    if not paths.login_socket.exists():
        raise CliError(
            f"no Keyless server is running for {paths.root} (no {paths.login_socket.name}); "
            "start one with `keyless serve`"
        )
    request: dict[str, Any] = {"op": "login"}
    if offline:
        request["offline"] = True
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
    answer["signIn"] = "local"
    return answer


def state_dir(paths: DataDir) -> Path:
    """Where the CLI keeps its sign-in: $KEYLESS_CONFIG_DIR, else the data directory's cli/."""
    explicit = os.environ.get("KEYLESS_CONFIG_DIR")
    return Path(explicit).expanduser().resolve() if explicit else paths.cli_dir


def _private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) readable by this user only."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    return path


def _token_file(paths: DataDir) -> Path:
    return state_dir(paths) / "token.json"


@contextlib.contextmanager
def sign_in_lock(paths: DataDir) -> Iterator[None]:
    """One CLI process at a time refreshes: two refreshes with the same refresh token would look
    like a stolen token to the server, which then revokes the whole session."""
    lock = _private_dir(state_dir(paths)) / "token.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save_token(paths: DataDir, token: dict[str, Any]) -> None:
    target = _private_dir(state_dir(paths)) / "token.json"
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(token, handle)
    tmp.replace(target)


def read_record(paths: DataDir) -> dict[str, Any] | None:
    """The saved sign-in, whether or not its access token is still fresh."""
    try:
        token = json.loads(_token_file(paths).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return token if isinstance(token, dict) else None


def _fresh(token: dict[str, Any] | None) -> bool:
    expires_on = token.get("expires_on", 0) if token else 0
    return isinstance(expires_on, int | float) and expires_on - _REFRESH_MARGIN_S >= time.time()


def cached_token(paths: DataDir) -> dict[str, Any] | None:
    token = read_record(paths)
    return token if _fresh(token) else None


def is_remote(record: dict[str, Any] | None) -> bool:
    return bool(record and record.get("signIn") == "deviceCode")


def http_client(endpoint: str, ca_file: str | None) -> httpx.Client:
    """HTTPS to a Keyless server, trusting `ca_file` (the Keyless CA), else the system store."""
    try:
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    except (FileNotFoundError, ssl.SSLError) as exc:
        raise CliError(f"cannot use the CA file {ca_file}: {exc}") from None
    return httpx.Client(
        base_url=endpoint, verify=context or ssl.create_default_context(), timeout=30
    )


def _record_http(paths: DataDir, record: dict[str, Any]) -> httpx.Client:
    endpoint = str(record.get("endpoint") or endpoint_for(paths))
    ca = record.get("caFile") or os.environ.get("KEYLESS_CA_FILE")
    if not ca and paths.ca_cert.exists():
        ca = str(paths.ca_cert)
    return http_client(endpoint, str(ca) if ca else None)


def oauth_error(response: httpx.Response) -> tuple[str, str]:
    """(error, first line of error_description) of an OAuth error response."""
    try:
        body = response.json()
        error = str(body.get("error", ""))
        description = str(body.get("error_description", "")).split("\r\n")[0]
    except (ValueError, AttributeError):
        return "", f"the server answered HTTP {response.status_code}"
    return error, description or error


def _post_form(http: httpx.Client, path: str, form: dict[str, str]) -> httpx.Response:
    try:
        return http.post(path, data=form)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the Keyless server at {http.base_url} ({type(exc).__name__}: {exc}); "
            "is it running, and is the address right?"
        ) from None


def redeem_refresh_token(paths: DataDir, record: dict[str, Any], scope: str) -> dict[str, Any]:
    """The refresh token grant: a token for `scope` and the session's next refresh token,
    which replaces the used one in `record` (saved before returning)."""
    with _record_http(paths, record) as http:
        response = _post_form(
            http,
            f"/{record['tenant']}/oauth2/v2.0/token",
            {
                "grant_type": "refresh_token",
                "client_id": str(record.get("clientId") or CLI_APP_ID),
                "refresh_token": str(record["refreshToken"]),
                "scope": f"{scope} offline_access",
            },
        )
    if response.status_code != 200:
        error, description = oauth_error(response)
        if error == "invalid_grant":
            raise SignInEnded(f"your Keyless sign-in is no longer valid: {description}")
        raise CliError(f"the token request was refused: {description}")
    result: dict[str, Any] = response.json()
    record["refreshToken"] = result["refresh_token"]
    now = time.time()
    entry = {
        "accessToken": result["access_token"],
        "expires_on": int(result.get("expires_on") or now + int(result["expires_in"])),
    }
    tokens = {k: v for k, v in dict(record.get("resourceTokens") or {}).items() if _fresh(v)}
    tokens[scope.lower()] = entry
    record["resourceTokens"] = tokens
    audience = jwt.decode(entry["accessToken"], options={"verify_signature": False}).get("aud")
    if audience == MANAGEMENT:
        record.update(entry, expiresOn=entry["expires_on"])
    save_token(paths, record)
    return entry


def _can_sign_in_locally(paths: DataDir, record: dict[str, Any] | None) -> bool:
    return not is_remote(record) and paths.login_socket.exists()


def _sign_in_locally(paths: DataDir, record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None and not paths.config.exists() and not paths.login_socket.exists():
        raise CliError(NOT_SIGNED_IN)  # no server on this machine and no sign-in either
    if is_remote(record):
        raise CliError(NOT_SIGNED_IN)
    token = local_login(paths, tenant=record.get("tenant") if record else None)
    save_token(paths, token)
    return token


def signed_in(paths: DataDir, force: bool = False) -> dict[str, Any]:
    """The sign-in with a fresh management token: cached, refreshed, or a new local sign-in."""
    record = read_record(paths)
    if not force and _fresh(record):
        assert record is not None
        return record
    with sign_in_lock(paths):
        record = read_record(paths)  # another process may have refreshed it meanwhile
        if not force and _fresh(record):
            assert record is not None
            return record
        if record is not None and record.get("refreshToken"):
            try:
                redeem_refresh_token(paths, record, f"{MANAGEMENT}/.default")
                return record
            except SignInEnded:
                if not _can_sign_in_locally(paths, record):
                    raise
        return _sign_in_locally(paths, record)


def resource_token(paths: DataDir, scope: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """({accessToken, expires_on}, the sign-in) for `scope` ({resource}/.default)."""
    key = scope.lower()
    record = read_record(paths)
    cached = dict(record.get("resourceTokens") or {}).get(key) if record else None
    if record is not None and _fresh(cached):
        assert cached is not None
        return cached, record
    with sign_in_lock(paths):
        record = read_record(paths)
        cached = dict(record.get("resourceTokens") or {}).get(key) if record else None
        if record is not None and _fresh(cached):
            assert cached is not None
            return cached, record
        if record is None or not record.get("refreshToken"):
            record = _sign_in_locally(paths, record)
        try:
            return redeem_refresh_token(paths, record, scope), record
        except SignInEnded:
            if not _can_sign_in_locally(paths, record):
                raise
        record = _sign_in_locally(paths, record)
        return redeem_refresh_token(paths, record, scope), record


def revoke_sign_in(paths: DataDir, record: dict[str, Any]) -> None:
    """RFC 7009 revocation of the record's refresh token: its session ends on the server."""
    if not record.get("refreshToken"):
        return
    with _record_http(paths, record) as http:
        response = _post_form(
            http,
            f"/{record['tenant']}/oauth2/v2.0/revoke",
            {
                "token": str(record["refreshToken"]),
                "token_type_hint": "refresh_token",
                "client_id": str(record.get("clientId") or CLI_APP_ID),
            },
        )
    if response.status_code != 200:
        raise CliError(f"the server refused to revoke the session: {oauth_error(response)[1]}")


def forget_token(paths: DataDir) -> bool:
    try:
        _token_file(paths).unlink()
    except FileNotFoundError:
        return False
    return True


class ApiClient:
    def __init__(self, paths: DataDir) -> None:
        self.paths = paths
        record = read_record(paths)
        if is_remote(record):  # signed in with a device code: no server on this machine
            assert record is not None
            self.endpoint = str(record["endpoint"])
            self._http = _record_http(paths, record)
            return
        self.endpoint = endpoint_for(paths)
        ca = os.environ.get("KEYLESS_CA_FILE") or str(paths.ca_cert)
        self._http = httpx.Client(
            base_url=self.endpoint, verify=ssl.create_default_context(cafile=ca), timeout=30
        )

    @property
    def http(self) -> httpx.Client:
        """HTTPS to the server: its address as base URL, verified against the CA the CLI
        trusts (the vault data plane is reached through it, keyless.vault.client)."""
        return self._http

    def token(self, force: bool = False) -> dict[str, Any]:
        return signed_in(self.paths, force)

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
        record = read_record(self.paths)
        if response.status_code == 401 and (
            self.paths.login_socket.exists() or (record and record.get("refreshToken"))
        ):
            # The cached token may have outlived its signing key or tenant: get a new one once.
            token = self.token(force=True)["accessToken"]
            response = self._send(method, path, body, params, token)
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


def signed_in_object_id(paths: DataDir) -> str:
    """The signed-in user's object ID (`oid` of the CLI's own management token; the server
    checks that token on every call, so reading it unverified here only picks a name)."""
    record = signed_in(paths)
    claims = jwt.decode(record["accessToken"], options={"verify_signature": False})
    oid = claims.get("oid")
    if not isinstance(oid, str) or not oid:
        raise CliError("the sign-in's token names no user; sign in again with `keyless login`")
    return oid
