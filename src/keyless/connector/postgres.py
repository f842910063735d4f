"""The PostgreSQL target: a login role for the identity, its grants in the target database,
the role -> identity mapping the gateway checks, and the keys that say how to connect.

Administration runs as the server's Keyless admin role with the signed-in user's token (no
PostgreSQL password anywhere). Grants are made in the target database itself (Azure's tool
grants in the wrong one), and `revert` gives back exactly what `provision` took.
"""

from __future__ import annotations

import socket
from typing import Any

import psycopg

from keyless.base.scopes import parse_scope
from keyless.connector.keys import postgres_values
from keyless.connector.plan import Plan
from keyless.connector.target import (
    Check,
    ProvisionContext,
    ValidationContext,
    configuration_check,
    find_target,
    register,
    skipped,
)
from keyless.gateway.pgadmin import (
    LOGIN_GROUP,
    OwnedObjects,
    PgAdminError,
    ServerAddress,
    create_login_role,
    database_exists,
    drop_role,
    first_line,
    grant_database,
    is_keyless_role,
    release_database,
    role_exists,
)

POSTGRES_AUDIENCE = "api://keyless/postgres"
POSTGRES_SCOPE = POSTGRES_AUDIENCE + "/.default"
SERVER_TYPE = "Keyless.Database/postgresServers"


def default_role(connection: str) -> str:
    """Azure's Service Connector names the role `aad_<connection>`; so does Keyless."""
    return f"aad_{connection}"[:63]


def admin_session(
    ctx: ProvisionContext, server: dict[str, Any], database: str = "postgres"
) -> psycopg.Connection[tuple[object, ...]]:
    admin = server["properties"].get("administratorLogin")
    if not admin:
        raise PgAdminError(
            f"server {server['name']!r} is not enabled for Keyless: run `keyless postgres "
            "server register` (or create it with `keyless postgres server create`)"
        )
    conn = ServerAddress.of(server).connect(str(admin), ctx.admin_token(POSTGRES_SCOPE), database)
    ctx.cleanup.append(conn.close)
    return conn


