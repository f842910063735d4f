"""DeveloperCredential: the developer's own sign-in, through the `keyless` CLI.

Runs `keyless account get-access-token --resource R --output json` (the `az account
get-access-token` shape: `accessToken`, `expires_on` epoch seconds, `expiresOn`, `tokenType`,
`tenant`), so the same app code that uses a managed identity in production runs on a developer's
machine after `keyless login`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime
from typing import Any

from ._base import CachingCredential
from ._cache import CachedToken
from ._caching import CachingCore
from ._config import scope_to_resource, validate_tenant_id
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._steps import Completed, RunProcess, Steps

EXECUTABLE = "keyless"
DEFAULT_TIMEOUT_S = 10.0
WHO = "DeveloperCredential"
NOT_ON_PATH = (
    f"{WHO}: the `keyless` command is not on PATH. Install Keyless (`pip install keyless`), "
    "then sign in with `keyless login` (or `keyless login --use-device-code` on a machine "
    "without the server)"
)
_TOKEN_FIELD = re.compile(r'"accessToken"\s*:\s*"[^"]*("|$)')


def sanitize(output: str, limit: int = 600) -> str:
    """CLI output fit for an error message: no token, not too long."""
    text = _TOKEN_FIELD.sub('"accessToken": "****"', output).strip()
    return text if len(text) <= limit else "..." + text[-limit:]


class DeveloperFlow:
    """Builds the command and reads its answer; shared by the sync and async credentials."""

    def __init__(self, tenant_id: str | None, process_timeout: float) -> None:
        self.tenant_id = validate_tenant_id(tenant_id) if tenant_id else ""
        self.timeout = process_timeout
        self.cache_id = "developer|keyless-cli"

    def command(self, scope: str, tenant_id: str) -> list[str]:
        executable = shutil.which(EXECUTABLE)
        if executable is None:
            raise CredentialUnavailableError(NOT_ON_PATH)
        args = [executable, "account", "get-access-token", "--resource", scope_to_resource(scope)]
        if tenant_id:
            args += ["--tenant", validate_tenant_id(tenant_id)]
        return [*args, "--output", "json"]

    @staticmethod
    def environment() -> dict[str, str]:
        return {**os.environ, "NO_COLOR": "1"}

    def timed_out(self) -> ClientAuthenticationError:
        return ClientAuthenticationError(
            f"{WHO}: `keyless account get-access-token` did not answer within "
            f"{self.timeout:g}s; run it yourself to see what it waits for"
        )

    @staticmethod
    def failed_to_start(error: OSError) -> CredentialUnavailableError:
        return CredentialUnavailableError(f"{WHO}: could not run `keyless`: {error.strerror}")

    def parse(self, returncode: int, stdout: str, stderr: str, received_at: float) -> CachedToken:
        if returncode != 0:
            said = sanitize(stderr or stdout) or f"exit status {returncode}"
            lowered = said.lower()
            if "no such command" in lowered:
                raise CredentialUnavailableError(
                    f"{WHO}: this `keyless` has no `account get-access-token` command; "
                    f"upgrade Keyless. It said: {said}"
                )
            if any(text in lowered for text in ("keyless login", "not signed in", "not logged in")):
                raise CredentialUnavailableError(
                    f"{WHO}: you are not signed in: run `keyless login` (or `keyless login "
                    f"--use-device-code`). It said: {said}"
                )
            raise ClientAuthenticationError(
                f"{WHO}: `keyless account get-access-token` failed (exit status {returncode}): "
                f"{said}"
            )
        try:
            body: Any = json.loads(stdout)
            token = body["accessToken"]
            if "expires_on" in body:
                expires_on = int(body["expires_on"])
            else:
                parsed = datetime.strptime(body["expiresOn"], "%Y-%m-%d %H:%M:%S.%f")
                expires_on = int(parsed.timestamp())
            if not isinstance(token, str) or not token:
                raise ValueError("empty accessToken")
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientAuthenticationError(
                f"{WHO}: unexpected output from `keyless account get-access-token` "
                f"({type(exc).__name__}): {sanitize(stdout)!r}"
            ) from None
        token_type = body.get("tokenType") if isinstance(body.get("tokenType"), str) else None
        return CachedToken.build(
            token,
            received_at=received_at,
            expires_on=expires_on,
            token_type=token_type or "Bearer",
        )


class DeveloperArguments(CachingCore):
    """DeveloperCredential's arguments and its one step, the same for sync and async."""

    def __init__(
        self, *, tenant_id: str | None = None, process_timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._flow = DeveloperFlow(tenant_id, process_timeout)
        self._cache_id = self._flow.cache_id
        self._tenant_id = self._flow.tenant_id

    def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> Steps[CachedToken]:
        flow = self._flow
        args = flow.command(scope, tenant_id)
        started = time.time()
        try:
            done: Completed = yield RunProcess(args, flow.environment(), flow.timeout)
        except TimeoutError:
            raise flow.timed_out() from None
        except OSError as exc:
            raise flow.failed_to_start(exc) from None
        return flow.parse(done.returncode, done.stdout, done.stderr, started)


class DeveloperCredential(DeveloperArguments, CachingCredential):
    """The signed-in developer's token from ``keyless account get-access-token``.

    Sign in first with ``keyless login``. ``tenant_id`` asks for a token in another tenant
    than the CLI's default (passed as ``--tenant``).
    """
