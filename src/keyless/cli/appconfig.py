"""`keyless app config appsettings` and `keyless identity federated-credential`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import emit, fail, note
from keyless.cli.resources import (
    APP_TYPE,
    IDENTITY_TYPE,
    AzCommand,
    GroupOption,
    NameOption,
    SubscriptionOption,
    app_app,
    identity_app,
    resource_path,
    subscription_of,
)

config_app = typer.Typer(help="An app's configuration.", no_args_is_help=True)
settings_app = typer.Typer(
    help="App settings: environment variables of the app.", no_args_is_help=True
)
app_app.add_typer(config_app, name="config")
config_app.add_typer(settings_app, name="appsettings")
fic_app = typer.Typer(
    help="Trust an external OIDC issuer's tokens for this identity.", no_args_is_help=True
)
identity_app.add_typer(fic_app, name="federated-credential")


def _settings(data_dir: Any, path: str) -> dict[str, str]:
    app = call(data_dir, "GET", path)
    return dict(app.get("properties", {}).get("appSettings") or {})


def _as_list(settings: dict[str, str]) -> list[dict[str, Any]]:
    # az's shape; values are shown because app settings are configuration, not secrets: a
    # secret belongs in a vault, referenced from the setting.
    return [{"name": k, "value": v, "slotSetting": False} for k, v in sorted(settings.items())]


@settings_app.command("list")
def settings_list(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The app's settings."""
    path = resource_path(subscription_of(data_dir, subscription), group, APP_TYPE, name)
    emit(_as_list(_settings(data_dir, path)), output, ["name", "value"])


@settings_app.command("set", cls=AzCommand)
def settings_set(
    group: GroupOption,
    name: NameOption,
    settings: Annotated[
        list[str],
        typer.Option("--settings", help="Space-separated NAME=VALUE pairs (repeatable too)."),
    ],
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add or change settings (the others stay)."""
    path = resource_path(subscription_of(data_dir, subscription), group, APP_TYPE, name)
    current = _settings(data_dir, path)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{item[:60]!r} is not NAME=VALUE")
        current[key] = value
    app = call(data_dir, "PATCH", path, {"properties": {"appSettings": current}})
    from keyless.host.references import azure_notices

    given = {k: v for k, v in app["properties"]["appSettings"].items() if k in _names(settings)}
    for line in azure_notices(given):
        note(line)
    emit(_as_list(app["properties"]["appSettings"]))


def _names(items: list[str]) -> set[str]:
    return {item.partition("=")[0] for item in items}


@settings_app.command("delete", cls=AzCommand)
def settings_delete(
    group: GroupOption,
    name: NameOption,
    setting_names: Annotated[
        list[str], typer.Option("--setting-names", help="Space-separated names (repeatable too).")
    ],
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove settings."""
    path = resource_path(subscription_of(data_dir, subscription), group, APP_TYPE, name)
    current = _settings(data_dir, path)
    missing = [n for n in setting_names if n not in current]
    if missing:
        fail(f"the app has no setting {', '.join(missing)}; nothing was changed")
    for key in setting_names:
        current.pop(key)
    app = call(data_dir, "PATCH", path, {"properties": {"appSettings": current}})
    emit(_as_list(app["properties"]["appSettings"]))


def _fic_path(data_dir: Any, subscription: str | None, group: str, identity: str) -> str:
    base = resource_path(subscription_of(data_dir, subscription), group, IDENTITY_TYPE, identity)
    return f"{base}/federatedIdentityCredentials"


IdentityName = Annotated[str, typer.Option("--identity-name", help="The user-assigned identity.")]


@fic_app.command("create")
def fic_create(
    group: GroupOption,
    identity_name: IdentityName,
    name: NameOption,
    issuer: Annotated[str, typer.Option(help="The external issuer URL (https).")],
    subject: Annotated[str, typer.Option(help="e.g. system:serviceaccount:NS:NAME")],
    audiences: Annotated[
        list[str] | None, typer.Option(help="Default api://AzureADTokenExchange.")
    ] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Trust tokens with this issuer and subject as this identity (no secret)."""
    body: dict[str, Any] = {"properties": {"issuer": issuer, "subject": subject}}
    if audiences:
        body["properties"]["audiences"] = audiences
    path = f"{_fic_path(data_dir, subscription, group, identity_name)}/{name}"
    emit(call(data_dir, "PUT", path, body))


@fic_app.command("list")
def fic_list(
    group: GroupOption,
    identity_name: IdentityName,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The identity's federated credentials."""
    found = call(data_dir, "GET", _fic_path(data_dir, subscription, group, identity_name))
    emit(
        [{"name": f["name"], **f["properties"]} for f in found["value"]],
        output,
        ["name", "issuer", "subject", "audiences"],
    )


@fic_app.command("delete")
def fic_delete(
    group: GroupOption,
    identity_name: IdentityName,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop trusting that issuer and subject."""
    call(data_dir, "DELETE", f"{_fic_path(data_dir, subscription, group, identity_name)}/{name}")
    emit({"deleted": name})