class PostgresTarget:
    kind = "postgres"
    key_target = "POSTGRESQL"

    def provision(self, ctx: ProvisionContext, plan: Plan) -> dict[str, Any]:
        database = str(ctx.options["database"])
        role = str(ctx.options.get("role") or default_role(ctx.connection))
        given = str(ctx.options["server"])
        server = plan.step(
            f"find PostgreSQL server {given!r}",
            lambda: find_target(
                ctx, SERVER_TYPE, given, "PostgreSQL server", "keyless postgres server list"
            ),
        )
        mapping_path = f"{server['id']}/roleMappings/{role}"
        mode = str(server["properties"].get("sslMode", "prefer"))
        if mode in ("disable", "allow", "prefer"):
            ctx.say(
                f"warning: server {server['name']} is registered with sslMode {mode}: the app's "
                "token may cross the network unencrypted, and a token is a credential until it "
                "expires; serve TLS and register the server again with --ssl-mode require (or "
                "verify-full)"
            )
        admin = plan.step(
            f"log in to {server['name']} as its Keyless administrator",
            lambda: admin_session(ctx, server),
        )

        def check_database() -> None:
            if not database_exists(admin, database):
                raise PgAdminError(
                    f"database {database!r} does not exist on server {server['name']!r}; create "
                    "it first (`keyless postgres db create -g "
                    f"{parse_scope(server['id']).resource_group} --server {server['name']} "
                    f"--name {database}`)"
                )

        plan.step(f"find database {database!r}", check_database)

        def free_role() -> str | None:
            owner = _mapping(ctx, mapping_path)
            if owner is not None and owner != ctx.identity.principal_id:
                raise PgAdminError(
                    f"role {role!r} on server {server['name']!r} already belongs to another "
                    "principal; give this connection another name (--connection) or --role"
                )
            return owner

        existing = plan.step(f"check that role {role!r} is free", free_role)
        plan.step(
            f"let {ctx.identity.auth_type} {ctx.identity.client_id or ctx.identity.principal_id} "
            f"log in as role {role!r}",
            lambda: ctx.api.call(
                "PUT", mapping_path, {"properties": {"principalId": ctx.identity.principal_id}}
            ),
        )
        if existing is None:
            plan.on_undo(
                f"removed the mapping of role {role!r}",
                lambda: ctx.api.call("DELETE", mapping_path),
            )
        created = plan.step(
            f"create role {role!r} (member of {LOGIN_GROUP})",
            lambda: create_login_role(admin, role),
        )
        if created:
            plan.on_undo(f"dropped role {role!r}", lambda: drop_role(admin, role))
        target_db = plan.step(
            f"open database {database!r}", lambda: admin_session(ctx, server, database)
        )
        plan.step(
            f"grant {role!r} its privileges in database {database!r} (schema public, tables and "
            "sequences, now and future)",
            lambda: grant_database(target_db, role),
        )
        if created:
            # Only for a role made here: DROP OWNED on a role that existed (another connection
            # of this identity) would drop that app's tables and revoke its grants.
            plan.on_undo(
                f"revoked the grants of {role!r} in {database!r}",
                lambda: release_database(target_db, role, "drop"),
            )
        ctx.options["_created_role"] = created
        return {"type": self.kind, "id": server["id"], "database": database, "role": role}

    def configuration(self, ctx: ProvisionContext, target: dict[str, Any]) -> dict[str, str]:
        server = ctx.api.call("GET", str(target["id"]))
        props = server["properties"]
        return postgres_values(
            ctx.client_type,
            str(props["host"]),
            int(props["port"]),
            str(target["database"]),
            str(target["role"]),
            str(props.get("sslMode", "prefer")),
        )

    def revert(
        self, ctx: ProvisionContext, connection: dict[str, Any], options: dict[str, Any]
    ) -> list[str]:
        target = connection["targetService"]
        role, database = str(target["role"]), str(target["database"])
        owned: OwnedObjects = options.get("owned_objects", "reassign")
        done: list[str] = []
        try:
            server = ctx.api.call("GET", str(target["id"]))
        except Exception:  # the server is gone: its mappings went with it, its roles with it
            return [f"server {target['id']} no longer exists; nothing to remove there"]
        admin = admin_session(ctx, server)
        if role_exists(admin, role):
            if database_exists(admin, database):
                release_database(admin_session(ctx, server, database), role, owned)
                verb = "reassigned to the database owner" if owned == "reassign" else "dropped"
                done.append(f"objects owned by {role!r} in {database!r} {verb}; grants revoked")
            if connection.get("createdResources", {}).get("role", True):
                drop_role(admin, role)
                done.append(f"role {role!r} dropped")
        else:
            done.append(f"role {role!r} was already gone")
        mapping_path = f"{server['id']}/roleMappings/{role}"
        if _mapping(ctx, mapping_path) is not None:
            ctx.api.call("DELETE", mapping_path)
            done.append(f"mapping of role {role!r} removed")
        return done

    def validate(self, ctx: ValidationContext) -> list[Check]:
        return _validate(ctx)


def diagnose(ctx: ProvisionContext, target: dict[str, Any]) -> str | None:
    """Why the connection's role cannot log in, as the server's Keyless administrator sees
    it (what `validate`, which runs without the administrator's rights, cannot see), or None
    if the role, its group and its database are in place."""
    role, database = str(target["role"]), str(target["database"])
    server = ctx.api.call("GET", str(target["id"]))
    admin = admin_session(ctx, server)
    where = f"on server {server['name']}"
    if not role_exists(admin, role):
        return f"role {role} does not exist {where}"
    if not is_keyless_role(admin, role):
        return f"role {role} {where} is no longer a member of {LOGIN_GROUP}"
    if not database_exists(admin, database):
        return f"database {database} does not exist {where}"
    return None


def _mapping(ctx: ProvisionContext, path: str) -> str | None:
    try:
        found = ctx.api.call("GET", path)
    except Exception as exc:
        if "HTTP 404" in str(exc):
            return None
        raise
    return str(found["properties"]["principalId"])


