"""EnvironmentCredential: a service principal described by environment variables.

AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_CERTIFICATE_PATH (optionally
AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_CLIENT_SEND_CERTIFICATE_CHAIN) -> CertificateCredential;
or + AZURE_CLIENT_SECRET -> ClientSecretCredential (a certificate wins when both are set, as a
secret is the weaker choice). The authority is AZURE_AUTHORITY_HOST.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._caching import HookT
from ._certificate import CertificateCredential
from ._chained import DelegatingCredential
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
from ._delegating import Delegating, M
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._http import RequestHook
from ._steps import Steps
from ._tokens import TokenCredentialLike

T = TypeVar("T")

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


class NotUsableArguments(Delegating[M]):
    """Stands in for a credential that could not be built: every request raises its reason
    (CredentialUnavailableError when it is not configured, else ClientAuthenticationError)."""

    def __init__(self, name: str, message: str, *, unavailable: bool) -> None:
        self.chain_name = name
        self._message = message if message.startswith(f"{name}: ") else f"{name}: {message}"
        self._unavailable = unavailable

    def _choose(self, scopes: tuple[str, ...], ask: Callable[[M], Steps[T]]) -> Steps[T]:
        if self._unavailable:
            raise CredentialUnavailableError(self._message)
        raise ClientAuthenticationError(self._message)


class EnvironmentArguments(Delegating[M], Generic[M, HookT]):
    """EnvironmentCredential: a chain of the one credential the environment describes. The
    shells name their classes for each kind of it."""

    _kinds: dict[str, Callable[..., M]]
    _not_usable: Callable[..., M]

    def __init__(self, *, authority: str | None = None, request_hook: HookT | None = None) -> None:
        self._chosen = self._from_environment(authority, request_hook)
        self._members = (self._chosen,)

    def _from_environment(self, authority: str | None, request_hook: HookT | None) -> M:
        settings = read_environment()
        if settings.kind is None:
            return self._not_usable(WHO, settings.unavailable, unavailable=True)
        try:
            return self._kinds[settings.kind](
                **settings.arguments, authority=authority, request_hook=request_hook
            )
        except ValueError as exc:
            # Configured, but wrongly: an error, not "unavailable", so a chain does not fall
            # through to another identity and hide the mistake.
            return self._not_usable(WHO, str(exc), unavailable=False)


class NotUsableCredential(NotUsableArguments[TokenCredentialLike], DelegatingCredential):
    """A credential that could not be built (see `NotUsableArguments`)."""


class EnvironmentCredential(
    EnvironmentArguments[TokenCredentialLike, RequestHook], DelegatingCredential
):
    """A service principal from AZURE_* environment variables (see the module docstring)."""

    _kinds = {"certificate": CertificateCredential, "secret": ClientSecretCredential}
    _not_usable = NotUsableCredential
