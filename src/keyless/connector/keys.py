"""The configuration keys a connection writes into the app's settings (docs/design.md, "Service
Connector: what a connection writes").

Keys are `AZURE_<TARGET>_<NAME>`; a second connection to the same target type gets
`AZURE_<TARGET>_<CONNECTION>_<NAME>`, and `--customized-keys OLD=NEW` renames any of them.
Values name where and as whom to connect, never a password.
"""

from __future__ import annotations

import re

from keyless.base.errors import KeylessError

CLIENT_TYPES = (
    "python", "django", "nodejs", "go", "java", "springboot", "php", "ruby", "dotnet", "none",
)  # fmt: skip
# Client types whose keys Keyless knows for PostgreSQL only (Azure's Service Connector,
# "Integrate Azure Database for PostgreSQL with Service Connector").
POSTGRES_ONLY = ("springboot", "php", "ruby")
# Spring Cloud Azure's credential properties (springboot): Service Connector writes these
# instead of AZURE_<TARGET>_CLIENTID/_TENANTID/_CLIENTSECRET.
SPRING_CREDENTIAL = "spring.cloud.azure.credential."
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


class ConfigurationKeyError(KeylessError, ValueError):
    """A customized key is malformed or names a key the connection does not write."""


def prefixed(target: str, connection: str | None) -> str:
    """`AZURE_POSTGRESQL_` or, for a second connection, `AZURE_POSTGRESQL_<CONNECTION>_`."""
    if connection is None:
        return f"AZURE_{target}_"
    return f"AZURE_{target}_{re.sub(r'[^A-Za-z0-9]', '_', connection).upper()}_"


def postgres_values(
    client_type: str, host: str, port: int, database: str, role: str, sslmode: str
) -> dict[str, str]:
    """Key suffixes and values for PostgreSQL with a token (the role logs in with no password)."""
    if client_type in ("python", "none"):
        return {
            "CONNECTIONSTRING": (
                f"dbname={database} host={host} port={port} sslmode={sslmode} user={role}"
            )
        }
    if client_type == "django":
        return {"NAME": database, "HOST": host, "USER": role, "PORT": str(port)}
    if client_type == "nodejs":
        return {
            "HOST": host,
            "USER": role,
            "DATABASE": database,
            "PORT": str(port),
            "SSL": "false" if sslmode in ("disable", "allow", "prefer") else "true",
        }
    if client_type == "go":
        # Azure's Go form has no port (it is always 5432 there); a local server needs it.
        port_part = "" if port == 5432 else f" port={port}"
        return {
            "CONNECTIONSTRING": f"host={host}{port_part} dbname={database} sslmode={sslmode} "
            f"user={role}"
        }
    if client_type in ("php", "ruby"):
        # Azure's PHP (native) and Ruby (ruby-pg) strings: libpq keywords, port included.
        return {
            "CONNECTIONSTRING": f"host={host} port={port} dbname={database} sslmode={sslmode} "
            f"user={role}"
        }
    if client_type == "springboot":
        # Whole property names, not key suffixes: Spring Boot reads them as they are.
        return {
            "spring.datasource.url": f"jdbc:postgresql://{host}:{port}/{database}"
            f"?sslmode={sslmode}",
            "spring.datasource.username": role,
            "spring.datasource.passwordless-enabled": "true",
        }
    if client_type == "java":
        return {
            "CONNECTIONSTRING": f"jdbc:postgresql://{host}:{port}/{database}?sslmode={sslmode}"
            f"&user={role}"
        }
    if client_type == "dotnet":
        return {
            "CONNECTIONSTRING": f"Server={host};Database={database};Port={port};"
            f"Ssl Mode={_dotnet_ssl(sslmode)};User Id={role};"
        }
    raise ConfigurationKeyError(
        f"client type {client_type!r} is not one of {', '.join(CLIENT_TYPES)}"
    )


def is_property(key: str) -> bool:
    """A whole property name (springboot's `spring.datasource.url`), written unprefixed."""
    return key.startswith("spring.")


def identity_values(
    client_type: str, prefix: str, auth_type: str, client_id: str, tenant_id: str
) -> dict[str, str]:
    """The keys that say which identity the app is (none for a system-assigned one)."""
    if auth_type == "systemAssignedIdentity":
        return {}
    if client_type == "springboot":
        if auth_type == "userAssignedIdentity":
            return {
                SPRING_CREDENTIAL + "client-id": client_id,
                SPRING_CREDENTIAL + "managed-identity-enabled": "true",
            }
        return {
            SPRING_CREDENTIAL + "client-id": client_id,
            SPRING_CREDENTIAL + "tenant-id": tenant_id,
        }
    keys = {prefix + "CLIENTID": client_id}
    if auth_type == "servicePrincipal":
        keys[prefix + "TENANTID"] = tenant_id
    return keys


def secret_key(client_type: str, prefix: str, suffix: str) -> str:
    """Where a service principal's secret reference goes."""
    return SPRING_CREDENTIAL + "client-secret" if client_type == "springboot" else prefix + suffix


def _dotnet_ssl(sslmode: str) -> str:
    return {
        "disable": "Disable",
        "allow": "Allow",
        "prefer": "Prefer",
        "require": "Require",
        "verify-ca": "VerifyCA",
        "verify-full": "VerifyFull",
    }[sslmode]


def parse_customized(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not _KEY.match(old) or not _KEY.match(new):
            raise ConfigurationKeyError(
                f"--customized-keys {item[:80]!r} is not DEFAULT_KEY=NEW_KEY (letters, digits, "
                "'_', '.' and '-', starting with a letter or '_')"
            )
        out[old] = new
    return out


def apply_customized(keys: dict[str, str], customized: dict[str, str]) -> dict[str, str]:
    unknown = set(customized) - set(keys)
    if unknown:
        raise ConfigurationKeyError(
            f"--customized-keys names {', '.join(sorted(unknown))}, which this connection does "
            f"not write; it writes {', '.join(sorted(keys))}"
        )
    renamed = {customized.get(k, k): v for k, v in keys.items()}
    if len(renamed) != len(keys):
        raise ConfigurationKeyError("--customized-keys maps two keys to the same name")
    return renamed
