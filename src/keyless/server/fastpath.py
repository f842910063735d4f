"""`POST /{tenant}/oauth2/v2.0/token` straight to its endpoint, in front of Starlette.

The token endpoint is the one route every client calls all the time. Behind Starlette it passed
through five middleware layers and the router's regular expressions (the token route is one of
~100) before its own code ran. This dispatcher recognises it by a split of the path and calls
the endpoint behind the same error boundary; what it does not recognise (another method or
path, a vault host, a trailing slash Starlette would redirect) goes to Starlette unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.base.vault_domain import VaultDomain
from keyless.server.errors import ErrorBoundary

_TOKEN_PATH = ("oauth2", "v2.0", "token")


class TokenFastPath:
    def __init__(self, app: ASGIApp, token_endpoint: ASGIApp, vaults: VaultDomain) -> None:
        self.app = app
        self.token = ErrorBoundary(token_endpoint)
        self.vaults = vaults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            tenant = _token_path_tenant(scope["path"])
            if tenant is not None and not self._vault_host(scope):
                scope["path_params"] = {"tenant": tenant}
                await self.token(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _vault_host(self, scope: Scope) -> bool:
        """A vault's host name routes to the vault, whatever the path (`VaultHosts`)."""
        for name, value in scope["headers"]:
            if name == b"host":
                return self.vaults.vault_of(value.decode("latin-1")) is not None
        return False


def _token_path_tenant(path: str) -> str | None:
    """The tenant of `/{tenant}/oauth2/v2.0/token` (Starlette's `{tenant}`: any non-empty
    segment), else None."""
    parts = path.split("/")
    if len(parts) == 5 and not parts[0] and parts[1] and tuple(parts[2:]) == _TOKEN_PATH:
        return parts[1]
    return None
