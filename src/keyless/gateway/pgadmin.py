"""The SQL that Keyless runs as a PostgreSQL server's administrator: login roles for principals,
their grants in one database, and taking them away again.

Every role Keyless makes for a principal is a member of `keyless_login`, and the pg_hba.conf
lines Keyless writes send exactly the members of that group to the gateway (`+keyless_login`),
so the server's other roles keep whatever authentication they had. Identifiers always go
through `psycopg.sql.Identifier`; nothing is pasted into SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from keyless.base.errors import KeylessError

LOGIN_GROUP = "keyless_login"
OwnedObjects = Literal["reassign", "drop"]


class PgAdminError(KeylessError, RuntimeError):
    """A PostgreSQL administration step failed; the message says which and how to fix it."""


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    sslmode: str = "prefer"

    @classmethod
    def of(cls, server: dict[str, Any]) -> ServerAddress:
        """Where a `postgresServers` resource (as the API returns it) listens."""
        props = server["properties"]
        return cls(str(props["host"]), int(props["port"]), str(props.get("sslMode", "prefer")))

    def connect(
        self, user: str, password: str | None, dbname: str = "postgres", timeout: int = 10
    ) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection (role and database DDL cannot run in a transaction block).
        The password (a token) is handed to libpq only, never formatted into a message."""
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=dbname,
                user=user,
                password=password,
                sslmode=self.sslmode,
                connect_timeout=timeout,
                autocommit=True,
                application_name="keyless",
            )
        except psycopg.OperationalError as exc:
            raise PgAdminError(
                f"cannot log in to PostgreSQL at {self.host}:{self.port} as {user!r} "
                f"(database {dbname!r}): {first_line(exc)}"
            ) from None


def first_line(exc: BaseException) -> str:
    """The last line of a driver error (libpq's reason), never the connection parameters."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def role_exists(conn: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return row is not None


def is_keyless_role(conn: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    row = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (role, LOGIN_GROUP)).fetchone()
    return bool(row and row[0])


def ensure_login_group(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """The group whose members authenticate through the gateway; True if it was created."""
    if role_exists(conn, LOGIN_GROUP):
        return False
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(LOGIN_GROUP)))
    return True


def create_login_role(
    conn: psycopg.Connection[tuple[object, ...]], role: str, *, admin: bool = False
) -> bool:
    """A role that logs in with a token. True if created; False if Keyless made it before.
    A role that exists but is not Keyless's is refused: taking it over would change how its
    owner logs in."""
    if role_exists(conn, role):
        if is_keyless_role(conn, role):
            return False
        raise PgAdminError(
            f"a role named {role!r} already exists on the server and is not managed by Keyless "
            f"(not a member of {LOGIN_GROUP}); choose another role name, or drop that role first"
        )
    options = sql.SQL(" CREATEROLE CREATEDB") if admin else sql.SQL("")
    try:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN{} IN ROLE {}").format(
                _ident(role), options, _ident(LOGIN_GROUP)
            )
        )
    except psycopg.Error as exc:
        raise PgAdminError(f"cannot create role {role!r}: {first_line(exc)}") from None
    return True


def database_exists(conn: psycopg.Connection[tuple[object, ...]], database: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    return row is not None


def database_owner(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return str(row[0])


def grant_database(conn: psycopg.Connection[tuple[object, ...]], role: str) -> None:
    """In the connection's database (the target database, not `postgres`): connect, use and
    create in schema `public`, all privileges on its tables and sequences, now and for the ones
    the administrator or the database owner create later. Tables and sequences that another
    connection's role made are that app's own and are left out: only their owner could grant
    on them, and a grant made in the owner's name is one the administrator cannot revoke."""
    database = conn.execute("SELECT current_database()").fetchone()
    assert database is not None
    owner = database_owner(conn)
    target = _ident(role)
    statements = [
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
            _ident(str(database[0])), target
        ),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(target),
    ]
    tables, sequences = _shared_relations(conn)
    for kind, names in (("TABLE", tables), ("SEQUENCE", sequences)):
        if names:
            statements.append(
                sql.SQL("GRANT ALL PRIVILEGES ON {} {} TO {}").format(
                    sql.SQL(kind),
                    sql.SQL(", ").join(sql.Identifier("public", name) for name in names),
                    target,
                )
            )
    for creator in _default_privilege_creators(conn, owner):
        for kind in ("TABLES", "SEQUENCES"):
            statements.append(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                    "GRANT ALL PRIVILEGES ON {} TO {}"
                ).format(_ident(creator), sql.SQL(kind), target)
            )
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise PgAdminError(
            f"cannot grant privileges to {role!r} in database {database[0]!r}: {first_line(exc)}"
        ) from None


