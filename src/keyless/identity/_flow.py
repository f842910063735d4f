"""Token flows: how a credential builds its token request, independent of sync or async.

Each credential module defines its flow once; the sync credential (`keyless.identity`) and the
async one (`keyless.identity.aio`) both send what it builds.
"""

from __future__ import annotations

import abc
import hashlib
import uuid

from ._config import resolve_authority, resolve_tenant, validate_tenant_id
from ._http import TokenRequest

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def fingerprint(value: str | bytes) -> str:
    """A short one-way fingerprint, to tell credentials apart in cache keys without the secret."""
    data = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()[:24]


class TokenFlow(abc.ABC):
    cache_id: str
    tenant_id: str = ""
    # Managed identity endpoints are local to the host: never through a proxy.
    trust_env: bool = True
    # Its endpoint is plain http (loopback): no CA bundle to load for it (see new_client).
    plain_http: bool = False
    # Its endpoint is plain http on a loopback IP address: (address, port) for the lean
    # exchange of keyless.identity._loopback instead of an httpx client.
    loopback: tuple[str, int] | None = None

    def resolve_tenant(self, tenant_id: str | None) -> str:
        """The tenant for the cache key and the request (see CachingCredential)."""
        return tenant_id or self.tenant_id

    @abc.abstractmethod
    def request(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> TokenRequest: ...

    def hint(self, error: str | None, status: int) -> str | None:
        """What the user should check, given the service's error code and HTTP status."""
        return None


class ClientCredentialsFlow(TokenFlow):
    """OAuth 2.0 client credentials at `{authority}/{tenant}/oauth2/v2.0/token`; subclasses
    add how the client proves itself (a secret or an assertion)."""

    kind = "client"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        authority: str | None,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
    ) -> None:
        if not tenant_id:
            raise ValueError(
                "tenant_id is required: the GUID of your Keyless tenant "
                "(AZURE_TENANT_ID; `keyless tenant show` prints it)"
            )
        if not client_id:
            raise ValueError(
                "client_id is required: the application (client) ID of the service principal "
                "(AZURE_CLIENT_ID; `keyless ad sp list` shows them)"
            )
        self.tenant_id = validate_tenant_id(tenant_id)
        self.client_id = client_id
        self.authority = resolve_authority(authority)
        self.allowed_tenants = frozenset(additionally_allowed_tenants)

    def resolve_tenant(self, tenant_id: str | None) -> str:
        return resolve_tenant(self.tenant_id, tenant_id, self.allowed_tenants)

    def token_url(self, tenant_id: str) -> str:
        return f"{self.authority}/{tenant_id}/oauth2/v2.0/token"

    @abc.abstractmethod
    def client_auth(self, token_url: str) -> tuple[dict[str, str], tuple[str, ...]]:
        """The form fields that authenticate the client, and which of them are secret."""

    def request(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> TokenRequest:
        url = self.token_url(tenant_id)
        auth, secrets = self.client_auth(url)
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "scope": scope,
            **auth,
        }
        if claims:
            form["claims"] = claims
        return TokenRequest(
            "POST",
            url,
            form=form,
            headers={
                "Accept": "application/json",
                "client-request-id": str(uuid.uuid4()),
            },
            secrets=secrets,
        )

    def hint(self, error: str | None, status: int) -> str | None:
        if error == "invalid_client" or status == 401:
            return self.refused_hint()
        if error == "unauthorized_client":
            return "The client is not allowed this grant; check its registration"
        if status == 404:
            return (
                f"Check AZURE_AUTHORITY_HOST ({self.authority}) and AZURE_TENANT_ID "
                f"({self.tenant_id}) name your Keyless server and tenant"
            )
        return None

    def refused_hint(self) -> str:
        """What to check when the token service refused how the client proved itself."""
        return (
            f"Check that client_id {self.client_id!r} is a service principal in tenant "
            f"{self.tenant_id!r} and that its {self.kind} is current "
            "(`keyless ad sp credential reset` issues a new one)"
        )
