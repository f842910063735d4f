"""Credentials that hand each request to a member, written once for sync and async.

ChainedCredential tries its members in order; the first that gives a token is remembered.
A member that does not apply here (CredentialUnavailableError) passes to the next. One that
applies but fails stops the chain: falling through to another identity would hide the mistake
and hand the app someone else's permissions. If no member gives a token, one error lists each
and what to set for it. EnvironmentCredential is a chain of the one credential the environment
describes, chosen from the start; NotUsableCredential stands in for one that could not be built.
The shells (`_chained.DelegatingCredential`, `aio._chained.AsyncDelegatingCredential`) call the
chosen member directly and perform the steps below for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ._config import single_scope
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._steps import Call, Steps
from ._tokens import (
    AccessToken,
    AccessTokenInfo,
    AsyncTokenCredentialLike,
    TokenCredentialLike,
    TokenRequestOptions,
    as_access_token,
    as_token_info,
)

_LOG = logging.getLogger("keyless.identity")
T = TypeVar("T")
# A member: sync in a sync credential, async in an async one.
M = TypeVar("M", bound=TokenCredentialLike | AsyncTokenCredentialLike)


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


def token_steps(
    member: TokenCredentialLike | AsyncTokenCredentialLike,
    scopes: tuple[str, ...],
    kwargs: dict[str, Any],
) -> Steps[AccessToken]:
    return as_access_token((yield Call(member.get_token, scopes, kwargs)))


def token_info_steps(
    member: TokenCredentialLike | AsyncTokenCredentialLike,
    scopes: tuple[str, ...],
    options: TokenRequestOptions | None,
) -> Steps[AccessTokenInfo]:
    """`get_token_info`, or `get_token` for a member without it."""
    get_token_info = getattr(member, "get_token_info", None)
    if callable(get_token_info):
        return as_token_info((yield Call(get_token_info, scopes, {"options": options})))
    options = options or {}
    arguments = {
        "claims": options.get("claims"),
        "tenant_id": options.get("tenant_id"),
        "enable_cae": bool(options.get("enable_cae", False)),
    }
    token = yield Call(member.get_token, scopes, arguments)
    return AccessTokenInfo(token.token, token.expires_on)


class Delegating(Generic[M]):
    """The members, the chosen one, and how to choose (see the module docstring)."""

    _members: tuple[M, ...] = ()
    _chosen: M | None = None

    def _choose(self, scopes: tuple[str, ...], ask: Callable[[M], Steps[T]]) -> Steps[T]:
        single_scope(scopes)  # a bad scope is the caller's error, not a credential's
        history: list[tuple[M, Exception]] = []
        for credential in self._members:
            try:
                result = yield from ask(credential)
            except CredentialUnavailableError as exc:
                history.append((credential, exc))
                continue
            except Exception as exc:
                history.append((credential, exc))
                break
            self._chosen = credential
            _LOG.info("%s: using %s", type(self).__name__, credential_name(credential))
            return result
        error = chain_error(type(self).__name__, scopes, self._members, history)
        _LOG.warning("%s", error.message)
        raise error

    def _token_steps(self, scopes: tuple[str, ...], kwargs: dict[str, Any]) -> Steps[AccessToken]:
        """`get_token` before a member is chosen."""
        return (yield from self._choose(scopes, lambda m: token_steps(m, scopes, kwargs)))

    def _token_info_steps(
        self, scopes: tuple[str, ...], options: TokenRequestOptions | None
    ) -> Steps[AccessTokenInfo]:
        """`get_token_info` before a member is chosen, or when the chosen one lacks it."""
        chosen = self._chosen
        if chosen is not None:
            return (yield from token_info_steps(chosen, scopes, options))
        return (yield from self._choose(scopes, lambda m: token_info_steps(m, scopes, options)))

    def _close_steps(self) -> Steps[None]:
        for member in self._members:
            close = getattr(member, "close", None)
            if callable(close):
                yield Call(close)


class Chain(Delegating[M]):
    """ChainedCredential's arguments and properties."""

    def __init__(self, *credentials: M) -> None:
        if not credentials:
            raise ValueError("ChainedCredential needs at least one credential")
        self._members = credentials

    @property
    def credentials(self) -> tuple[M, ...]:
        return self._members

    @property
    def selected(self) -> M | None:
        """The credential that gave the first token, which is used from then on."""
        return self._chosen
