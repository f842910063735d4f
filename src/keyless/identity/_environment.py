"""EnvironmentCredential: a service principal described by environment variables.

AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_CERTIFICATE_PATH (optionally
AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_CLIENT_SEND_CERTIFICATE_CHAIN) -> CertificateCredential;
or + AZURE_CLIENT_SECRET -> ClientSecretCredential (a certificate wins when both are set, as a
secret is the weaker choice). The authority is AZURE_AUTHORITY_HOST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._base import Credential
from ._certificate import CertificateCredential
from ._client_secret import ClientSecretCredential
from ._config import (
    AZURE_CLIENT_CERTIFICATE_PASSWORD,
    AZURE_CLIENT_CERTIFICATE_PATH,
    AZURE_CLIENT_ID,
    AZURE_CLIENT_SECRET,
    AZURE_CLIENT_SEND_CERTIFICATE_CHAIN,
    AZURE_TENANT_ID,
    env,
    missing_message,
)
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._http import RequestHook
from ._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

WHO = "EnvironmentCredential"


@dataclass(frozen=True)
class EnvironmentSettings:
    """What the environment says; `kind` is None when it describes no service principal."""

    kind: str | None
    arguments: dict[str, Any]
    unavailable: str = ""


def read_environment() -> EnvironmentSettings:
    tenant, client = env(AZURE_TENANT_ID), env(AZURE_CLIENT_ID)
    certificate, secret = env(AZURE_CLIENT_CERTIFICATE_PATH), env(AZURE_CLIENT_SECRET)
    if tenant and client and certificate:
        chain = (env(AZURE_CLIENT_SEND_CERTIFICATE_CHAIN) or "").lower() in ("1", "true")
        return EnvironmentSettings(
            "certificate",
            {
                "tenant_id": tenant,
                "client_id": client,
                "certificate_path": certificate,
                "password": env(AZURE_CLIENT_CERTIFICATE_PASSWORD),
                "send_certificate_chain": chain,
            },
        )
    if tenant and client and secret:
        return EnvironmentSettings(
            "secret", {"tenant_id": tenant, "client_id": client, "client_secret": secret}
        )
    missing = [
        name for name, value in ((AZURE_TENANT_ID, tenant), (AZURE_CLIENT_ID, client)) if not value
    ]
    if not (certificate or secret):
        missing.append(f"{AZURE_CLIENT_CERTIFICATE_PATH} (or {AZURE_CLIENT_SECRET})")
    return EnvironmentSettings(
        None,
        {},
        f"{WHO}: no service principal in the environment; to use one, set "
        f"{missing_message(missing)}",
    )


class NotUsableCredential(Credential):
    """Stands in for a credential that could not be built: every request raises its reason
    (CredentialUnavailableError when it is not configured, else ClientAuthenticationError)."""

    def __init__(self, name: str, message: str, *, unavailable: bool) -> None:
        self.chain_name = name
        self._message = message if message.startswith(f"{name}: ") else f"{name}: {message}"
        self._unavailable = unavailable

    def _raise(self) -> Any:
        if self._unavailable:
            raise CredentialUnavailableError(self._message)
        raise ClientAuthenticationError(self._message)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self._raise()  # type: ignore[no-any-return]

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._raise()  # type: ignore[no-any-return]


class EnvironmentCredential(Credential):
    """A service principal from AZURE_* environment variables (see the module docstring)."""

    def __init__(
        self, *, authority: str | None = None, request_hook: RequestHook | None = None
    ) -> None:
        settings = read_environment()
        self._credential: Credential
        if settings.kind is None:
            self._credential = NotUsableCredential(WHO, settings.unavailable, unavailable=True)
            return
        try:
            if settings.kind == "certificate":
                self._credential = CertificateCredential(
                    **settings.arguments, authority=authority, request_hook=request_hook
                )
            else:
                self._credential = ClientSecretCredential(
                    **settings.arguments, authority=authority, request_hook=request_hook
                )
        except ValueError as exc:
            # Configured, but wrongly: an error, not "unavailable", so a chain does not fall
            # through to another identity and hide the mistake.
            self._credential = NotUsableCredential(WHO, str(exc), unavailable=False)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self._credential.get_token(
            *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
        )

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._credential.get_token_info(*scopes, options=options)

    def close(self) -> None:
        self._credential.close()
