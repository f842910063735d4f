"""ChainedCredential: try credentials in order; the first that works is remembered.

A credential that does not apply here (CredentialUnavailableError) passes to the next. One that
applies but fails stops the chain: falling through to another identity would hide the mistake
and hand the app someone else's permissions. If no credential gives a token, one error lists
each credential and what to set for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ._base import Credential
from ._config import single_scope
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

_LOG = logging.getLogger("keyless.identity")
T = TypeVar("T")


class AccessTokenLike(Protocol):
    """azure-core's AccessToken or AccessTokenInfo, or ours."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class TokenCredentialLike(Protocol):
    """Anything with azure-core's `get_token` (Keyless or azure-identity credentials)."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessTokenLike: ...


def as_access_token(token: AccessTokenLike) -> AccessToken:
    """Ours as is (no copy on the warm path); another library's converted."""
    if type(token) is AccessToken:
        return token
    return AccessToken(token.token, token.expires_on)


def as_token_info(info: Any) -> AccessTokenInfo:
    if type(info) is AccessTokenInfo:
        return info
    return AccessTokenInfo(
        info.token,
        info.expires_on,
        getattr(info, "token_type", "Bearer") or "Bearer",
        getattr(info, "refresh_on", None),
    )


def credential_name(credential: object) -> str:
    return str(getattr(credential, "chain_name", type(credential).__name__))


def chain_error(
    name: str, scopes: tuple[str, ...], credentials: Sequence[object], history: list[Any]
) -> ClientAuthenticationError:
    """One error: per credential, why it gave no token (and what to set)."""
    lines = []
    for credential, error in history:
        label = credential_name(credential)
        text = str(error) or type(error).__name__
        if text.startswith(f"{label}: "):
            text = text[len(label) + 2 :]
        lines.append(f"  {label}: " + text.replace("\n", "\n    "))
    failed = next((c for c, e in history if not isinstance(e, CredentialUnavailableError)), None)
    untried = [credential_name(c) for c in credentials[len(history) :]]
    if untried:
        lines.append(
            f"  {', '.join(untried)}: not tried, because {credential_name(failed)} applies "
            "here and failed; fix it, or exclude it to fall through"
        )
    scope = f" for {scopes[0]!r}" if len(scopes) == 1 else ""
    message = f"{name} could not get a token{scope}:\n" + "\n".join(lines)
    if failed is None:
        return CredentialUnavailableError(message)
    last = history[-1][1]
    if isinstance(last, ClientAuthenticationError):
        return ClientAuthenticationError(
            message,
            error=last.error,
            error_description=last.error_description,
            status_code=last.status_code,
        )
    return ClientAuthenticationError(message)


class ChainedCredential(Credential):
    """A sequence of credentials that is itself a credential."""

    def __init__(self, *credentials: TokenCredentialLike) -> None:
        if not credentials:
            raise ValueError("ChainedCredential needs at least one credential")
        self.credentials: tuple[TokenCredentialLike, ...] = credentials
        self._successful: TokenCredentialLike | None = None

    @property
    def selected(self) -> TokenCredentialLike | None:
        """The credential that gave the first token, which is used from then on."""
        return self._successful

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        chosen = self._successful
        if chosen is not None:
            return as_access_token(
                chosen.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            )
        return self._first(
            scopes,
            lambda c: as_access_token(
                c.get_token(
                    *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
                )
            ),
        )

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        chosen = self._successful
        if chosen is not None:
            return _token_info(chosen, scopes, options)
        return self._first(scopes, lambda c: _token_info(c, scopes, options))

    def _first(self, scopes: tuple[str, ...], ask: Callable[[TokenCredentialLike], T]) -> T:
        single_scope(scopes)  # a bad scope is the caller's error, not a credential's
        history: list[tuple[TokenCredentialLike, Exception]] = []
        for credential in self.credentials:
            try:
                result = ask(credential)
            except CredentialUnavailableError as exc:
                history.append((credential, exc))
                continue
            except Exception as exc:
                history.append((credential, exc))
                break
            self._successful = credential
            _LOG.info("%s: using %s", type(self).__name__, credential_name(credential))
            return result
        error = chain_error(type(self).__name__, scopes, self.credentials, history)
        _LOG.warning("%s", error.message)
        raise error

    def close(self) -> None:
        for credential in self.credentials:
            close = getattr(credential, "close", None)
            if callable(close):
                close()


def _token_info(
    credential: TokenCredentialLike, scopes: tuple[str, ...], options: TokenRequestOptions | None
) -> AccessTokenInfo:
    get_token_info = getattr(credential, "get_token_info", None)
    if callable(get_token_info):
        return as_token_info(get_token_info(*scopes, options=options))
    options = options or {}
    token = credential.get_token(
        *scopes,
        claims=options.get("claims"),
        tenant_id=options.get("tenant_id"),
        enable_cae=bool(options.get("enable_cae", False)),
    )
    return AccessTokenInfo(token.token, token.expires_on)