def _shared_relations(
    conn: psycopg.Connection[tuple[object, ...]],
) -> tuple[list[str], list[str]]:
    """(tables, sequences) in schema public that no connection's role owns; "tables" as in
    GRANT ... ON ALL TABLES: tables, partitioned tables, views, materialized and foreign."""
    # A connection's role: a member of the login group without CREATEROLE (the Keyless admin
    # role has it).
    rows = conn.execute(
        """
        SELECT c.relname, c.relkind = 'S' FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND NOT EXISTS (
               SELECT 1 FROM pg_auth_members m
                 JOIN pg_roles g ON g.oid = m.roleid
                 JOIN pg_roles o ON o.oid = m.member
                WHERE m.member = c.relowner AND g.rolname = %s AND NOT o.rolcreaterole)
         ORDER BY 1
        """,
        (LOGIN_GROUP,),
    ).fetchall()
    tables = [str(r[0]) for r in rows if not r[1]]
    sequences = [str(r[0]) for r in rows if r[1]]
    return tables, sequences


def _default_privilege_creators(
    conn: psycopg.Connection[tuple[object, ...]], owner: str
) -> list[str]:
    row = conn.execute(
        "SELECT current_user, pg_has_role(current_user, %s, 'USAGE')", (owner,)
    ).fetchone()
    assert row is not None
    creators = [str(row[0])]
    if row[1] and owner != row[0]:
        creators.append(owner)
    return creators


def release_database(
    conn: psycopg.Connection[tuple[object, ...]], role: str, owned: OwnedObjects
) -> None:
    """Undo `grant_database` in the connection's database: the role's objects go to the
    database owner (`reassign`) or are dropped (`drop`), then every privilege and default
    privilege naming the role is revoked (DROP OWNED does both in one statement)."""
    if not role_exists(conn, role):
        return
    owner = database_owner(conn)
    target = _ident(role)
    try:
        with conn.transaction():
            # REASSIGN and DROP OWNED need the privileges of the role itself.
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(target))
            if owned == "reassign":
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(target, _ident(owner)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(target))
            conn.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(target))
    except psycopg.Error as exc:
        raise PgAdminError(
            f"cannot release what role {role!r} owns and was granted: {first_line(exc)}"
        ) from None


def drop_role(conn: psycopg.Connection[tuple[object, ...]], role: str) -> bool:
    """DROP ROLE; PostgreSQL refuses while anything still depends on it, and says what."""
    if not role_exists(conn, role):
        return False
    try:
        conn.execute(sql.SQL("DROP ROLE {}").format(_ident(role)))
    except psycopg.Error as exc:
        raise PgAdminError(
            f"cannot drop role {role!r}: {first_line(exc)}. Objects in other databases may "
            "still belong to it: reassign or drop them there (REASSIGN OWNED / DROP OWNED), "
            "then run this again"
        ) from None
    return True


def create_database(conn: psycopg.Connection[tuple[object, ...]], database: str) -> None:
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(_ident(database)))
    except psycopg.Error as exc:
        raise PgAdminError(f"cannot create database {database!r}: {first_line(exc)}") from None


def server_version(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else ""
