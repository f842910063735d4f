"""Requests to a vault's data plane from a client of the server: the CLI's `keyless vault
secret` commands and `keyless app run`'s vault references.

`*.vault.localhost` does not resolve everywhere, so a request connects to the server's own
address (the `http` client's base URL) and names the vault in the TLS SNI and the Host header;
the certificate is verified for the vault's host name against the CA the client trusts. The
names are checked here before they become part of a host name or a URL path (the server's
rules: keyless.vault.resource and keyless.vault.api). Imports nothing server-side.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from keyless.base.vault_domain import SECRET_NAME as SECRET_NAME
from keyless.base.vault_domain import VAULT_NAME as VAULT_NAME
from keyless.base.vault_domain import VERSION as VERSION
from keyless.base.vault_domain import VaultDomain

API_VERSION = "7.5"


def vault_host(domain: VaultDomain, vault: str) -> str:
    """`{vault}.vault.{host}[:port]`, as the Host header names it."""
    return urlsplit(domain.vault_url(vault)).netloc


def vault_request(
    http: httpx.Client,
    domain: VaultDomain,
    vault: str,
    method: str,
    path: str,
    token: str,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """One data plane request to `vault` with a bearer token for it. `path` may carry a query
    (a nextLink's `$skiptoken`), which is kept. Raises httpx.HTTPError when the server cannot
    be reached."""
    host = vault_host(domain, vault)
    path, _, query = path.partition("?")
    return http.request(
        method,
        path,
        # httpx replaces a URL's query with `params`: merge them instead.
        params=httpx.QueryParams(query).set("api-version", API_VERSION),
        json=body,
        headers={"Authorization": f"Bearer {token}", "Host": host},
        # Connect to the server's address; present and verify the vault's host name.
        extensions={"sni_hostname": host.rsplit(":", 1)[0]},
    )


def vault_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of a Key Vault error answer; the code is the inner error's when there is
    one (`SecretDisabled`, `ForbiddenByRbac`, ...)."""
    try:
        error = dict(response.json().get("error") or {})
    except (ValueError, AttributeError, TypeError):
        error = {}
    inner = error.get("innererror")
    code = (inner.get("code") if isinstance(inner, dict) else None) or error.get("code") or ""
    message = str(error.get("message") or "").strip()
    return str(code), message or response.reason_phrase or f"HTTP {response.status_code}"
