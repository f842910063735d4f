"""ManagedIdentityCredential: tokens for the identities of the app or machine it runs on.

Two protocols, chosen from the environment only (nothing is probed):
- App Service style, what `keyless app run` gives an app: IDENTITY_ENDPOINT + IDENTITY_HEADER;
  `GET {endpoint}?api-version=2019-08-01&resource=R[&client_id=|&object_id=|&mi_res_id=]` with
  header `X-IDENTITY-HEADER`.
- IMDS style, a machine identity: only when AZURE_POD_IDENTITY_AUTHORITY_HOST is set;
  `GET {base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R
  [&client_id=|&object_id=|&msi_res_id=]` with header `Metadata: true`.
Without either, the credential is unavailable at once: it never waits on 169.254.169.254.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ._base import HttpCredential
from ._caching import HookT, HttpCore
from ._config import (
    AZURE_POD_IDENTITY_AUTHORITY_HOST,
    IDENTITY_ENDPOINT,
    IDENTITY_HEADER,
    env,
    scope_to_resource,
)
from ._errors import CredentialUnavailableError
from ._flow import TokenFlow
from ._http import RequestHook, TokenRequest
from ._loopback import loopback_address

APP_SERVICE_API_VERSION = "2019-08-01"
IMDS_API_VERSION = "2018-02-01"
IMDS_PATH = "/metadata/identity/oauth2/token"

NOT_CONFIGURED = (
    "no managed identity endpoint in this environment. An app started by `keyless app run` "
    f"gets {IDENTITY_ENDPOINT} and {IDENTITY_HEADER}; for a machine identity set "
    f"{AZURE_POD_IDENTITY_AUTHORITY_HOST} to the base URL of its IMDS-style endpoint "
    "(Keyless never probes 169.254.169.254 on its own)"
)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ManagedIdentityFlow(TokenFlow):
    trust_env = False  # the endpoint is local to the host: never through a proxy

    def __init__(
        self, client_id: str | None, object_id: str | None, resource_id: str | None
    ) -> None:
        chosen = {
            name: value
            for name, value in (
                ("client_id", client_id),
                ("object_id", object_id),
                ("resource_id", resource_id),
            )
            if value
        }
        if len(chosen) > 1:
            raise ValueError(
                "pass at most one of client_id, object_id and resource_id to choose a "
                f"user-assigned identity, not {' and '.join(chosen)}"
            )
        self.identity = next(iter(chosen.items()), None)
        self.mode: str | None = None
        self.url = self.header = ""
        self.unavailable = NOT_CONFIGURED
        endpoint, header = env(IDENTITY_ENDPOINT), env(IDENTITY_HEADER)
        imds = env(AZURE_POD_IDENTITY_AUTHORITY_HOST)
        if endpoint and header:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.unavailable = f"{IDENTITY_ENDPOINT} is {endpoint!r}, which is not a URL"
            elif parts.scheme == "http" and not _is_loopback(parts.hostname):
                self.unavailable = (
                    f"{IDENTITY_ENDPOINT} is {endpoint!r}: plain http is only accepted on the "
                    f"loopback interface ({IDENTITY_HEADER} must not cross a network in clear)"
                )
            else:
                self.mode, self.url, self.header = "app_service", endpoint, header
        elif endpoint or header:
            present, absent = (
                (IDENTITY_ENDPOINT, IDENTITY_HEADER)
                if endpoint
                else (IDENTITY_HEADER, IDENTITY_ENDPOINT)
            )
            self.unavailable = (
                f"{present} is set but {absent} is not; `keyless app run` sets both. Run the "
                "app with it, or unset the stray variable"
            )
        elif imds:
            base = imds if "://" in imds else "http://" + imds
            self.mode, self.url, self.header = "imds", base.rstrip("/") + IMDS_PATH, ""
        self.plain_http = self.url.startswith("http://")
        self.loopback = loopback_address(self.url) if self.plain_http else None
        identity = "=".join(self.identity) if self.identity else "system"
        self.cache_id = f"managed|{self.mode}|{self.url}|{identity}"

    def request(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> TokenRequest:
        if self.mode is None:
            raise CredentialUnavailableError(f"ManagedIdentityCredential: {self.unavailable}")
        params = {"resource": scope_to_resource(scope)}
        if self.mode == "app_service":
            params = {"api-version": APP_SERVICE_API_VERSION, **params}
            id_names = {
                "client_id": "client_id",
                "object_id": "object_id",
                "resource_id": "mi_res_id",
            }
            headers = {"X-IDENTITY-HEADER": self.header}
        else:
            params = {"api-version": IMDS_API_VERSION, **params}
            id_names = {
                "client_id": "client_id",
                "object_id": "object_id",
                "resource_id": "msi_res_id",
            }
            headers = {"Metadata": "true"}
        if self.identity is not None:
            params[id_names[self.identity[0]]] = self.identity[1]
        return TokenRequest(
            "GET",
            self.url,
            params=params,
            headers=headers,
            secrets=(self.header,) if self.header else (),
        )

    def hint(self, error: str | None, status: int) -> str | None:
        if status in (401, 403) and self.mode == "app_service":
            return (
                f"The endpoint refused {IDENTITY_HEADER}: it is valid only for the process tree "
                "of the `keyless app run` that set it"
            )
        if status in (400, 404):
            if self.identity is not None:
                name, value = self.identity
                return (
                    f"Check that {name} {value!r} names a user-assigned identity attached to this "
                    "app, and that the resource is a registered API"
                )
            return (
                "Check that the app has a system-assigned identity (or pass client_id= for a "
                "user-assigned one) and that the resource is a registered API"
            )
        return None


class ManagedIdentityArguments(HttpCore[HookT]):
    """ManagedIdentityCredential's arguments, the same for the sync and the async class."""

    def __init__(
        self,
        client_id: str | None = None,
        *,
        object_id: str | None = None,
        resource_id: str | None = None,
        request_hook: HookT | None = None,
    ) -> None:
        self._use(ManagedIdentityFlow(client_id, object_id, resource_id), request_hook)

    @property
    def available(self) -> bool:
        """Whether the environment names a managed identity endpoint (no request is made)."""
        flow = self._flow
        assert isinstance(flow, ManagedIdentityFlow)
        return flow.mode is not None


class ManagedIdentityCredential(ManagedIdentityArguments[RequestHook], HttpCredential):
    """The managed identity of the app (``keyless app run``) or machine this code runs on.

    With no argument: the system-assigned identity. ``client_id``, ``object_id`` or
    ``resource_id`` (at most one) select a user-assigned identity attached to the app.
    """
