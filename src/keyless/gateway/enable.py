"""One-time enablement of a PostgreSQL server for token logins (`keyless postgres server
register`), with an administrator connection the operator already has.

It makes the `keyless_login` group and the Keyless admin role (a member of it, with CREATEROLE
and CREATEDB, and a member of the administrator connection's own role so it can grant on what
that role owns), then puts a marked block of pg_hba.conf lines at the top of the file, reloads,
and reads `pg_hba_file_rules` back: if PostgreSQL reports an error in the file, the old file is
restored and reloaded. Lines at the top win, so members of `keyless_login` always log in with a
token, and nothing else about the server's authentication changes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from keyless.gateway.names import hba_line, is_loopback
from keyless.gateway.pgadmin import (
    LOGIN_GROUP,
    PgAdminError,
    create_login_role,
    ensure_login_group,
    first_line,
    role_exists,
    server_version,
)

LOOPBACK_CLIENTS = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class Gateway:
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class Enablement:
    admin_role: str
    hba_file: str
    hba_lines: list[str]
    version: str
    hba_written: bool


def hba_block(
    server: str, gateway: Gateway, clients: tuple[str, ...] = LOOPBACK_CLIENTS
) -> list[str]:
    lines = [
        hba_line(
            server,
            gateway.host,
            gateway.port,
            tls=gateway.tls,
            address=client,
            user=f"+{LOGIN_GROUP}",
        )
        for client in clients
    ]
    return [_begin(server), *lines, _end(server)]


def _begin(server: str) -> str:
    return f"# BEGIN keyless server={server} (written by `keyless postgres server register`)"


def _end(server: str) -> str:
    return f"# END keyless server={server}"


def with_block(text: str, server: str, block: list[str]) -> str:
    """`text` with this server's block first (an earlier block for it is replaced)."""
    pattern = re.compile(
        rf"^# BEGIN keyless server={re.escape(server)} .*?^# END keyless server="
        rf"{re.escape(server)}\n",
        re.S | re.M,
    )
    rest = pattern.sub("", text)
    return "\n".join(block) + "\n" + rest


def without_block(text: str, server: str) -> str:
    return with_block(text, server, []).lstrip("\n")


def _write_preserving(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its owner and mode (PostgreSQL must still read it)."""
    stat = path.stat()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keyless-hba-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, stat.st_mode & 0o777)
        if os.geteuid() == 0:
            os.chown(tmp, stat.st_uid, stat.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hba_errors(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    rows = conn.execute(
        "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
    ).fetchall()
    return [f"line {row[0]}: {row[1]}" for row in rows]


def install_hba(conn: psycopg.Connection[tuple[object, ...]], server: str, block: list[str]) -> str:
    """Write the block into the server's own pg_hba.conf and reload; returns the file's path."""
    row = conn.execute("SHOW hba_file").fetchone()
    assert row is not None
    path = Path(str(row[0]))
    try:
        original = path.read_text()
    except OSError as exc:
        raise PgAdminError(
            f"cannot read the server's pg_hba.conf at {path} ({exc.strerror}): run this on the "
            "PostgreSQL machine as a user who may edit it, or use --print-only and add the "
            "lines yourself"
        ) from None
    backup = path.with_name(path.name + ".keyless-backup")
    shutil.copy2(path, backup)
    try:
        _write_preserving(path, with_block(original, server, block))
        conn.execute("SELECT pg_reload_conf()")
        errors = _hba_errors(conn)
        if errors:
            raise PgAdminError(
                "PostgreSQL rejected the new pg_hba.conf (" + "; ".join(errors) + "); the "
                "previous file is back in place"
            )
    except BaseException:
        _write_preserving(path, original)
        conn.execute("SELECT pg_reload_conf()")
        raise
    finally:
        backup.unlink(missing_ok=True)
    return str(path)


def remove_hba(conn: psycopg.Connection[tuple[object, ...]], server: str) -> None:
    row = conn.execute("SHOW hba_file").fetchone()
    assert row is not None
    path = Path(str(row[0]))
    text = path.read_text()
    updated = without_block(text, server)
    if updated != text:
        _write_preserving(path, updated)
        conn.execute("SELECT pg_reload_conf()")


def enable(
    admin_url: str,
    server: str,
    admin_role: str,
    gateway: Gateway,
    *,
    print_only: bool = False,
    clients: tuple[str, ...] = LOOPBACK_CLIENTS,
) -> Enablement:
    """Make `admin_role` and the login group, and (unless `print_only`) install the lines."""
    if not gateway.tls and not is_loopback(gateway.host):
        raise PgAdminError(
            "a gateway on another machine must use LDAPS (`keyless gateway serve --tls`); "
            "plain LDAP would send tokens in clear"
        )
    block = hba_block(server, gateway, clients)
    try:
        conn = psycopg.connect(admin_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise PgAdminError(
            "cannot connect with the administrator connection: "
            f"{first_line(exc)}"
            ". Give a libpq URL that works with psql, e.g. postgresql://postgres@/postgres?"
            "host=/var/run/postgresql"
        ) from None
    with conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert row is not None
        operator, superuser, createrole = str(row[0]), bool(row[1]), bool(row[2])
        if not (superuser or createrole):
            raise PgAdminError(
                f"the administrator connection's role {operator!r} can neither create roles "
                "nor grant: use a superuser connection (or one with CREATEROLE)"
            )
        version = server_version(conn)
        ensure_login_group(conn)
        existed = role_exists(conn, admin_role)
        create_login_role(conn, admin_role, admin=True)
        try:
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(LOGIN_GROUP), sql.Identifier(admin_role)
                )
            )
            if operator != admin_role:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.Identifier(operator), sql.Identifier(admin_role)
                    )
                )
            hba_file = ""
            if not print_only:
                hba_file = install_hba(conn, server, block)
        except BaseException:
            if not existed:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin_role)))
            raise
    return Enablement(admin_role, hba_file, block, version, not print_only)
