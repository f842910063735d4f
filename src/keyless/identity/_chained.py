"""ChainedCredential: try credentials in order; the first that works is remembered.

The rules are in `_delegating` (shared with `keyless.identity.aio`); this is the sync shell.
"""

from __future__ import annotations

from ._base import Credential, run
from ._delegating import Chain, Delegating
from ._steps import Kwargs, Scopes
from ._tokens import (
    AccessToken,
    AccessTokenInfo,
    TokenCredentialLike,
    TokenRequestOptions,
    as_access_token,
    as_token_info,
)


class DelegatingCredential(Delegating[TokenCredentialLike], Credential):
    """Calls the chosen member directly; choosing, and a member without `get_token_info`, go
    through the shared steps."""

    def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        chosen = self._chosen
        if chosen is None:
            arguments = {"claims": claims, "tenant_id": tenant_id, "enable_cae": cae, **extra}
            return run(self._token_steps(scopes, arguments), self._perform)
        return as_access_token(
            chosen.get_token(*scopes, claims=claims, tenant_id=tenant_id, enable_cae=cae, **extra)
        )

    def _token_info(self, scopes: Scopes, options: TokenRequestOptions | None) -> AccessTokenInfo:
        get_token_info = getattr(self._chosen, "get_token_info", None)
        if callable(get_token_info):
            return as_token_info(get_token_info(*scopes, options=options))
        return run(self._token_info_steps(scopes, options), self._perform)

    def close(self) -> None:
        run(self._close_steps(), self._perform)


class ChainedCredential(Chain[TokenCredentialLike], DelegatingCredential):
    """A sequence of credentials that is itself a credential (see `_delegating` for the
    rules)."""
