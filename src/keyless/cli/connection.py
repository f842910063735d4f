"""`keyless app connection`: Service Connector, in the shape of `az webapp connection`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
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
    str | None,
    typer.Option("--user-identity", help="client-id=ID of a user-assigned identity."),
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
    user: str | None,
    sp: list[str] | None,
    secret: str | None = None,
    vault: str | None = None,
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
        return AuthChoice("userAssignedIdentity", _client_id(user, "--user-identity"))
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
    from keyless.connector.keys import CLIENT_TYPES, ConfigurationKeyError, parse_customized
    from keyless.connector.plan import StepFailed
    from keyless.connector.service import ConnectionRequestError, create
    from keyless.resources.types import PropertiesError

    if client_type not in CLIENT_TYPES:
        fail(f"--client-type must be one of {', '.join(CLIENT_TYPES)}")
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
    auth = auth_choice(system_identity, user_identity, service_principal, secret, vault)
    if vault is not None and auth.secret is None:
        fail(
            "--vault keeps a service principal's --secret; without a secret there is nothing to "
            "keep (a managed identity needs none)"
        )
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
    secret: SecretOption = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    customized_keys: CustomizedKeysOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Let the app's identity read the vault's secrets (Vault Secrets User) and write
    AZURE_KEYVAULT_RESOURCEENDPOINT and AZURE_KEYVAULT_SCOPE. A service principal's --secret
    is kept in the same vault."""
    auth = auth_choice(system_identity, user_identity, service_principal, secret, vault)
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
            vault_data=VaultData(data_dir),
        )
    except (PgAdminError, CliError, ValueError) as exc:
        fail(f"{exc}; the connection is kept so you can run delete again")
    emit({"deleted": connection, "reverted": done})
