"""`keyless app connection`: Service Connector, in the shape of `az webapp connection`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from keyless.cli import cleanup
from keyless.cli.admin import call
from keyless.cli.cleanup import Cleanup
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
from keyless.cli.session import ApiClient, CliError, oauth_error
from keyless.cli.vault import VaultData

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
    list[str] | None,
    typer.Option(
        "--user-identity",
        help="client-id=ID of a user-assigned identity (az's subs-id=SUBSCRIPTION may follow).",
    ),
]
ServicePrincipalOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service-principal",
        help="client-id=ID of a service principal (az's secret=@FILE|- also works: prefer "
        "--secret).",
    ),
]
SecretOption = Annotated[
    str | None,
    typer.Option(
        "--secret",
        help="The service principal's client secret: @FILE, or - to read stdin (a VALUE typed "
        "here stays in the shell history). It is kept in a vault (--vault) and the app's "
        "settings get a reference to it, never the secret.",
    ),
]
ClientTypeOption = Annotated[
    str,
    typer.Option(
        "--client-type",
        help="python, django, nodejs, go, java, springboot, php, ruby, dotnet or none.",
    ),
]
CustomizedKeysOption = Annotated[
    list[str] | None,
    typer.Option("--customized-keys", help="DEFAULT_KEY=NEW_KEY, several allowed."),
]


def _user_identity(items: list[str], subscription: str) -> str:
    """The client ID from az's `client-id=ID [subs-id=SUBSCRIPTION]`; subs-id must name the
    app's own subscription (an identity is looked up there)."""
    given: dict[str, str] = {}
    usage = "--user-identity takes client-id=<client ID> [subs-id=<subscription ID>]"
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ("client-id", "subs-id") or not value:
            fail(f"{usage}, e.g. --user-identity client-id=0000...; {item[:40]!r} is neither")
        if key in given:
            fail(f"--user-identity names {key} twice")
        given[key] = value
    if "client-id" not in given:
        fail(f"{usage}, e.g. --user-identity client-id=0000...")
    subs = given.get("subs-id")
    if subs is not None and subs.lower() != subscription.lower():
        fail(
            f"--user-identity subs-id={subs[:60]} is not the app's subscription ({subscription}); "
            "Keyless looks the identity up in the app's subscription: drop subs-id, or give "
            "--subscription for an app in another one (`keyless account list` shows them)"
        )
    return given["client-id"]


def _service_principal(items: list[str]) -> tuple[str, str | None]:
    """(client ID, the secret as given or None) from `client-id=ID [secret=...]`. Messages
    name the parts, never a value."""
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            fail(
                "--service-principal takes client-id=<client ID> (and optionally secret=@FILE "
                "or secret=-), e.g. --service-principal client-id=0000..."
            )
        if key not in ("client-id", "secret"):
            fail(
                "--service-principal takes client-id=<client ID> and optionally secret=@FILE "
                f"or secret=-; {key[:40]!r} is neither"
            )
        if key in given:
            fail(f"--service-principal names {key} twice")
        given[key] = value
    if not given.get("client-id"):
        fail("--service-principal takes client-id=<client ID>, e.g. client-id=0000...")
    return given["client-id"], given.get("secret")


