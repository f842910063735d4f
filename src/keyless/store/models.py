"""The store's tables, as SQLAlchemy 2 typed models.

Every table carries the tenant it belongs to, so no query can wander across tenants by accident.
Times are UTC epoch seconds (floats), as on the wire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, dict[str, Any] | None: JSON}


class StoreState(Base):
    """One row per name. `directory_generation` is bumped by every directory or key write,
    so every server process (and every replica sharing the store) knows when its caches
    went stale by reading one integer."""

    __tablename__ = "store_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    token_lifetime_s: Mapped[int] = mapped_column(Integer, default=3600)
    key_rotation_interval_s: Mapped[int] = mapped_column(Integer, default=30 * 86400)
    created_at: Mapped[float] = mapped_column(Float)


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(256))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class User(Base):
    __tablename__ = "users"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_principal_name: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(256))
    os_uid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    is_tenant_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    # Set by `keyless ad user revoke-sessions`: access tokens issued before it (iat < this)
    # are refused at Keyless's own resources (keyless.authority.principal_state).
    tokens_valid_from: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    # A disabled user gets no token and its tokens are refused at Keyless's resources.
    account_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_principal_name"),
        UniqueConstraint("tenant_id", "os_uid"),
    )


class Group(Base):
    __tablename__ = "groups"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("tenant_id", "display_name"),)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.object_id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_type: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    __table_args__ = (Index("ix_group_members_member", "member_id"),)


class Application(Base):
    """An application registration: the thing credentials belong to (as in Entra)."""

    __tablename__ = "applications"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class ServicePrincipal(Base):
    """The identity that signs in: an application's, or a managed identity's (no application
    object; `resource_id` is its `xms_mirid`)."""

    __tablename__ = "service_principals"
    object_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(36), unique=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))  # "Application" | "ManagedIdentity"
    resource_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    # `az ad sp update --set accountEnabled=false`: no token, and its tokens refused.
    account_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    __table_args__ = (Index("ix_sp_tenant_name", "tenant_id", "display_name"),)


class CertificateCredential(Base):
    __tablename__ = "certificate_credentials"
    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    app_id: Mapped[str] = mapped_column(String(36), index=True)
    thumbprint_sha1: Mapped[str] = mapped_column(String(64))
    thumbprint_sha256: Mapped[str] = mapped_column(String(64))
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    display_name: Mapped[str] = mapped_column(String(256))
    not_before: Mapped[float] = mapped_column(Float)
    not_after: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class ClientSecret(Base):
    """Only a SHA-256 of the secret is kept: the secret is 256 random bits, so a fast hash is
    as strong as a slow one, and costs microseconds per request."""

    __tablename__ = "client_secrets"
    key_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    app_id: Mapped[str] = mapped_column(String(36), index=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    hint: Mapped[str] = mapped_column(String(8))
    display_name: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class FederatedCredential(Base):
    __tablename__ = "federated_credentials"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    app_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(120))
    issuer: Mapped[str] = mapped_column(String(2048))
    subject: Mapped[str] = mapped_column(String(2048))
    audiences: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(600), default="")
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("app_id", "name"),)


class ResourceApi(Base):
    """An audience tokens can be issued for. `identifier_uris[0]` is the canonical `aud`;
    the others (Azure's names) are aliases that resolve to it."""

    __tablename__ = "resource_apis"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    identifier_uris: Mapped[list[str]] = mapped_column(JSON)
    built_in: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)


class SigningKey(Base):
    """A tenant's RS256 key. Lifecycle: next (published, not signing) -> active (signing) ->
    retired (published until `published_until`) -> expired (private part erased)."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    activated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    retired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    published_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_signing_keys_tenant_status", "tenant_id", "status"),)


class UsedAssertion(Base):
    """Client assertion IDs seen, kept until the assertion would have expired anyway, so a
    replay is refused by every process sharing the store (the primary key does the work)."""

    __tablename__ = "used_assertions"
    client_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class AuditEvent(Base):
    """Who did what to what, and how it ended. Never a token, secret or assertion."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(1024))
    result: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    trace_id: Mapped[str] = mapped_column(String(36))


class RoleDefinition(Base):
    """A custom role (built-in roles live in code, `keyless.access.permissions`)."""

    __tablename__ = "role_definitions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    role_name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(1024), default="")
    permissions: Mapped[dict[str, Any]] = mapped_column(JSON)
    assignable_scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("tenant_id", "role_name"),)


class RoleAssignment(Base):
    """`principal_id` holds `role_definition_id` at `scope` and every scope below it.
    `scope_key` is the lower-case scope, indexed for prefix lookups."""

    __tablename__ = "role_assignments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    principal_id: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(String(32))
    role_definition_id: Mapped[str] = mapped_column(String(36), index=True)
    scope: Mapped[str] = mapped_column(String(1024))
    scope_key: Mapped[str] = mapped_column(String(1024), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(36))
    __table_args__ = (UniqueConstraint("principal_id", "role_definition_id", "scope_key"),)