def _validate(ctx: ValidationContext) -> list[Check]:
    target = ctx.connection["targetService"]
    role, database = str(target["role"]), str(target["database"])
    checks = [
        configuration_check(
            ctx,
            "delete the connection and create it again, or set the keys back "
            "(`keyless app connection list-configuration` shows them)",
        )
    ]
    if ctx.identity_problem is not None:
        checks.append(
            Check(
                "identity",
                False,
                ctx.identity_problem,
                "assign the identity to the app again, or delete this connection and create one "
                "for the identity the app has",
            )
        )
        return checks + skipped(
            "target reachable", "token", "login through the gateway", "role and grants"
        )
    checks.append(Check("identity", True, f"{ctx.connection['authInfo']['authType']} present"))
    if ctx.target is None:
        checks.append(
            Check(
                "target",
                False,
                f"the PostgreSQL server {target['id']} no longer exists",
                "delete this connection; register or create the server, then connect again",
            )
        )
        return checks + skipped("token", "login through the gateway", "role and grants")
    host, port = str(ctx.target["host"]), int(ctx.target["port"])
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
        checks.append(Check("target reachable", True, f"{host}:{port} accepts connections"))
    except OSError as exc:
        checks.append(
            Check(
                "target reachable",
                False,
                f"cannot connect to {host}:{port} ({exc.strerror or exc})",
                "start the server (`keyless postgres server start` for one Keyless created) and "
                "check host and port (`keyless postgres server show`)",
            )
        )
        return checks + skipped("token", "login through the gateway", "role and grants")
    try:
        token = ctx.issue_token(POSTGRES_AUDIENCE)
        checks.append(Check("token", True, f"a token for {POSTGRES_AUDIENCE} was issued"))
    except Exception as exc:
        reason = getattr(exc, "description", None) or str(exc)
        checks.append(
            Check(
                "token",
                False,
                f"no token for the identity: {reason}",
                "the identity must exist and be enabled, and the tenant must have the postgres "
                "resource API (`keyless ad api list`)",
            )
        )
        return checks + skipped("login through the gateway", "role and grants")
    principal = str(ctx.connection["authInfo"]["principalId"])
    server_name = str(target["id"]).rstrip("/").rsplit("/", 1)[-1]
    owner = ctx.role_owner(server_name, role)
    if owner != principal:
        checks.append(
            Check(
                "login through the gateway",
                False,
                f"Keyless has no mapping of role {role!r} to this identity"
                if owner is None
                else f"role {role!r} is mapped to another principal ({owner})",
                "delete this connection and create it again",
            )
        )
        return checks + skipped("role and grants")
    sslmode = str(ctx.target.get("sslMode", "prefer"))
    try:
        conn = psycopg.connect(
            host=host,
            port=port,
            dbname=database,
            user=role,
            password=token,
            sslmode=sslmode,
            connect_timeout=5,
            autocommit=True,
            application_name="keyless-validate",
        )
    except psycopg.Error as exc:
        detail = first_line(exc)
        checks.append(
            Check(
                "login through the gateway",
                False,
                f"PostgreSQL refused role {role!r} in database {database!r}: {detail}",
                f"if the role was dropped or left {LOGIN_GROUP} by hand, delete this connection "
                "and create it again; if the database is gone, create it; check that the "
                "server's pg_hba.conf still has Keyless's lines (`keyless postgres server "
                "register` writes them again)",
            )
        )
        return checks + skipped("role and grants")
    with conn:
        checks.append(
            Check("login through the gateway", True, f"logged in as {role!r} with a token")
        )
        checks.append(_grants(conn, role, database))
    return checks


def _grants(conn: psycopg.Connection[tuple[object, ...]], role: str, database: str) -> Check:
    # Tables that another connection's role (a Keyless login role without CREATEROLE, i.e. not
    # the admin) made are that app's own: no grant covers the ones it creates later.
    row = conn.execute(
        """
        SELECT has_database_privilege(current_database(), 'CONNECT, TEMPORARY'),
               has_schema_privilege('public', 'USAGE'),
               has_schema_privilege('public', 'CREATE'),
               (SELECT count(*) FROM pg_class c
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')
                   AND NOT has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                   AND NOT EXISTS (
                       SELECT 1 FROM pg_auth_members m
                         JOIN pg_roles g ON g.oid = m.roleid
                         JOIN pg_roles o ON o.oid = m.member
                        WHERE m.member = c.relowner AND g.rolname = %s AND NOT o.rolcreaterole)),
               (SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a
                 WHERE d.defaclnamespace = 'public'::regnamespace
                   AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = current_user))
        """,
        (LOGIN_GROUP,),
    ).fetchone()
    assert row is not None
    problems = []
    if not row[0]:
        problems.append(f"no CONNECT/TEMPORARY on database {database!r}")
    if not (row[1] and row[2]):
        problems.append("no USAGE and CREATE on schema public")
    if row[3]:
        problems.append(f"{row[3]} table(s) in public it cannot read and write")
    if not row[4]:
        problems.append("no default privileges for future tables")
    if problems:
        return Check(
            "role and grants",
            False,
            f"role {role!r}: " + "; ".join(problems),
            "delete this connection and create it again (it grants all of these)",
        )
    return Check("role and grants", True, f"role {role!r} has its privileges in {database!r}")


POSTGRES = register(PostgresTarget())