def read_secret(text: str, where: str) -> str:
    """`-` reads stdin, `@FILE` a file (one trailing newline dropped from either), anything
    else is the secret itself."""
    if text == "-":
        try:
            value = sys.stdin.read()
        except UnicodeDecodeError:
            fail(f"cannot read {where} from stdin: it is not UTF-8 text")
    elif text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {where} from {path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            fail(f"cannot read {where} from {path}: it is not UTF-8 text")
    else:
        value = text
    for ending in ("\r\n", "\n"):
        if value.endswith(ending):
            return value[: -len(ending)]
    return value


def auth_choice(
    system: bool,
    user: list[str] | None,
    sp: list[str] | None,
    secret: str | None = None,
    vault: str | None = None,
    subscription: str = "",
) -> Any:
    """The identity to connect as; with a secret, the vault to keep it in (`vault`)."""
    from keyless.connector.clientsecret import ClientSecret, SecretError
    from keyless.connector.service import AuthChoice

    given = [x for x in (system, user, sp) if x]
    if len(given) != 1:
        fail(
            "choose one of --system-identity, --user-identity client-id=ID, "
            "--service-principal client-id=ID"
        )
    if system or user:
        if secret is not None:
            fail(
                "--secret goes with --service-principal only: a managed identity gets its "
                "tokens with no secret"
            )
        if system:
            return AuthChoice("systemAssignedIdentity")
        assert user is not None
        return AuthChoice("userAssignedIdentity", _user_identity(user, subscription))
    assert sp is not None
    client_id, inline = _service_principal(sp)
    if inline is not None and secret is not None:
        fail("give the secret once: --secret, or secret= in --service-principal")
    text = secret if secret is not None else inline
    if text is None:
        return AuthChoice("servicePrincipal", client_id)
    try:
        kept = ClientSecret(vault or "", read_secret(text, "the client secret"))
    except SecretError as exc:
        fail(str(exc))
    return AuthChoice("servicePrincipal", client_id, kept)


def check_secret(client: ApiClient) -> Any:
    """(tenant, client ID, secret) -> None if the secret signs the service principal in, else
    ValueError; the token it gets is dropped at once."""

    def check(tenant: str, client_id: str, secret: str) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "api://keyless/management/.default",
        }
        try:
            response = client.http.post(f"/{tenant}/oauth2/v2.0/token", data=form)
        except httpx.HTTPError as exc:
            raise ValueError(f"cannot reach the Keyless server ({type(exc).__name__})") from None
        if response.status_code != 200:
            error, description = oauth_error(response)
            raise ValueError(
                f"service principal {client_id} does not sign in with this secret ({error}: "
                f"{description}); give its current secret, or make a new one with `keyless ad "
                f"sp credential reset --id {client_id}`"
            )

    return check


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
    from keyless.connector.keys import (
        CLIENT_TYPES,
        POSTGRES_ONLY,
        ConfigurationKeyError,
        parse_customized,
    )
    from keyless.connector.plan import StepFailed
    from keyless.connector.service import ConnectionRequestError, create
    from keyless.resources.types import PropertiesError

    if client_type not in CLIENT_TYPES:
        fail(f"--client-type must be one of {', '.join(CLIENT_TYPES)}")
    if kind != "postgres" and client_type in POSTGRES_ONLY:
        fail(
            f"--client-type {client_type} is for PostgreSQL connections; for {kind} use one of "
            f"{', '.join(t for t in CLIENT_TYPES if t not in POSTGRES_ONLY)}"
        )
    try:
        renames = parse_customized(customized or [])
        client = ApiClient(paths_for(data_dir))
        result = create(
            client,
            app_path,
            kind,
            connection,
            client_type,
            auth,
            options,
            renames,
            admin_token(data_dir),
            say=note,
            vault_data=VaultData(data_dir),
            check_secret=check_secret(client),
        )
    except (
        StepFailed,
        ConnectionRequestError,
        ConfigurationKeyError,
        PropertiesError,
        CliError,
    ) as exc:
        fail(str(exc))
    emit(result)


TargetGroupOption = Annotated[
    str | None,
    typer.Option(
        "--target-resource-group",
        "--tg",
        help="The target's resource group \\[default: the app's].",
        show_default=False,
    ),
]
TargetIdOption = Annotated[
    str | None,
    typer.Option("--target-id", help="The target's resource ID (instead of its name and group)."),
]


def target_ref(
    data_dir: Any,
    subscription: str | None,
    name: str | None,
    target_group: str | None,
    target_id: str | None,
    option: str,
    type_name: str,
) -> str:
    """The target as the connector looks it up: a name in the app's group, or a resource ID
    (--target-id, or a name in --target-resource-group)."""
    if target_id is not None:
        if name is not None or target_group is not None:
            fail(f"--target-id names the target alone: drop {option} and --target-resource-group")
        if not target_id.startswith("/subscriptions/"):
            fail(
                f"--target-id takes a resource ID (/subscriptions/.../providers/{type_name}/NAME), "
                f"not {target_id[:80]!r}"
            )
        return target_id
    if name is None:
        fail(f"give {option} NAME (with --target-resource-group for another group) or --target-id")
    if target_group is None or name.startswith("/subscriptions/"):
        return name
    return resource_path(subscription_of(data_dir, subscription), target_group, type_name, name)


