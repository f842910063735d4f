"""Keys of external OpenID Connect issuers, for federated identity credentials.

An issuer is fetched only after a federated credential registered for the client matched the
assertion's `iss` and `sub`, so a caller cannot make Keyless fetch arbitrary URLs. Documents
are fetched over HTTPS with certificate checks, bounded in size and time, and cached; an
unknown `kid` triggers one refetch (issuers rotate keys too), at most every few seconds.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jwt import PyJWKSet
from jwt.exceptions import PyJWKSetError

from keyless.base.errors import KeylessError

_TTL_S = 600.0
_REFETCH_AFTER_S = 5.0
_MAX_DOCUMENT_BYTES = 256 * 1024
_TIMEOUT = httpx.Timeout(5.0)


class FederationError(KeylessError):
    """The issuer's keys could not be had; the message says which step failed and why."""


class FetchNeeded(Exception):
    """The issuer's keys must be fetched, and the caller asked not to wait on the network."""


@dataclass
class _Entry:
    keys: PyJWKSet
    fetched_at: float


class IssuerKeys:
    def __init__(self, extra_ca_files: list[Path] | None = None) -> None:
        context = ssl.create_default_context()
        for ca_file in extra_ca_files or []:
            context.load_verify_locations(cafile=str(ca_file))
        self._client = httpx.Client(verify=context, timeout=_TIMEOUT, follow_redirects=False)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def keys_for(self, issuer: str, kid: str | None, *, may_fetch: bool = True) -> PyJWKSet:
        """Keys of `issuer`, refetched when stale or when `kid` is not among them; raises
        FetchNeeded instead of fetching when `may_fetch` is false."""
        now = time.monotonic()
        entry = self._entries.get(issuer)
        if entry is not None:
            fresh = now - entry.fetched_at < _TTL_S
            has_kid = kid is None or any(k.key_id == kid for k in entry.keys.keys)
            if fresh and (has_kid or now - entry.fetched_at < _REFETCH_AFTER_S):
                return entry.keys
        if not may_fetch:
            raise FetchNeeded(issuer)
        with self._lock:
            entry = _Entry(self._fetch(issuer), time.monotonic())
            self._entries[issuer] = entry
        return entry.keys

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._client.stream("GET", url, headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise FederationError(f"{what} at {url} answered HTTP {resp.status_code}")
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_DOCUMENT_BYTES:
                        raise FederationError(f"{what} at {url} is larger than 256 KiB")
        except httpx.HTTPError as exc:
            raise FederationError(f"could not fetch {what} from {url}: {exc}") from None
        try:
            document = httpx.Response(200, content=body).json()
        except ValueError:
            raise FederationError(f"{what} at {url} is not JSON") from None
        if not isinstance(document, dict):
            raise FederationError(f"{what} at {url} is not a JSON object")
        return document

    def _fetch(self, issuer: str) -> PyJWKSet:
        if not issuer.startswith("https://"):
            raise FederationError("the issuer is not an https URL; federation needs HTTPS")
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        discovery = self._get_json(discovery_url, "the issuer's discovery document")
        if discovery.get("issuer") != issuer:
            raise FederationError(
                "the issuer's discovery document names a different issuer than the token"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise FederationError("the issuer's discovery document has no https jwks_uri")
        document = self._get_json(jwks_uri, "the issuer's JWKS")
        try:
            return PyJWKSet.from_dict(document)
        except (PyJWKSetError, ValueError, KeyError, TypeError):
            raise FederationError("the issuer's JWKS holds no usable keys") from None
