"""`keyless postgres`: PostgreSQL servers whose logins take Keyless tokens, their databases, and
the database roles of principals (Azure's `pgaadauth_create_principal`, in spirit).

`server register` is the one step that uses a PostgreSQL administrator connection the operator
already has; it makes a Keyless admin role for the signed-in user. Every later command logs in
as that role with the user's own token through the gateway: no PostgreSQL password is asked
for, stored or printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, iso_times, note
from keyless.cli.resources import (
    GroupOption,
    NameOption,
    SubscriptionOption,
    resource_path,
    subscription_of,
    token_of,
)
from keyless.cli.session import ApiClient, CliError, _running_server, resource_token

if TYPE_CHECKING:
    from keyless.gateway.pgadmin import OwnedObjects

postgres_app = typer.Typer(
    help="PostgreSQL servers that accept Keyless tokens as passwords.", no_args_is_help=True
)
server_app = typer.Typer(help="Register, create and manage servers.", no_args_is_help=True)
db_app = typer.Typer(help="Databases on a server.", no_args_is_help=True)
principal_app = typer.Typer(
    help="Database roles for principals (users, groups, identities) by object ID.",
    no_args_is_help=True,
)
postgres_app.add_typer(server_app, name="server")
postgres_app.add_typer(db_app, name="db")
postgres_app.add_typer(principal_app, name="principal")

SERVER_TYPE = "Keyless.Database/postgresServers"
POSTGRES_SCOPE = "api://keyless/postgres/.default"
ServerOption = Annotated[str, typer.Option("--server", "-s", help="Server name.")]
OwnedObjectsOption = Annotated[
    str,
    typer.Option(
        help="What happens to objects the role owns: reassign (to the database's owner) or drop."
    ),
]


def owned_choice(value: str) -> OwnedObjects:
    if value == "reassign":
        return "reassign"
    if value == "drop":
        return "drop"
    fail("--owned-objects must be reassign or drop")


def _server_path(data_dir: Any, subscription: str | None, group: str, name: str) -> str:
    return resource_path(subscription_of(data_dir, subscription), group, SERVER_TYPE, name)


def admin_token(data_dir: Any) -> Any:
    """scope -> the signed-in user's token (what the Keyless admin role logs in with)."""
    paths = paths_for(data_dir)

    def get(scope: str) -> str:
        try:
            return str(resource_token(paths, scope)[0]["accessToken"])
        except CliError as exc:
            fail(str(exc))

    return get


def gateway_of(data_dir: Any, host: str | None, port: int | None, tls: bool) -> Any:
    """The gateway PostgreSQL should ask: given, or the one the local `keyless serve` runs."""
    from keyless.authority.config import ServerConfig
    from keyless.gateway.enable import Gateway

    paths = paths_for(data_dir)
    state = _running_server(paths) or {}
    running = state.get("gateway") or {}
    port = port or running.get("port") or ServerConfig.load_or_default(paths).gateway_port
    if not port:
        fail(
            "this Keyless runs no token gateway (gateway port 0); give --gateway-port, or "
            "`keyless init --gateway-port 8389` and restart `keyless serve`"
        )
    return Gateway(host or str(running.get("host") or "127.0.0.1"), int(port), tls)


def _admin_session(data_dir: Any, server: dict[str, Any], database: str = "postgres") -> Any:
    from keyless.gateway.pgadmin import PgAdminError, ServerAddress

    props = server["properties"]
    admin = props.get("administratorLogin")
    if not admin:
        fail(f"server {server['name']!r} is not enabled: run `keyless postgres server register`")
    try:
        return ServerAddress.of(server).connect(
            str(admin), admin_token(data_dir)(POSTGRES_SCOPE), database
        )
    except PgAdminError as exc:
        fail(
            f"{exc}. Is `keyless serve` (with its token gateway) running, and are you signed in "
            "as the server's Keyless administrator?"
        )


