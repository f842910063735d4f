"""The authority as one server process sees it: its store, master key, public URL and caches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from keyless.authority.cache import AuthorityCache
from keyless.authority.federation import IssuerKeys
from keyless.authority.keys import JWKS_MAX_AGE_S, jwks_max_age_from_env
from keyless.authority.masterkey import MasterKey
from keyless.base.vault_domain import VaultDomain
from keyless.store.grant_log import GrantLog
from keyless.store.refusal_audit import RefusalAudit


@dataclass
class Authority:
    engine: Engine
    master: MasterKey
    endpoint: str  # public base URL, e.g. https://localhost:8443; never taken from Host headers
    cache: AuthorityCache
    issuer_keys: IssuerKeys
    grant_log: GrantLog
    refusals: RefusalAudit  # refused management requests, audited with floods folded
    # How long relying parties may cache JWKS, and so how long a key waits before it signs.
    jwks_max_age_s: int = JWKS_MAX_AGE_S

    @classmethod
    def create(
        cls, engine: Engine, master: MasterKey, endpoint: str, extra_ca_files: list[Path]
    ) -> Authority:
        grant_log = GrantLog(engine)
        return cls(
            engine=engine,
            master=master,
            endpoint=endpoint.rstrip("/"),
            cache=AuthorityCache(engine, master, _endpoint_aliases(endpoint)),
            issuer_keys=IssuerKeys(extra_ca_files),
            grant_log=grant_log,
            refusals=RefusalAudit(grant_log),
            jwks_max_age_s=jwks_max_age_from_env(),
        )

    def issuer(self, tenant_id: str) -> str:
        return f"{self.endpoint}/{tenant_id}/v2.0"

    def token_endpoint(self, tenant_id: str) -> str:
        return f"{self.endpoint}/{tenant_id}/oauth2/v2.0/token"

    def assertion_audiences(self, tenant_id: str) -> set[str]:
        """What a client assertion's `aud` may be: the token endpoint (v2 and v1 paths) or the
        issuer (RFC 7523bis allows either; nothing else, see client_auth.single_audience)."""
        return {
            self.token_endpoint(tenant_id),
            f"{self.endpoint}/{tenant_id}/oauth2/token",
            self.issuer(tenant_id),
        }


def _endpoint_aliases(endpoint: str) -> dict[str, str]:
    """The vault audience for this endpoint (`https://vault.localhost:8443`): the Key Vault
    client asks for a token for the audience its vault's challenge names."""
    domain = VaultDomain.from_endpoint(endpoint)
    return {domain.audience: "vault"} if domain.usable else {}
