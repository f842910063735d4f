"""The directory: users, groups, applications with their service principals, and credentials.

Functions take a Session inside the caller's transaction, validate every input before the
first write, and bump the directory generation so token-issuing caches everywhere see the change.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from keyless.authority.client_auth import hash_secret
from keyless.authority.principal_hooks import principal_removed
from keyless.base.errors import KeylessError
from keyless.store.generation import ACCESS_GENERATION, bump_generation
from keyless.store.models import (
    Application,
    CertificateCredential,
    ClientSecret,
    FederatedCredential,
    Group,
    GroupMember,
    RoleAssignment,
    ServicePrincipal,
    User,
)

DEFAULT_FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
_FIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DirectoryError(KeylessError):
    """A directory request that cannot be carried out; nothing was written."""

    code: str

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> DirectoryError:
    return DirectoryError(400, "BadRequest", message)


def _not_found(message: str) -> DirectoryError:
    return DirectoryError(404, "NotFound", message)


def check_display_name(name: object, what: str = "display name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"the {what} is missing; give a name of 1 to 120 characters")
    if len(name) > 120 or _CONTROL.search(name):
        raise _bad(f"the {what} must be 1 to 120 printable characters")
    return name.strip()


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------- principals


def find_service_principal(session: Session, tenant_id: str, ref: str) -> ServicePrincipal:
    """By app ID, object ID or (unique) display name, as `az ad sp show --id` accepts."""
    conditions = [ServicePrincipal.display_name == ref]
    if _is_guid(ref):
        conditions += [ServicePrincipal.app_id == ref, ServicePrincipal.object_id == ref]
    found = session.scalars(
        select(ServicePrincipal).where(ServicePrincipal.tenant_id == tenant_id, or_(*conditions))
    ).all()
    if not found:
        raise _not_found(f"no service principal {ref!r} in this tenant (`keyless ad sp list`)")
    if len(found) > 1:
        raise DirectoryError(
            409, "Ambiguous", f"{len(found)} service principals are named {ref!r}; use the appId"
        )
    return found[0]


def sp_json(sp: ServicePrincipal) -> dict[str, Any]:
    return {
        "appId": sp.app_id,
        "id": sp.object_id,
        "displayName": sp.display_name,
        "servicePrincipalType": sp.kind,
        "appOwnerOrganizationId": sp.tenant_id,
        "alternativeNames": [sp.resource_id] if sp.resource_id else [],
        "accountEnabled": sp.account_enabled,
    }


def list_service_principals(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ServicePrincipal)
        .where(ServicePrincipal.tenant_id == tenant_id)
        .order_by(ServicePrincipal.display_name)
    )
    return [sp_json(sp) for sp in rows]


@dataclass
class NewSecret:
    key_id: str
    value: str
    expires_at: float


def new_secret_value() -> str:
    """256 random bits, base64url: enough entropy that a plain SHA-256 of it is a safe record."""
    return secrets.token_urlsafe(32)


def add_secret(session: Session, tenant_id: str, app_id: str, years: float) -> NewSecret:
    if not 0 < years <= 2:
        raise _bad("a client secret may live at most 2 years; pass --years between 0 and 2")
    value = new_secret_value()
    now = time.time()
    secret = ClientSecret(
        key_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        app_id=app_id,
        secret_sha256=hash_secret(value),
        hint=value[:3],
        display_name="rbac",
        expires_at=now + years * 365.25 * 86400,
        created_at=now,
    )
    session.add(secret)
    bump_generation(session)
    return NewSecret(secret.key_id, value, secret.expires_at)


def parse_certificate(pem: str) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise _bad(
            "the certificate is not a PEM X.509 certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise _bad("the certificate's key is not RSA; certificate assertions are RS256/PS256")
    if cert.public_key().key_size < 2048:  # type: ignore[union-attr]
        raise _bad("the certificate's RSA key is shorter than 2048 bits")
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise _bad("the certificate has expired; create a new one")
    return cert


def _thumb(der: bytes, algorithm: str) -> str:
    return base64.urlsafe_b64encode(hashlib.new(algorithm, der).digest()).rstrip(b"=").decode()


def add_certificate(
    session: Session, tenant_id: str, app_id: str, cert: x509.Certificate
) -> dict[str, Any]:
    der = cert.public_bytes(serialization.Encoding.DER)
    record = CertificateCredential(
        key_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        app_id=app_id,
        thumbprint_sha1=_thumb(der, "sha1"),
        thumbprint_sha256=_thumb(der, "sha256"),
        certificate_der=der,
        display_name=cert.subject.rfc4514_string()[:256],
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        created_at=time.time(),
    )
    session.add(record)
    bump_generation(session)
    return {
        "keyId": record.key_id,
        "thumbprint": hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - x5t is SHA-1 by spec
        "endDateTime": record.not_after,
    }


def remove_certificates_and_secrets(session: Session, app_id: str) -> None:
    for model in (CertificateCredential, ClientSecret):
        session.execute(delete(model).where(model.app_id == app_id))
    bump_generation(session)


def create_service_principal(session: Session, tenant_id: str, name: str) -> ServicePrincipal:
    name = check_display_name(name, "service principal name")
    now = time.time()
    app_id = str(uuid.uuid4())
    session.add(
        Application(
            object_id=str(uuid.uuid4()),
            app_id=app_id,
            tenant_id=tenant_id,
            display_name=name,
            created_at=now,
        )
    )
    sp = ServicePrincipal(
        object_id=str(uuid.uuid4()),
        app_id=app_id,
        tenant_id=tenant_id,
        display_name=name,
        kind="Application",
        created_at=now,
    )
    session.add(sp)
    bump_generation(session)
    return sp


def delete_service_principal(session: Session, tenant_id: str, ref: str) -> ServicePrincipal:
    sp = find_service_principal(session, tenant_id, ref)
    if sp.kind != "Application":
        raise _bad(
            "this is a managed identity; it is deleted with its resource, not with `ad sp delete`"
        )
    session.execute(delete(Application).where(Application.app_id == sp.app_id))
    delete_principal(session, sp)
    return sp


def delete_principal(session: Session, sp: ServicePrincipal) -> int:
    """Delete a service principal with its credentials, group memberships, every role
    assignment it holds and the grants higher parts keep for it (`principal_hooks`: database
    role mappings), so no grant outlives its holder; returns the assignments removed."""
    principal_removed(session, sp.tenant_id, sp.object_id)
    for model in (CertificateCredential, ClientSecret, FederatedCredential):
        session.execute(delete(model).where(model.app_id == sp.app_id))
    session.execute(delete(GroupMember).where(GroupMember.member_id == sp.object_id))
    removed = session.execute(
        delete(RoleAssignment).where(RoleAssignment.principal_id == sp.object_id)
    )
    session.delete(sp)
    bump_generation(session)
    bump_generation(session, ACCESS_GENERATION)
    return int(removed.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------- federation


def _check_issuer(issuer: object) -> str:
    if not isinstance(issuer, str) or not issuer:
        raise _bad("the federated credential needs an issuer (the external OIDC issuer URL)")
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise _bad(
            "the issuer must be an https URL without query or fragment, e.g. "
            "https://token.actions.githubusercontent.com"
        )
    if len(issuer) > 600:
        raise _bad("the issuer is longer than 600 characters")
    return issuer


def add_federated_credential(
    session: Session, tenant_id: str, app_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not _FIC_NAME.match(name):
        raise _bad(
            "the federated credential name must be 3 to 120 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    issuer = _check_issuer(body.get("issuer"))
    subject = body.get("subject")
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > 600
        or _CONTROL.search(subject)
    ):
        raise _bad(
            "the subject must be 1 to 600 printable characters, e.g. "
            "system:serviceaccount:NAMESPACE:NAME"
        )
    audiences = body.get("audiences") or [DEFAULT_FEDERATION_AUDIENCE]
    if (
        not isinstance(audiences, list)
        or len(audiences) != 1
        or not isinstance(audiences[0], str)
        or not audiences[0]
        or len(audiences[0]) > 600
    ):
        raise _bad(
            "audiences must be a list of exactly one audience (default "
            f"{DEFAULT_FEDERATION_AUDIENCE})"
        )
    description = body.get("description") or ""
    if not isinstance(description, str) or len(description) > 600:
        raise _bad("the description must be text of at most 600 characters")
    existing = session.scalars(
        select(FederatedCredential).where(FederatedCredential.app_id == app_id)
    ).all()
    if any(f.name == name for f in existing):
        raise DirectoryError(409, "Conflict", f"a federated credential named {name!r} exists")
    if any(f.issuer == issuer and f.subject == subject for f in existing):
        raise DirectoryError(
            409, "Conflict", "a federated credential with this issuer and subject exists"
        )
    if len(existing) >= 20:
        raise _bad("an application may have at most 20 federated credentials")
    fic = FederatedCredential(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        app_id=app_id,
        name=name,
        issuer=issuer,
        subject=subject,
        audiences=audiences,
        description=description,
        created_at=time.time(),
    )
    session.add(fic)
    bump_generation(session)
    return fic_json(fic)


def fic_json(fic: FederatedCredential) -> dict[str, Any]:
    return {
        "id": fic.id,
        "name": fic.name,
        "issuer": fic.issuer,
        "subject": fic.subject,
        "audiences": list(fic.audiences),
        "description": fic.description,
    }


def list_federated_credentials(session: Session, app_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(FederatedCredential)
        .where(FederatedCredential.app_id == app_id)
        .order_by(FederatedCredential.name)
    )
    return [fic_json(f) for f in rows]


def delete_federated_credential(session: Session, app_id: str, ref: str) -> None:
    fic = session.scalars(
        select(FederatedCredential).where(
            FederatedCredential.app_id == app_id,
            or_(FederatedCredential.name == ref, FederatedCredential.id == ref),
        )
    ).first()
    if fic is None:
        raise _not_found(f"no federated credential {ref!r} on this application")
    session.delete(fic)
    bump_generation(session)


# ------------------------------------------------------------------------------ users, groups


def group_json(group: Group) -> dict[str, Any]:
    return {"id": group.object_id, "displayName": group.display_name}


def create_group(session: Session, tenant_id: str, name: object) -> Group:
    display_name = check_display_name(name, "group name")
    exists = session.scalars(
        select(Group).where(Group.tenant_id == tenant_id, Group.display_name == display_name)
    ).first()
    if exists is not None:
        raise DirectoryError(409, "Conflict", f"a group named {display_name!r} already exists")
    group = Group(
        object_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        display_name=display_name,
        created_at=time.time(),
    )
    session.add(group)
    bump_generation(session)
    return group


def find_group(session: Session, tenant_id: str, ref: str) -> Group:
    conditions = [Group.display_name == ref]
    if _is_guid(ref):
        conditions.append(Group.object_id == ref)
    group = session.scalars(
        select(Group).where(Group.tenant_id == tenant_id, or_(*conditions))
    ).first()
    if group is None:
        raise _not_found(f"no group {ref!r} in this tenant (`keyless ad group list`)")
    return group


def list_groups(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Group).where(Group.tenant_id == tenant_id).order_by(Group.display_name)
    )
    return [group_json(g) for g in rows]


def _member_type(session: Session, tenant_id: str, member_id: str) -> str:
    if session.scalars(
        select(User.object_id).where(User.tenant_id == tenant_id, User.object_id == member_id)
    ).first():
        return "user"
    if session.scalars(
        select(Group.object_id).where(Group.tenant_id == tenant_id, Group.object_id == member_id)
    ).first():
        return "group"
    if session.scalars(
        select(ServicePrincipal.object_id).where(
            ServicePrincipal.tenant_id == tenant_id, ServicePrincipal.object_id == member_id
        )
    ).first():
        return "servicePrincipal"
    raise _not_found(f"no user, group or service principal with object ID {member_id!r}")


def _contains(session: Session, group_id: str, wanted: str) -> bool:
    """Whether `wanted` is `group_id` or a group nested (at any depth) inside it."""
    seen: set[str] = set()
    frontier = [group_id]
    while frontier:
        current = frontier.pop()
        if current == wanted:
            return True
        if current in seen:
            continue
        seen.add(current)
        frontier += session.scalars(
            select(GroupMember.member_id).where(
                GroupMember.group_id == current, GroupMember.member_type == "group"
            )
        ).all()
    return False


def add_member(session: Session, tenant_id: str, group_ref: str, member_id: object) -> None:
    if not isinstance(member_id, str) or not _is_guid(member_id):
        raise _bad("the member must be given by object ID (a GUID)")
    group = find_group(session, tenant_id, group_ref)
    member_type = _member_type(session, tenant_id, member_id)
    if member_type == "group" and _contains(session, member_id, group.object_id):
        raise _bad("adding this group would make a cycle: it already contains the target group")
    if session.get(GroupMember, (group.object_id, member_id)) is not None:
        raise DirectoryError(409, "Conflict", "that principal is already a member of the group")
    session.add(
        GroupMember(
            group_id=group.object_id,
            member_id=member_id,
            member_type=member_type,
            tenant_id=tenant_id,
        )
    )
    bump_generation(session)


def list_members(session: Session, tenant_id: str, group_ref: str) -> list[dict[str, Any]]:
    group = find_group(session, tenant_id, group_ref)
    rows = session.scalars(select(GroupMember).where(GroupMember.group_id == group.object_id))
    return [{"id": m.member_id, "type": m.member_type} for m in rows]
