"""What a server process keeps in memory to answer token requests without walking the store.

Everything here is rebuilt when the store's directory generation moves (see
`keyless.store.generation`), so a credential removed in one process stops working in all of
them on their next request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWKSet
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from keyless.authority.keys import (
    Signer,
    jwks_document,
    load_signer,
    published_keys,
    signing_key,
)
from keyless.authority.masterkey import MasterKey
from keyless.authority.principal_state import PrincipalState, load_principal
from keyless.store.generation import read_generations
from keyless.store.models import (
    CertificateCredential,
    ClientSecret,
    FederatedCredential,
    ResourceApi,
    ServicePrincipal,
    Tenant,
)

if TYPE_CHECKING:
    from keyless.authority.validation import TokenClaims


@dataclass(frozen=True)
class SecretInfo:
    key_id: str
    sha256: bytes
    expires_at: float


@dataclass(frozen=True)
class CertificateInfo:
    key_id: str
    x5t: str
    x5t_s256: str
    public_key: RSAPublicKey
    not_before: float
    not_after: float


@dataclass(frozen=True)
class FederationInfo:
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class ClientRecord:
    tenant_id: str
    app_id: str
    object_id: str
    display_name: str
    kind: str
    resource_id: str | None
    secrets: tuple[SecretInfo, ...]
    certificates: tuple[CertificateInfo, ...]
    federated: tuple[FederationInfo, ...]
    enabled: bool = True  # a disabled application gets no token (loaded per generation)


@dataclass(frozen=True)
class ResourceInfo:
    id: str
    name: str
    audience: str


@dataclass(frozen=True)
class TenantInfo:
    id: str
    domain: str
    token_lifetime_s: int
    is_default: bool = False


@dataclass
class Snapshot:
    generation: int
    tenants: dict[str, TenantInfo]
    resources: dict[str, dict[str, ResourceInfo]]  # tenant -> lowercased uri or id -> resource
    signers: dict[str, Signer] = field(default_factory=dict)
    jwks: dict[str, dict[str, Any]] = field(default_factory=dict)
    keysets: dict[str, PyJWKSet] = field(default_factory=dict)
    clients: dict[tuple[str, str], ClientRecord | None] = field(default_factory=dict)
    # Access tokens that passed `validate_access_token` against this snapshot, by (SHA-256 of
    # the token, resource API name); see keyless.authority.validation.
    validated: dict[tuple[bytes, str], TokenClaims] = field(default_factory=dict)
    # Token principals as the directory had them at this generation, by (tenant, object ID);
    # see keyless.authority.principal_state.
    principals: dict[tuple[str, str], PrincipalState] = field(default_factory=dict)


class AuthorityCache:
    def __init__(
        self, engine: Engine, master: MasterKey, aliases: dict[str, str] | None = None
    ) -> None:
        self._engine = engine
        self._master = master
        # Identifier URIs that depend on where this server answers (the vault audience
        # `https://vault.{host}:{port}`), by resource API name; not stored, so a changed
        # public host or port needs no store update.
        self._aliases = {uri.lower().rstrip("/"): name for uri, name in (aliases or {}).items()}
        self._lock = threading.Lock()
        self._snapshot = Snapshot(generation=-1, tenants={}, resources={})

    def current(self) -> Snapshot:
        """The snapshot for the store as it is now; costs one indexed read when nothing moved."""
        with self._engine.connect() as connection:
            generation = read_generations(connection)[0]
        return self.at(generation)

    def latest(self) -> Snapshot:
        """The snapshot built last, without reading the store: possibly stale, for what may be
        (naming the tenant a refused request is recorded under)."""
        return self._snapshot

    def built_at(self, generation: int) -> Snapshot | None:
        """The snapshot if it is already built for this directory generation (read by the
        caller in this request), else None: a caller that must not wait for a rebuild (an
        event loop) asks this first."""
        snapshot = self._snapshot
        return snapshot if snapshot.generation == generation else None

    def at(self, generation: int) -> Snapshot:
        """The snapshot for a directory generation the caller read in this request."""
        snapshot = self._snapshot
        if snapshot.generation == generation:
            return snapshot
        with self._lock:
            if self._snapshot.generation != generation:
                self._snapshot = self._build(generation)
            return self._snapshot

    def _build(self, generation: int) -> Snapshot:
        with Session(self._engine) as session:
            tenants = {
                t.id: TenantInfo(t.id, t.domain, t.token_lifetime_s, t.is_default)
                for t in session.scalars(select(Tenant))
            }
            resources: dict[str, dict[str, ResourceInfo]] = {t: {} for t in tenants}
            for api in session.scalars(select(ResourceApi)):
                info = ResourceInfo(api.id, api.name, api.identifier_uris[0])
                by_name = resources.setdefault(api.tenant_id, {})
                by_name[api.id.lower()] = info
                for uri in api.identifier_uris:
                    by_name[uri.lower().rstrip("/")] = info
                for alias, name in self._aliases.items():
                    if api.name == name:
                        by_name.setdefault(alias, info)
            return Snapshot(generation=generation, tenants=tenants, resources=resources)

    def signer(self, snapshot: Snapshot, tenant_id: str) -> Signer:
        signer = snapshot.signers.get(tenant_id)
        # A promoted key takes over at a time, not at a store write: `signs_until` says when.
        if signer is None or signer.signs_until <= time.time():
            with Session(self._engine) as session:
                found = signing_key(session, tenant_id, time.time())
                if found is None:
                    raise LookupError(f"tenant {tenant_id} has no active signing key")
                signer = load_signer(self._master, *found)
            snapshot.signers[tenant_id] = signer
        return signer

    def jwks(self, snapshot: Snapshot, tenant_id: str) -> dict[str, Any]:
        document = snapshot.jwks.get(tenant_id)
        if document is None:
            with Session(self._engine) as session:
                document = jwks_document(published_keys(session, tenant_id))
            snapshot.jwks[tenant_id] = document
        return document

    def keyset(self, snapshot: Snapshot, tenant_id: str) -> PyJWKSet:
        """The tenant's published keys, ready to verify tokens with."""
        keyset = snapshot.keysets.get(tenant_id)
        if keyset is None:
            keyset = PyJWKSet.from_dict(self.jwks(snapshot, tenant_id))
            snapshot.keysets[tenant_id] = keyset
        return keyset

    def principal(self, snapshot: Snapshot, tenant_id: str, object_id: str) -> PrincipalState:
        """Whether a token's principal still exists (and its revoked sessions), loaded once
        per generation: every change to it bumps the generation."""
        key = (tenant_id, object_id)
        state = snapshot.principals.get(key)
        if state is None:
            state = load_principal(self._engine, tenant_id, object_id)
            snapshot.principals[key] = state
        return state

    def client(self, snapshot: Snapshot, tenant_id: str, app_id: str) -> ClientRecord | None:
        key = (tenant_id, app_id)
        if key not in snapshot.clients:
            snapshot.clients[key] = self._load_client(tenant_id, app_id)
        return snapshot.clients[key]

    def _load_client(self, tenant_id: str, app_id: str) -> ClientRecord | None:
        with Session(self._engine) as session:
            sp = session.scalars(
                select(ServicePrincipal).where(
                    ServicePrincipal.tenant_id == tenant_id, ServicePrincipal.app_id == app_id
                )
            ).first()
            if sp is None:
                return None
            secrets = tuple(
                SecretInfo(s.key_id, s.secret_sha256, s.expires_at)
                for s in session.scalars(select(ClientSecret).where(ClientSecret.app_id == app_id))
            )
            certificates = []
            for c in session.scalars(
                select(CertificateCredential).where(CertificateCredential.app_id == app_id)
            ):
                public_key = x509.load_der_x509_certificate(c.certificate_der).public_key()
                if not isinstance(public_key, RSAPublicKey):
                    continue  # only RSA certificates are accepted at registration
                certificates.append(
                    CertificateInfo(
                        c.key_id,
                        c.thumbprint_sha1,
                        c.thumbprint_sha256,
                        public_key,
                        c.not_before,
                        c.not_after,
                    )
                )
            federated = tuple(
                FederationInfo(f.name, f.issuer, f.subject, tuple(f.audiences))
                for f in session.scalars(
                    select(FederatedCredential).where(FederatedCredential.app_id == app_id)
                )
            )
            return ClientRecord(
                tenant_id=tenant_id,
                app_id=app_id,
                object_id=sp.object_id,
                display_name=sp.display_name,
                kind=sp.kind,
                resource_id=sp.resource_id,
                secrets=secrets,
                certificates=tuple(certificates),
                federated=federated,
                enabled=sp.account_enabled,
            )