def _enable(
    data_dir: Any,
    path: str,
    name: str,
    admin_url: str,
    body: dict[str, Any],
    gateway: Any,
    print_only: bool,
    on_failure: Any = None,
) -> dict[str, Any]:
    """register's steps, shared with create: resource, roles and pg_hba, mapping, check."""
    from keyless.gateway.enable import enable
    from keyless.gateway.pgadmin import PgAdminError, ServerAddress

    user = token_of(data_dir).get("user") or {}
    if user.get("type") != "user":
        fail("sign in as a user (`keyless login`): the server's Keyless administrator is you")
    admin_role = str(user["name"])
    created = call(data_dir, "PUT", path, body)
    try:
        result = enable(admin_url, name, admin_role, gateway, print_only=print_only)
        call(
            data_dir,
            "PUT",
            f"{path}/roleMappings/{admin_role}",
            {"properties": {"principalId": user["id"]}},
        )
        props = {
            **created["properties"],
            "administratorLogin": admin_role,
            "administratorPrincipalId": user["id"],
            "administratorPrincipalName": admin_role,
            "version": result.version,
            "gateway": {
                "host": gateway.host,
                "port": gateway.port,
                "scheme": "ldaps" if gateway.tls else "ldap",
            },
        }
        computed = ("fullyQualifiedDomainName", "state", "provisioningState")
        props = {k: v for k, v in props.items() if k not in computed}
        server = call(data_dir, "PATCH", path, {"properties": props})
    except (PgAdminError, SystemExit) as exc:
        ApiClient(paths_for(data_dir)).request("DELETE", path)
        if on_failure is not None:
            on_failure()
        fail(f"enabling {name} failed: {exc}; the server resource was removed again")
    if not print_only:
        try:
            with ServerAddress.of(server).connect(
                admin_role, admin_token(data_dir)(POSTGRES_SCOPE)
            ) as conn:
                conn.execute("SELECT 1")
        except PgAdminError as exc:
            fail(
                f"the server is enabled, but logging in as {admin_role!r} with your token "
                f"failed: {exc}. Is `keyless serve` with its gateway running?"
            )
        note(f"logged in to {name} as {admin_role!r} with a token: enabled")
    return {"server": server, "hbaFile": result.hba_file, "hbaLines": result.hba_lines}


