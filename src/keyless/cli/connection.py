"""`keyless app connection`: Service Connector, in the shape of `az webapp connection`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, note
from keyless.cli.postgres import OwnedObjectsOption, admin_token, owned_choice
from keyless.cli.resources import (
    APP_TYPE,
    AzCommand,
    GroupOption,
    NameOption,
    SubscriptionOption,
    app_app,
    resource_path,
    subscription_of,
)
from keyless.cli.session import ApiClient, CliError

connection_app = typer.Typer(
    help="Connections from an app to the services it uses, with no secret.", no_args_is_help=True
)
create_app = typer.Typer(help="Connect the app to a service.", no_args_is_help=True)
app_app.add_typer(connection_app, name="connection")
connection_app.add_typer(create_app, name="create")

ConnectionOption = Annotated[str, typer.Option("--connection", help="The connection's name.")]
SystemIdentityOption = Annotated[
    bool, typer.Option("--system-identity", help="Use the app's system-assigned identity.")
]
UserIdentityOption = Annotated[
    str | None,
    typer.Option("--user-identity", help="client-id=ID of a user-assigned identity."),
]
ServicePrincipalOption = Annotated[
    str | None, typer.Option("--service-principal", help="client-id=ID of a service principal.")
]
ClientTypeOption = Annotated[
    str, typer.Option("--client-type", help="python, django, nodejs, go, java, dotnet or none.")
]
CustomizedKeysOption = Annotated[
    list[str] | None,
    typer.Option("--customized-keys", help="DEFAULT_KEY=NEW_KEY, several allowed."),
]


def _client_id(value: str, option: str) -> str:
    key, sep, client_id = value.partition("=")
    if not sep or key != "client-id" or not client_id:
        fail(f"{option} takes client-id=<client ID>, e.g. {option} client-id=0000...")
    return client_id


def auth_choice(system: bool, user: str | None, sp: str | None) -> Any:
    from keyless.connector.service import AuthChoice

    given = [x for x in (system, user, sp) if x]
    if len(given) != 1:
        fail(
            "choose one of --system-identity, --user-identity client-id=ID, "
            "--service-principal client-id=ID"
        )
    if system:
        return AuthChoice("systemAssignedIdentity")
    if user:
        return AuthChoice("userAssignedIdentity", _client_id(user, "--user-identity"))
    assert sp is not None
    return AuthChoice("servicePrincipal", _client_id(sp, "--service-principal"))


def _app_path(data_dir: Any, subscription: str | None, group: str, name: str) -> str:
    return resource_path(subscription_of(data_dir, subscription), group, APP_TYPE, name)


def run_create(
    data_dir: Any,
    app_path: str,
    kind: str,
    connection: str,
    client_type: str,
    auth: Any,
    options: dict[str, Any],
    customized: list[str] | None,
) -> None:
    from keyless.connector.keys import CLIENT_TYPES, KeyError_, parse_customized
    from keyless.connector.plan import StepFailed
    from keyless.connector.service import ConnectionError_, create
    from keyless.resources.types import PropertiesError

    if client_type not in CLIENT_TYPES:
        fail(f"--client-type must be one of {', '.join(CLIENT_TYPES)}")
    try:
        renames = parse_customized(customized or [])
        result = create(
            ApiClient(paths_for(data_dir)),
            app_path,
            kind,
            connection,
            client_type,
            auth,
            options,
            renames,
            admin_token(data_dir),
            say=note,
        )
    except (StepFailed, ConnectionError_, KeyError_, PropertiesError, CliError) as exc:
        fail(str(exc))
    emit(result)


@create_app.command("postgres", cls=AzCommand)
def create_postgres(
    group: GroupOption,
    name: NameOption,
    server: Annotated[str, typer.Option("--server", help="Server name (or resource ID).")],
    database: Annotated[str, typer.Option("--database", help="Target database.")],
    client_type: ClientTypeOption = "python",
    system_identity: SystemIdentityOption = False,
    user_identity: UserIdentityOption = None,
    service_principal: ServicePrincipalOption = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    role: Annotated[
        str | None, typer.Option(help="Database role to create [default: aad_<connection>].")
    ] = None,
    customized_keys: CustomizedKeysOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Connect the app to a PostgreSQL database: role, grants, mapping, settings, record."""
    auth = auth_choice(system_identity, user_identity, service_principal)
    name_ = connection or f"postgres_{name}".replace("-", "_")[:63]
    options = {"server": server, "database": database, "role": role}
    run_create(
        data_dir,
        _app_path(data_dir, subscription, group, name),
        "postgres",
        name_,
        client_type,
        auth,
        options,
        customized_keys,
    )


