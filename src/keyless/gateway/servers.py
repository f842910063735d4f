"""The `Keyless.Database/postgresServers` resource type: a PostgreSQL server whose logins the
gateway checks.

The resource's name is the `ou=` of the bind DN, so it is unique on this Keyless across
resource groups and tenants (as vault names are), and deleting the server removes every role
mapping made for it. What the server *is* (host, port, TLS mode) and who administers it (the
Keyless admin role and the principal it belongs to) are its properties; nothing secret is.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from keyless.base.errors import ResourceError
from keyless.gateway.names import GatewayNameError, check_role_name, server_key
from keyless.resources.types import Properties, PropertiesError, ResourceType, register
from keyless.store.generation import bump_generation
from keyless.store.models import DatabaseRoleMapping, Resource

POSTGRES_TYPE = "Keyless.Database/postgresServers"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_MANAGED_KEYS = {"dataDirectory", "socketDirectory", "superuser", "logFile", "runAs"}


def _host(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise PropertiesError("host is required: the PostgreSQL server's DNS name or IP address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOST.match(value):
        raise PropertiesError(f"host {value[:80]!r} is not a DNS name or an IP address")
    return value.lower()


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PropertiesError("port must be a TCP port number (1-65535)")
    return value


def _text(properties: Properties, name: str, limit: int = 4096) -> str | None:
    value = properties.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise PropertiesError(f"{name} must be non-empty text of at most {limit} characters")
    return value


def _validate(properties: Properties) -> Properties:
    allowed = {
        "host",
        "port",
        "sslMode",
        "administratorLogin",
        "administratorPrincipalId",
        "administratorPrincipalName",
        "gateway",
        "managed",
        "version",
        "fullyQualifiedDomainName",
        "state",
    }
    unknown = set(properties) - allowed
    if unknown:
        raise PropertiesError(
            f"unknown postgresServers properties: {', '.join(sorted(unknown))} (a server has "
            f"{', '.join(sorted(allowed - {'fullyQualifiedDomainName', 'state'}))})"
        )
    ssl_mode = properties.get("sslMode", "prefer")
    if ssl_mode not in SSL_MODES:
        raise PropertiesError(f"sslMode must be one of {', '.join(SSL_MODES)}")
    out: Properties = {
        "host": _host(properties.get("host")),
        "port": _port(properties.get("port", DEFAULT_PORT)),
        "sslMode": ssl_mode,
    }
    admin = _text(properties, "administratorLogin", 63)
    if admin is not None:
        try:
            out["administratorLogin"] = check_role_name(admin)
        except GatewayNameError as exc:
            raise PropertiesError(f"administratorLogin: {exc}") from None
    principal = _text(properties, "administratorPrincipalId", 36)
    if principal is not None:
        try:
            out["administratorPrincipalId"] = str(uuid.UUID(principal))
        except ValueError:
            raise PropertiesError("administratorPrincipalId must be an object ID (GUID)") from None
    name = _text(properties, "administratorPrincipalName", 256)
    if name is not None:
        out["administratorPrincipalName"] = name
    version = _text(properties, "version", 64)
    if version is not None:
        out["version"] = version
    gateway = properties.get("gateway")
    if gateway is not None:
        if not isinstance(gateway, dict) or set(gateway) - {"host", "port", "scheme"}:
            raise PropertiesError("gateway must be an object with host, port and scheme")
        if gateway.get("scheme", "ldap") not in ("ldap", "ldaps"):
            raise PropertiesError("gateway.scheme must be ldap or ldaps")
        out["gateway"] = {
            "host": _host(gateway.get("host")),
            "port": _port(gateway.get("port")),
            "scheme": gateway.get("scheme", "ldap"),
        }
    managed = properties.get("managed")
    if managed is not None:
        if not isinstance(managed, dict) or set(managed) - _MANAGED_KEYS:
            raise PropertiesError(
                f"managed must be an object with {', '.join(sorted(_MANAGED_KEYS))}"
            )
        out["managed"] = {k: _text(managed, k) for k in sorted(managed)}
    return out


def _after_write(session: Session, resource: Resource, created: bool) -> None:
    try:
        key = server_key(resource.name)
    except GatewayNameError as exc:
        raise ResourceError(400, "InvalidServerName", str(exc)) from None
    clash = session.scalars(
        select(Resource.id).where(
            Resource.type == POSTGRES_TYPE,
            func.lower(Resource.name) == key,
            Resource.key != resource.key,
        )
    ).first()
    if clash is not None:
        raise ResourceError(
            409,
            "ServerNameInUse",
            f"a PostgreSQL server named {key!r} is already registered on this Keyless (the name "
            "is part of every login's bind DN, so it is unique across resource groups and "
            "tenants); choose another name",
        )
    host = str(resource.properties["host"])
    state = "Enabled" if resource.properties.get("administratorLogin") else "NotEnabled"
    resource.properties = {**resource.properties, "fullyQualifiedDomainName": host, "state": state}


def _before_delete(session: Session, resource: Resource) -> None:
    """Logins to a server Keyless no longer knows must stop working at once."""
    result = session.execute(
        delete(DatabaseRoleMapping).where(
            DatabaseRoleMapping.server_key == resource.name.lower(),
            DatabaseRoleMapping.tenant_id == resource.tenant_id,
        )
    )
    if int(result.rowcount):  # type: ignore[attr-defined]
        bump_generation(session)


POSTGRES_SERVERS = register(
    ResourceType(POSTGRES_TYPE, _validate, after_write=_after_write, before_delete=_before_delete)
)