@server_app.command("register")
def server_register(
    group: GroupOption,
    name: NameOption,
    host: Annotated[str, typer.Option(help="The server's DNS name or IP address.")],
    admin_connection: Annotated[
        str,
        typer.Option(
            help="A libpq URL that logs in as a PostgreSQL superuser (or CREATEROLE role), "
            "e.g. postgresql://postgres@/postgres?host=/var/run/postgresql. Used once."
        ),
    ],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5432,
    ssl_mode: Annotated[str, typer.Option(help="sslmode clients use.")] = "prefer",
    print_only: Annotated[
        bool, typer.Option("--print-only", help="Print the pg_hba.conf lines, do not write them.")
    ] = False,
    gateway_host: Annotated[str | None, typer.Option(help="Gateway address for PG.")] = None,
    gateway_port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    gateway_tls: Annotated[bool, typer.Option(help="The gateway speaks LDAPS.")] = False,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Enable an existing server for token logins (once, with an administrator connection)."""
    path = _server_path(data_dir, subscription, group, name)
    gateway = gateway_of(data_dir, gateway_host, gateway_port, gateway_tls)
    body = {"properties": {"host": host, "port": port, "sslMode": ssl_mode}}
    result = _enable(data_dir, path, name, admin_connection, body, gateway, print_only)
    if print_only:
        note("add these lines at the top of pg_hba.conf, then reload PostgreSQL:")
        for line in result["hbaLines"]:
            print(line)
        return
    emit(result)


@server_app.command("create")
def server_create(
    group: GroupOption,
    name: NameOption,
    port: Annotated[int | None, typer.Option(help="TCP port; default: a free one.")] = None,
    database: Annotated[
        list[str] | None, typer.Option(help="A database to create (repeatable).")
    ] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create and start a local PostgreSQL cluster from the system's binaries, enabled."""
    from keyless.gateway.cluster import ClusterError, cluster_directory, initialise
    from keyless.gateway.pgadmin import PgAdminError, create_database

    path = _server_path(data_dir, subscription, group, name)
    paths = paths_for(data_dir)
    gateway = gateway_of(data_dir, None, None, False)
    directory = cluster_directory(paths.root, name.lower())
    note(f"initialising a PostgreSQL cluster in {directory}")
    tls = _cluster_certificate(paths)
    try:
        cluster = initialise(directory, port, tls)
    except ClusterError as exc:
        fail(str(exc))
    managed = {
        "dataDirectory": str(cluster.data),
        "socketDirectory": str(cluster.socket_dir),
        "superuser": cluster.superuser,
        "logFile": str(cluster.log_file),
    }
    if cluster.run_as:
        managed["runAs"] = cluster.run_as
    body = {
        "properties": {
            "host": "127.0.0.1",
            "port": cluster.port,
            # A token is a credential: with TLS, clients insist on it (Azure writes require).
            "sslMode": "require" if tls is not None else "prefer",
            "managed": managed,
        }
    }
    result = _enable(
        data_dir, path, name, cluster.admin_url(), body, gateway, False, cluster.remove
    )
    for db in database or []:
        with _admin_session(data_dir, result["server"]) as conn:
            try:
                create_database(conn, db)
            except PgAdminError as exc:
                fail(str(exc))
        note(f"created database {db!r}")
    emit(result["server"])


def _cluster_certificate(paths: Any) -> tuple[bytes, bytes] | None:
    """A certificate from the Keyless CA for a cluster on 127.0.0.1, or None (with a warning)
    when this data directory cannot issue one (no CA key or master key here)."""
    from keyless.authority.masterkey import MasterKey, MasterKeyError
    from keyless.authority.tls import TlsFiles, issue_service_certificate

    try:
        master = MasterKey.load(paths.master_key)
        return issue_service_certificate(
            TlsFiles.in_dir(paths.root), master, ["127.0.0.1", "localhost"]
        )
    except (OSError, MasterKeyError, ValueError, TypeError) as exc:
        note(
            f"warning: cannot issue a TLS certificate for the cluster ({exc}); it serves no TLS "
            "and connections are written with sslmode=prefer"
        )
        return None


def _cluster_of(server: dict[str, Any]) -> Any:
    from keyless.gateway.cluster import Cluster

    managed = server["properties"].get("managed")
    if not managed:
        fail(
            f"server {server['name']!r} was registered, not created by Keyless: start and stop "
            "it the way it is run"
        )
    directory = Path(managed["dataDirectory"]).parent
    return Cluster(
        directory, int(server["properties"]["port"]), managed["superuser"], managed.get("runAs")
    )


def _run_cluster(
    data_dir: Any, subscription: str | None, group: str, name: str, action: str
) -> dict[str, Any]:
    """`start` or `stop` the local cluster behind a server that `server create` made."""
    from keyless.gateway.cluster import ClusterError

    server: dict[str, Any] = call(
        data_dir, "GET", _server_path(data_dir, subscription, group, name)
    )
    try:
        getattr(_cluster_of(server), action)()
    except ClusterError as exc:
        fail(str(exc))
    return server


@server_app.command("start")
def server_start(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Start a server that `server create` made."""
    server = _run_cluster(data_dir, subscription, group, name, "start")
    note(f"{name} is running on 127.0.0.1:{server['properties']['port']}")


@server_app.command("stop")
def server_stop(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop a server that `server create` made."""
    _run_cluster(data_dir, subscription, group, name, "stop")
    note(f"{name} stopped")


@server_app.command("list")
def server_list(
    group: Annotated[str | None, typer.Option("--resource-group", "-g")] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Servers you may read."""
    sub = subscription_of(data_dir, subscription)
    if group:
        path = f"/subscriptions/{sub}/resourceGroups/{group}/providers/{SERVER_TYPE}"
        rows = call(data_dir, "GET", path)["value"]
    else:
        params = {"resourceType": SERVER_TYPE}
        rows = call(data_dir, "GET", f"/subscriptions/{sub}/resources", params=params)["value"]
    emit(rows, output, ["name", "properties.host", "properties.port", "properties.state"])


@server_app.command("show")
def server_show(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """One server."""
    emit(call(data_dir, "GET", _server_path(data_dir, subscription, group, name)))


@server_app.command("delete")
def server_delete(
    group: GroupOption,
    name: NameOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Forget a server (its role mappings go, so its token logins stop); a server that
    `server create` made is stopped and its files removed."""
    path = _server_path(data_dir, subscription, group, name)
    server = call(data_dir, "GET", path)
    managed = server["properties"].get("managed")
    if managed and not yes and not typer.confirm(f"delete {name} and all its data?"):
        fail("nothing deleted")
    call(data_dir, "DELETE", path)
    if managed:
        _cluster_of(server).remove()
        note(f"stopped {name} and removed {Path(managed['dataDirectory']).parent}")
    else:
        note(
            f"Keyless forgot {name}; its pg_hba.conf still has Keyless's lines (between "
            f"'# BEGIN keyless server={name.lower()}' and '# END'): remove them by hand"
        )


# ----------------------------------------------------------------------------------- db


@db_app.command("create")
def db_create(
    group: GroupOption,
    server: ServerOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a database, as the server's Keyless administrator (your token)."""
    from keyless.gateway.pgadmin import PgAdminError, create_database, database_exists

    record = call(data_dir, "GET", _server_path(data_dir, subscription, group, server))
    with _admin_session(data_dir, record) as conn:
        if database_exists(conn, name):
            fail(f"database {name!r} already exists on {server}")
        try:
            create_database(conn, name)
        except PgAdminError as exc:
            fail(str(exc))
    emit({"server": server, "name": name, "created": True})


@db_app.command("list")
def db_list(
    group: GroupOption,
    server: ServerOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The server's databases."""
    record = call(data_dir, "GET", _server_path(data_dir, subscription, group, server))
    with _admin_session(data_dir, record) as conn:
        rows = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
            "WHERE NOT datistemplate ORDER BY datname"
        ).fetchall()
    emit([{"name": r[0], "owner": r[1]} for r in rows], output, ["name", "owner"])


# ---------------------------------------------------------------------------- principals


@principal_app.command("create")
def principal_create(
    group: GroupOption,
    server: ServerOption,
    role: Annotated[str, typer.Option("--name", "-n", help="The database role to create.")],
    object_id: Annotated[
        str, typer.Option(help="Object ID of the user, group, service principal or identity.")
    ],
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a login role that the principal (or a member of the group) uses with a token."""
    from keyless.gateway.pgadmin import PgAdminError, create_login_role

    path = _server_path(data_dir, subscription, group, server)
    record = call(data_dir, "GET", path)
    mapping = call(
        data_dir, "PUT", f"{path}/roleMappings/{role}", {"properties": {"principalId": object_id}}
    )
    with _admin_session(data_dir, record) as conn:
        try:
            created = create_login_role(conn, role)
        except PgAdminError as exc:
            ApiClient(paths_for(data_dir)).request("DELETE", f"{path}/roleMappings/{role}")
            fail(f"{exc}; the mapping was removed again")
        if not created:
            note(f"role {role!r} already existed (made by Keyless); mapping kept")
    emit({**mapping["properties"], "roleCreated": created})


@principal_app.command("list")
def principal_list(
    group: GroupOption,
    server: ServerOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Roles mapped to principals, and whether each still exists on the server."""
    from keyless.gateway.pgadmin import role_exists

    path = _server_path(data_dir, subscription, group, server)
    record = call(data_dir, "GET", path)
    mappings = call(data_dir, "GET", f"{path}/roleMappings")["value"]
    with _admin_session(data_dir, record) as conn:
        rows = [
            {**m["properties"], "roleExists": role_exists(conn, m["properties"]["role"])}
            for m in mappings
        ]
    emit(
        iso_times(rows, "createdAt"), output, ["role", "principalId", "principalType", "roleExists"]
    )


@principal_app.command("drop")
def principal_drop(
    group: GroupOption,
    server: ServerOption,
    role: Annotated[str, typer.Option("--name", "-n", help="The database role.")],
    owned_objects: OwnedObjectsOption = "reassign",
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Drop the role (in every database, its objects reassigned or dropped) and its mapping."""
    from keyless.gateway.pgadmin import PgAdminError, drop_role, release_database

    owned = owned_choice(owned_objects)
    path = _server_path(data_dir, subscription, group, server)
    record = call(data_dir, "GET", path)
    with _admin_session(data_dir, record) as conn:
        databases = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate"
            ).fetchall()
        ]
        try:
            for db in databases:
                with _admin_session(data_dir, record, db) as db_conn:
                    release_database(db_conn, role, owned)
            dropped = drop_role(conn, role)
        except PgAdminError as exc:
            fail(str(exc))
    ApiClient(paths_for(data_dir)).request("DELETE", f"{path}/roleMappings/{role}")
    emit({"role": role, "dropped": dropped, "mappingRemoved": True})
