"""The bind DN the gateway accepts, and the pg_hba.conf line that makes PostgreSQL send it.

PostgreSQL's `ldap` method in simple bind mode binds as `ldapprefix + user name + ldapsuffix`
without escaping the user name. With prefix `cn=` and suffix `,ou=<server>,dc=keyless` the DN
is `cn=<role>,ou=<server>,dc=keyless`. The DN is parsed by an RFC 4514 parser and must have
exactly these three single-valued RDNs; role and server names are restricted to characters that
need no escaping, so a user name such as `x,ou=other` can never be read as another server.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from keyless.base.errors import KeylessError

BASE_DC = "keyless"
# PostgreSQL role names are at most 63 bytes (NAMEDATALEN - 1). Letters, digits and `_.@$-`
# cover the names Azure's tooling makes (identity names, UPNs) and need no DN escaping.
_ROLE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@$-]{0,62}$")
# Azure Database for PostgreSQL server names: 1-63 of lower-case letters, digits and hyphens,
# not starting or ending with a hyphen (Keyless accepts any case and keeps the lower-case form).
_SERVER = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class BindDnError(KeylessError, ValueError):
    """The bind DN is not `cn=<role>,ou=<server>,dc=keyless`; the message says what is wrong."""


class GatewayNameError(KeylessError, ValueError):
    """A role or server name the gateway cannot carry in a bind DN."""


def check_role_name(role: str) -> str:
    if not _ROLE.match(role):
        raise GatewayNameError(
            f"role name {role[:80]!r} cannot be used with the token gateway: use 1-63 letters, "
            "digits and _ . @ $ - (starting with a letter, digit or _)"
        )
    return role


def server_key(server: str) -> str:
    """The server's gateway name in the form it is stored and compared (lower-case)."""
    key = server.lower()
    if not _SERVER.match(key):
        raise GatewayNameError(
            f"server name {server[:80]!r} cannot be used with the token gateway: use 1-63 "
            "letters, digits and hyphens, not starting or ending with a hyphen"
        )
    return key


@dataclass(frozen=True)
class BindTarget:
    role: str  # exactly as the client sent it
    server: str  # lower-case


def bind_dn(role: str, server: str) -> str:
    return f"cn={check_role_name(role)},ou={server_key(server)},dc={BASE_DC}"


def parse_bind_dn(dn: str) -> BindTarget:
    """`cn=<role>,ou=<server>,dc=keyless` (attribute names and `keyless` in any case)."""
    try:
        rdns = parse_dn(dn)
    except LDAPInvalidDnError:
        raise BindDnError(
            "the bind DN is not a valid DN; PostgreSQL should bind as "
            "cn=<role>,ou=<server>,dc=keyless (pg_hba.conf ldapprefix/ldapsuffix)"
        ) from None
    shape = [(attr.lower(), sep) for attr, _value, sep in rdns]
    if shape != [("cn", ","), ("ou", ","), ("dc", "")] or rdns[2][1].lower() != BASE_DC:
        raise BindDnError(
            "the bind DN must be cn=<role>,ou=<server>,dc=keyless; check pg_hba.conf's "
            'ldapprefix="cn=" and ldapsuffix=",ou=<server>,dc=keyless", and that the role '
            'name has no DN special characters (, + = \\ ; < > ")'
        )
    role, server = rdns[0][1], rdns[1][1]
    try:
        return BindTarget(check_role_name(role), server_key(server))
    except GatewayNameError as exc:
        raise BindDnError(str(exc)) from None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hba_line(
    server: str,
    gateway_host: str,
    gateway_port: int,
    *,
    tls: bool,
    address: str = "127.0.0.1/32",
    database: str = "all",
    user: str = "all",
) -> str:
    """The pg_hba.conf line that sends a server's password checks to the gateway.

    With `tls`, PostgreSQL connects with LDAPS (`ldapscheme=ldaps`): `gateway_host` must be a
    name in Keyless's server certificate, and PostgreSQL's libldap must trust Keyless's CA
    (`LDAPTLS_CACERT=/path/to/ca.pem` in the server's environment, or TLS_CACERT in ldap.conf).
    Clients send the token to PostgreSQL in clear unless their connection uses TLS, so outside
    loopback use `hostssl` lines on a server with `ssl=on`.
    """
    return _format_hba(server_key(server), gateway_host, gateway_port, tls, address, database, user)


def hba_template(gateway_host: str, gateway_port: int, *, tls: bool) -> str:
    """`hba_line` with a `<server>` placeholder, for what `keyless gateway serve` prints."""
    return _format_hba("<server>", gateway_host, gateway_port, tls, "127.0.0.1/32", "all", "all")


def _format_hba(
    server: str,
    gateway_host: str,
    gateway_port: int,
    tls: bool,
    address: str,
    database: str,
    user: str,
) -> str:
    connection_type = "host" if is_loopback(address.split("/", 1)[0]) else "hostssl"
    scheme = " ldapscheme=ldaps" if tls else ""
    return (
        f"{connection_type} {database} {user} {address} ldap ldapserver={gateway_host} "
        f'ldapport={gateway_port}{scheme} ldapprefix="cn=" ldapsuffix=",ou={server},dc={BASE_DC}"'
    )