class ResourceGroup(Base):
    __tablename__ = "resource_groups"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)  # lower-case ID
    id: Mapped[str] = mapped_column(String(512))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(90))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)


class Resource(Base):
    """A resource with an ARM-shaped ID. `properties` are the type's own; `identity` is the
    ARM identity block as the client sees it."""

    __tablename__ = "resources"
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)  # lower-case ID
    id: Mapped[str] = mapped_column(String(1024))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    subscription_id: Mapped[str] = mapped_column(String(36))
    group_key: Mapped[str] = mapped_column(
        ForeignKey("resource_groups.key", ondelete="CASCADE"), index=True
    )
    parent_key: Mapped[str | None] = mapped_column(String(1024), nullable=True, index=True)
    type: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(90))
    location: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON)
    identity: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class IdentityAttachment(Base):
    """A user-assigned identity attached to a resource, so deleting the identity can detach it
    everywhere without reading every resource."""

    __tablename__ = "identity_attachments"
    resource_key: Mapped[str] = mapped_column(
        ForeignKey("resources.key", ondelete="CASCADE"), primary_key=True
    )
    identity_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    __table_args__ = (Index("ix_identity_attachments_identity", "identity_key"),)


class DeviceCode(Base):
    """An RFC 8628 device authorization: both codes are kept only as SHA-256. `status` moves
    pending -> approved | denied -> redeemed (once); a pending code simply expires."""

    __tablename__ = "device_codes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(36))
    device_code_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_code_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    resource_id: Mapped[str] = mapped_column(String(36))
    scope: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))
    user_object_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    client_ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    last_poll_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_device_codes_tenant_status", "tenant_id", "status"),)


class SignInSession(Base):
    """A user's sign-in on one client: the family every rotated refresh token belongs to.
    Revoking it (logout, an administrator, a replayed refresh token) ends all of them."""

    __tablename__ = "sign_in_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_object_id: Mapped[str] = mapped_column(
        ForeignKey("users.object_id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(36))
    auth_method: Mapped[str] = mapped_column(String(32))  # "device_code" | "local"
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # the hard limit
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RefreshToken(Base):
    """One refresh token of a session, as SHA-256 only. A rotated token is kept until it
    expires so that presenting it again is recognised as a replay."""

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sign_in_sessions.id", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # "active" | "rotated"
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    rotated_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DatabaseRoleMapping(Base):
    """Who may log in as a database role on a server through the token gateway: the role was
    created for `principal_id` (a user, service principal, managed identity or group) of
    `tenant_id`. `server_key` is the server's gateway name, lower-case (the `ou=` of the bind
    DN); `role_name` is the role exactly as the database spells it (roles are case-sensitive)."""

    __tablename__ = "database_role_mappings"
    server_key: Mapped[str] = mapped_column(String(63), primary_key=True)
    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    principal_id: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(String(32))  # User | Group | ServicePrincipal
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(256))


class Vault(Base):
    """A `Keyless.Vault/vaults` resource's data-plane record. `name` is the vault's DNS label,
    lower-case and unique in the store (it is the host name's first label). `sealed_key` is the
    vault's AES-256 data key sealed by the master key; made on the first secret write."""

    __tablename__ = "vaults"
    name: Mapped[str] = mapped_column(String(24), primary_key=True)
    resource_key: Mapped[str] = mapped_column(
        ForeignKey("resources.key", ondelete="CASCADE"), unique=True
    )
    resource_id: Mapped[str] = mapped_column(String(1024))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    retention_days: Mapped[int] = mapped_column(Integer, default=90)
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class VaultSecret(Base):
    """A secret's name in a vault (compared lower-case, as Key Vault does). A soft-deleted
    secret keeps its versions until purged or recovered."""

    __tablename__ = "vault_secrets"
    vault_name: Mapped[str] = mapped_column(
        ForeignKey("vaults.name", ondelete="CASCADE"), primary_key=True
    )
    name_key: Mapped[str] = mapped_column(String(127), primary_key=True)
    name: Mapped[str] = mapped_column(String(127))
    latest_version: Mapped[str] = mapped_column(String(32))
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    purge_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class VaultSecretVersion(Base):
    """One version of a secret: the value sealed with the vault's data key (never in clear),
    and its attributes."""

    __tablename__ = "vault_secret_versions"
    vault_name: Mapped[str] = mapped_column(String(24), primary_key=True)
    name_key: Mapped[str] = mapped_column(String(127), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    sealed_value: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    not_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        ForeignKeyConstraint(
            ["vault_name", "name_key"],
            ["vault_secrets.vault_name", "vault_secrets.name_key"],
            ondelete="CASCADE",
        ),
    )
