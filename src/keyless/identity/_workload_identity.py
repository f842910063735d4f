"""WorkloadIdentityCredential: exchange a platform-issued OIDC token (a Kubernetes projected
service-account token, a CI job's token) for a Keyless token, with no secret.

The token file is read again for every token request, so the platform's rotation of it is
followed whenever the cached Keyless token is refreshed.
"""

from __future__ import annotations

from pathlib import Path

from ._base import HttpCredential
from ._caching import HookT, HttpCore
from ._config import (
    AZURE_CLIENT_ID,
    AZURE_FEDERATED_TOKEN_FILE,
    AZURE_TENANT_ID,
    env,
    missing_message,
)
from ._errors import ClientAuthenticationError
from ._flow import JWT_BEARER, ClientCredentialsFlow, fingerprint
from ._http import RequestHook


def workload_identity_settings(
    tenant_id: str | None, client_id: str | None, token_file_path: str | None
) -> tuple[str, str, str]:
    """Arguments, else AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_FEDERATED_TOKEN_FILE."""
    values = {
        AZURE_TENANT_ID: tenant_id or env(AZURE_TENANT_ID),
        AZURE_CLIENT_ID: client_id or env(AZURE_CLIENT_ID),
        AZURE_FEDERATED_TOKEN_FILE: token_file_path or env(AZURE_FEDERATED_TOKEN_FILE),
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(
            f"workload identity is not configured: set {missing_message(missing)} (or pass "
            "tenant_id, client_id, token_file_path). AZURE_FEDERATED_TOKEN_FILE is the path of "
            "the platform's OIDC token (Kubernetes projects it into the pod), AZURE_CLIENT_ID "
            "the identity that trusts it through a federated credential "
            "(`keyless identity federated-credential create`)"
        )
    return (
        values[AZURE_TENANT_ID] or "",
        values[AZURE_CLIENT_ID] or "",
        values[AZURE_FEDERATED_TOKEN_FILE] or "",
    )


class WorkloadIdentityFlow(ClientCredentialsFlow):
    kind = "federated credential"

    def __init__(
        self,
        tenant_id: str | None,
        client_id: str | None,
        token_file_path: str | None,
        authority: str | None,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
    ) -> None:
        tenant, client, path = workload_identity_settings(tenant_id, client_id, token_file_path)
        super().__init__(tenant, client, authority, additionally_allowed_tenants)
        self.token_file_path = path
        self.cache_id = f"workload|{self.authority}|{client}|{fingerprint(path)}"

    def client_auth(self, token_url: str) -> tuple[dict[str, str], tuple[str, ...]]:
        try:
            assertion = Path(self.token_file_path).read_text().strip()
        except OSError as exc:
            raise ClientAuthenticationError(
                f"WorkloadIdentityCredential: cannot read the federated token file "
                f"{self.token_file_path!r} (AZURE_FEDERATED_TOKEN_FILE): {exc.strerror}"
            ) from None
        if not assertion:
            raise ClientAuthenticationError(
                f"WorkloadIdentityCredential: the federated token file {self.token_file_path!r} "
                "(AZURE_FEDERATED_TOKEN_FILE) is empty"
            )
        return (
            {"client_assertion_type": JWT_BEARER, "client_assertion": assertion},
            (assertion,),
        )

    def refused_hint(self) -> str:
        return (
            f"Check that {self.client_id!r} has a federated credential whose issuer, subject "
            f"and audience match the token in {self.token_file_path!r}, and that the token "
            "has not expired (`keyless identity federated-credential list`)"
        )


class WorkloadIdentityArguments(HttpCore[HookT]):
    """WorkloadIdentityCredential's arguments, the same for the sync and the async class."""

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_file_path: str | None = None,
        *,
        authority: str | None = None,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: HookT | None = None,
    ) -> None:
        flow = WorkloadIdentityFlow(
            tenant_id, client_id, token_file_path, authority, additionally_allowed_tenants
        )
        self._use(flow, request_hook)


class WorkloadIdentityCredential(WorkloadIdentityArguments[RequestHook], HttpCredential):
    """Workload identity federation: the platform's OIDC token, exchanged for a Keyless token.

    Every argument defaults to its environment variable: ``AZURE_TENANT_ID``,
    ``AZURE_CLIENT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``, and ``AZURE_AUTHORITY_HOST`` for
    ``authority``.
    """