@create_app.command("keyvault", cls=AzCommand)
def create_keyvault(
    group: GroupOption,
    name: NameOption,
    vault: Annotated[str, typer.Option("--vault", help="Vault name (or resource ID).")],
    client_type: ClientTypeOption = "python",
    system_identity: SystemIdentityOption = False,
    user_identity: UserIdentityOption = None,
    service_principal: ServicePrincipalOption = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    customized_keys: CustomizedKeysOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Let the app's identity read the vault's secrets (Vault Secrets User) and write
    AZURE_KEYVAULT_RESOURCEENDPOINT and AZURE_KEYVAULT_SCOPE."""
    auth = auth_choice(system_identity, user_identity, service_principal)
    name_ = connection or f"keyvault_{name}".replace("-", "_")[:63]
    run_create(
        data_dir,
        _app_path(data_dir, subscription, group, name),
        "keyvault",
        name_,
        client_type,
        auth,
        {"vault": vault},
        customized_keys,
    )


@connection_app.command("list")
def connection_list(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The app's connections."""
    path = _app_path(data_dir, subscription, group, name)
    rows = call(data_dir, "GET", f"{path}/connections")["value"]
    emit(
        rows,
        output,
        ["name", "properties.targetService.type", "properties.authInfo.authType"],
    )


@connection_app.command("show")
def connection_show(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """One connection: its target, identity, client type and the keys it wrote."""
    path = _app_path(data_dir, subscription, group, name)
    emit(call(data_dir, "GET", f"{path}/connections/{connection}"))


@connection_app.command("list-configuration")
def connection_configuration(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The configuration keys the connection wrote, with their values (no secret is one)."""
    path = _app_path(data_dir, subscription, group, name)
    record = call(data_dir, "GET", f"{path}/connections/{connection}")
    settings = call(data_dir, "GET", path)["properties"].get("appSettings") or {}
    rows = [
        {"name": key, "value": settings.get(key)}
        for key in record["properties"].get("configurationKeys", [])
    ]
    emit({"configurations": rows} if output == "json" else rows, output, ["name", "value"])


@connection_app.command("validate")
def connection_validate(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "table",
) -> None:
    """Check the connection end to end; each check passes or says what to fix."""
    path = _app_path(data_dir, subscription, group, name)
    result = call(data_dir, "POST", f"{path}/connections/{connection}/validate", {})
    if output == "json":
        emit(result)
    else:
        for check in result["checks"]:
            mark = {"pass": "PASS", "fail": "FAIL", "skipped": "SKIP"}[check["result"]]
            print(f"{mark}  {check['name']}: {check['detail']}")
            if check["fix"]:
                print(f"      fix: {check['fix']}")
    if not result["valid"]:
        raise SystemExit(1)


@connection_app.command("delete")
def connection_delete(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    owned_objects: OwnedObjectsOption = "reassign",
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revert everything the connection made: role and grants, mapping, keys, the record."""
    from keyless.connector.service import delete
    from keyless.gateway.pgadmin import PgAdminError

    path = _app_path(data_dir, subscription, group, name)
    try:
        done = delete(
            ApiClient(paths_for(data_dir)),
            path,
            connection,
            {"owned_objects": owned_choice(owned_objects)},
            admin_token(data_dir),
            say=note,
        )
    except (PgAdminError, CliError, ValueError) as exc:
        fail(f"{exc}; the connection is kept so you can run delete again")
    emit({"deleted": connection, "reverted": done})