def create_postgres(
    group: GroupOption,
    name: NameOption,
    database: Annotated[str, typer.Option("--database", help="Target database.")],
    server: Annotated[
        str | None, typer.Option("--server", help="Server name (or resource ID).")
    ] = None,
    target_resource_group: TargetGroupOption = None,
    target_id: TargetIdOption = None,
    client_type: ClientTypeOption = "python",
    system_identity: SystemIdentityOption = False,
    user_identity: UserIdentityOption = None,
    service_principal: ServicePrincipalOption = None,
    secret: SecretOption = None,
    vault: Annotated[
        str | None,
        typer.Option("--vault", help="The vault that keeps --secret (name or resource ID)."),
    ] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    role: Annotated[
        str | None, typer.Option(help="Database role to create [default: aad_<connection>].")
    ] = None,
    customized_keys: CustomizedKeysOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Connect the app to a PostgreSQL database: role, grants, mapping, settings, record."""
    app_path = _app_path(data_dir, subscription, group, name)
    auth = auth_choice(
        system_identity, user_identity, service_principal, secret, vault, app_path.split("/")[2]
    )
    if vault is not None and auth.secret is None:
        fail(
            "--vault keeps a service principal's --secret; without a secret there is nothing to "
            "keep (a managed identity needs none)"
        )
    from keyless.connector.postgres import SERVER_TYPE

    target = target_ref(
        data_dir, subscription, server, target_resource_group, target_id, "--server", SERVER_TYPE
    )
    name_ = connection or f"postgres_{name}".replace("-", "_")[:63]
    options = {"server": target, "database": database, "role": role}
    run_create(data_dir, app_path, "postgres", name_, client_type, auth, options, customized_keys)


create_app.command("postgres", cls=AzCommand)(create_postgres)
create_app.command(
    "postgres-flexible",
    cls=AzCommand,
    help="The same as `postgres` (az's name for Azure Database for PostgreSQL flexible server).",
)(create_postgres)


@create_app.command("keyvault", cls=AzCommand)
def create_keyvault(
    group: GroupOption,
    name: NameOption,
    vault: Annotated[
        str | None, typer.Option("--vault", help="Vault name (or resource ID).")
    ] = None,
    target_resource_group: TargetGroupOption = None,
    target_id: TargetIdOption = None,
    client_type: ClientTypeOption = "python",
    system_identity: SystemIdentityOption = False,
    user_identity: UserIdentityOption = None,
    service_principal: ServicePrincipalOption = None,
    secret: SecretOption = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    customized_keys: CustomizedKeysOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Let the app's identity read the vault's secrets (Vault Secrets User) and write
    AZURE_KEYVAULT_RESOURCEENDPOINT and AZURE_KEYVAULT_SCOPE. A service principal's --secret
    is kept in the same vault."""
    from keyless.connector.keyvault import VAULT_TYPE

    app_path = _app_path(data_dir, subscription, group, name)
    target = target_ref(
        data_dir, subscription, vault, target_resource_group, target_id, "--vault", VAULT_TYPE
    )
    auth = auth_choice(
        system_identity, user_identity, service_principal, secret, target, app_path.split("/")[2]
    )
    name_ = connection or f"keyvault_{name}".replace("-", "_")[:63]
    run_create(
        data_dir, app_path, "keyvault", name_, client_type, auth, {"vault": target}, customized_keys
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
    listed = {"configurations": rows}
    emit(listed, output, ["name", "value"], table=lambda shown: shown["configurations"])


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
    from keyless.cli.connection_change import explain_failed_login

    path = _app_path(data_dir, subscription, group, name)
    result = call(data_dir, "POST", f"{path}/connections/{connection}/validate", {})
    if not result["valid"]:
        app_args = f"-g {shlex.quote(group)} -n {shlex.quote(name)}"
        explain_failed_login(data_dir, path, connection, result, app_args)
    if output != "table":  # the checks as data, for --query and the other formats
        emit(result, output)
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
            vault_data=VaultData(data_dir),
        )
    except (PgAdminError, CliError, ValueError) as exc:
        fail(f"{exc}; the connection is kept so you can run delete again")
    emit({"deleted": connection, "reverted": done})


# ------------------------------------------------------------ deleting an app or a group


def _connections_under(data_dir: Any, path: str) -> list[tuple[str, str]]:
    """(app path, connection name) of every connection of the app at `path`, or of every app
    in the group at `path`."""
    if "/providers/" in path:
        apps = [path]
    else:
        found = call(data_dir, "GET", f"{path}/providers/{APP_TYPE}")["value"]
        apps = [str(app["id"]) for app in found]
    return [
        (app, str(row["name"]))
        for app in apps
        for row in call(data_dir, "GET", f"{app}/connections")["value"]
    ]


def _preview_connections(data_dir: Any, path: str) -> list[str]:
    return [
        f"connection {app.rsplit('/', 1)[-1]}/{name}: reverted first, as `keyless app "
        "connection delete` does (its database role, grants and mapping, and what it stored)"
        for app, name in _connections_under(data_dir, path)
    ]


def _revert_connections(data_dir: Any, path: str, say: Any) -> list[str]:
    from keyless.connector.service import delete
    from keyless.gateway.pgadmin import PgAdminError

    done: list[str] = []
    for app, name in _connections_under(data_dir, path):
        try:
            done += delete(
                ApiClient(paths_for(data_dir)),
                app,
                name,
                {"owned_objects": "reassign"},
                admin_token(data_dir),
                say=say,
                vault_data=VaultData(data_dir),
            )
        except (PgAdminError, CliError, ValueError) as exc:
            raise ValueError(
                f"reverting connection {name!r} of app {app.rsplit('/', 1)[-1]} failed: {exc}"
            ) from None
    return done


cleanup.register(Cleanup(_preview_connections, _revert_connections))
