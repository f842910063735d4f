"""`keyless app connection update` and `repair`, and what `validate` adds to a failed login
when the signed-in user can look at the server as its Keyless administrator."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from keyless.cli.connection import (
    ConnectionOption,
    ServicePrincipalOption,
    SystemIdentityOption,
    UserIdentityOption,
    _app_path,
    auth_choice,
    connection_app,
)
from keyless.cli.options import DataDirOption, paths_for
from keyless.cli.output import emit, fail, note
from keyless.cli.postgres import admin_token
from keyless.cli.resources import AzCommand, GroupOption, NameOption, SubscriptionOption
from keyless.cli.session import ApiClient, CliError, resource_token
from keyless.cli.vault import VaultData

LOGIN_CHECK = "login through the gateway"


def _run_change(
    data_dir: Any,
    path: str,
    connection: str,
    client_type: str | None,
    auth: Any,
) -> None:
    from keyless.connector.change import change
    from keyless.connector.keys import CLIENT_TYPES, ConfigurationKeyError
    from keyless.connector.plan import StepFailed
    from keyless.connector.service import ConnectionRequestError
    from keyless.gateway.pgadmin import PgAdminError
    from keyless.resources.types import PropertiesError

    if client_type is not None and client_type not in CLIENT_TYPES:
        fail(f"--client-type must be one of {', '.join(CLIENT_TYPES)}")
    try:
        result = change(
            ApiClient(paths_for(data_dir)),
            path,
            connection,
            admin_token(data_dir),
            client_type=client_type,
            auth=auth,
            say=note,
            vault_data=VaultData(data_dir),
        )
    except (
        StepFailed,
        ConnectionRequestError,
        ConfigurationKeyError,
        PgAdminError,
        PropertiesError,
    ) as exc:
        fail(str(exc))
    except CliError as exc:
        fail(f"{exc}; nothing was changed")
    emit(result)


@connection_app.command("update", cls=AzCommand)
def connection_update(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    client_type: Annotated[
        str | None, typer.Option("--client-type", help="The new client type (as create's).")
    ] = None,
    system_identity: SystemIdentityOption = False,
    user_identity: UserIdentityOption = None,
    service_principal: ServicePrincipalOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Change a connection's client type and/or identity: its keys are written again (the old
    ones removed), and for PostgreSQL its role is mapped to the new identity."""
    path = _app_path(data_dir, subscription, group, name)
    auth = None
    if system_identity or user_identity or service_principal:
        auth = auth_choice(
            system_identity, user_identity, service_principal, None, None, path.split("/")[2]
        )
    if client_type is None and auth is None:
        fail(
            "say what to change: --client-type, or one of --system-identity, --user-identity "
            "client-id=ID, --service-principal client-id=ID"
        )
    _run_change(data_dir, path, connection, client_type, auth)


@connection_app.command("repair")
def connection_repair(
    group: GroupOption,
    name: NameOption,
    connection: ConnectionOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Make again what the connection made and is missing (a database role dropped by hand,
    its grants, its mapping, its keys); what is in place stays as it is."""
    _run_change(data_dir, _app_path(data_dir, subscription, group, name), connection, None, None)


def explain_failed_login(
    data_dir: Any, path: str, connection: str, result: dict[str, Any], app_args: str
) -> None:
    """A refused login says little ("password authentication failed": PostgreSQL never asked
    Keyless); as the server's Keyless administrator, the user can see why. Best effort: a
    user who is not the administrator keeps the generic fix."""
    failed = [c for c in result["checks"] if c["name"] == LOGIN_CHECK and c["result"] == "fail"]
    if not failed:
        return
    from keyless.connector.postgres import diagnose
    from keyless.connector.target import Identity, ProvisionContext

    paths = paths_for(data_dir)

    def token(scope: str) -> str:  # raises, rather than exiting as admin_token's does
        return str(resource_token(paths, scope)[0]["accessToken"])

    try:
        client = ApiClient(paths)
        record = client.call("GET", f"{path}/connections/{connection}")["properties"]
        if record["targetService"]["type"] != "postgres":
            return
        ctx = ProvisionContext(client, {}, Identity("", "", "", ""), connection, "", {}, token)
        try:
            why = diagnose(ctx, record["targetService"])
        finally:
            for close in ctx.cleanup:
                close()
    except Exception:  # the generic message stays: this only adds to it
        return
    if why is None:
        return
    repair = f"keyless app connection repair {app_args} --connection {shlex.quote(connection)}"
    check = failed[0]
    check["detail"] = f"{why} ({check['detail']})"
    if why.startswith("database"):
        target = record["targetService"]
        server = str(target["id"]).rsplit("/", 1)[-1]
        server_group = str(target["id"]).split("/resourceGroups/", 1)[-1].split("/", 1)[0]
        check["fix"] = (
            f"create it with: keyless postgres db create -g {server_group} --server {server} "
            f"--name {shlex.quote(str(target['database']))}, then: {repair}"
        )
    else:
        check["fix"] = f"recreate it with: {repair}"
