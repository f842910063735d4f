"""ClientSecretCredential: a service principal with a client secret."""

from __future__ import annotations

from ._base import HttpCredential
from ._caching import HookT, HttpCore
from ._flow import ClientCredentialsFlow, fingerprint
from ._http import RequestHook


class ClientSecretFlow(ClientCredentialsFlow):
    kind = "secret"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority: str | None,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(tenant_id, client_id, authority, additionally_allowed_tenants)
        if not client_secret:
            raise ValueError(
                "client_secret is required (AZURE_CLIENT_SECRET): the secret "
                "`keyless ad sp create-for-rbac --name NAME --secret` printed once. Better: use a "
                "managed "
                "identity, a certificate or workload identity, and no secret at all"
            )
        self._secret = client_secret
        self.cache_id = (
            f"secret|{self.authority}|{client_id}|{fingerprint(client_id + '|' + client_secret)}"
        )

    def client_auth(self, token_url: str) -> tuple[dict[str, str], tuple[str, ...]]:
        return {"client_secret": self._secret}, (self._secret,)


class ClientSecretArguments(HttpCore[HookT]):
    """ClientSecretCredential's arguments, the same for the sync and the async class."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority: str | None = None,
        *,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: HookT | None = None,
    ) -> None:
        flow = ClientSecretFlow(
            tenant_id, client_id, client_secret, authority, additionally_allowed_tenants
        )
        self._use(flow, request_hook)


class ClientSecretCredential(ClientSecretArguments[RequestHook], HttpCredential):
    """Authenticates a service principal with its client secret.

    :param tenant_id: the Keyless tenant's ID.
    :param client_id: the service principal's application (client) ID.
    :param client_secret: one of its client secrets.
    :param authority: the Keyless server, e.g. ``https://keyless.example:8443``; default
        ``AZURE_AUTHORITY_HOST`` (then ``KEYLESS_ENDPOINT``). Must be https.
    :keyword additionally_allowed_tenants: other tenants ``get_token(tenant_id=...)`` may ask for
        (``"*"``: any).
    :keyword request_hook: called with each outgoing ``httpx.Request`` (e.g. to count them).
    """
