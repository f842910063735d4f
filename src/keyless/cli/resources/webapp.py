"""`keyless app`: apps that Keyless hosts, in the shape of `az webapp`. Other modules add their
subcommands to `app_app` (`run`, `config`, `connection`)."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import fail, note, show
from keyless.cli.resources.app_identity import (
    app_identity_app,
    assign_block,
    identity_block,
    identity_refs,
)
from keyless.cli.resources.arm import (
    APP_TYPE,
    group_of,
    list_resources,
    resource_path,
    subscription_of,
)
from keyless.cli.resources.az import (
    AzCommand,
    GroupOption,
    NameOption,
    SubscriptionOption,
    TagsOption,
    parse_tags,
)
from keyless.cli.resources.kind import ResourceKind, add_commands

app_app = typer.Typer(help="Apps that Keyless hosts, and their identities.", no_args_is_help=True)
app_app.add_typer(app_identity_app, name="identity")


def app_json(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with its group named after its ID, as az's webapp commands print it."""
    out = {k: v for k, v in resource.items() if k in ("id", "name", "type")}
    out["resourceGroup"] = group_of(resource["id"])
    out.update({k: v for k, v in resource.items() if k not in out})
    return out


def _app_row(app: dict[str, Any]) -> dict[str, Any]:
    identity = app.get("identity") or {}
    return {
        "name": app["name"],
        "resourceGroup": app.get("resourceGroup"),
        "location": app.get("location"),
        "command": shlex.join(app.get("properties", {}).get("command", [])),
        "identity": identity.get("type", "None"),
        "principalId": identity.get("principalId"),
    }


APP = ResourceKind(
    type_name=APP_TYPE,
    to_json=app_json,
    columns=["name", "resourceGroup", "location", "command", "identity", "principalId"],
    row=_app_row,
    list_help="Apps you may read.",
    show_help="One app.",
    delete_help="Delete an app: its system-assigned identity and that identity's role "
    "assignments go with it; user-assigned identities stay, detached from it.",
    cleans_up=True,
)


@app_app.command("create", cls=AzCommand)
def app_create(
    group: GroupOption,
    name: NameOption,
    command: Annotated[
        str | None,
        typer.Option("--command", help='The program and its arguments, e.g. "python app.py".'),
    ] = None,
    assign_identity: Annotated[
        list[str] | None,
        typer.Option(
            "--assign-identity",
            help="Identities to give the app, space-separated: \\[system] (alone, the default) "
            "and user-assigned identity IDs or names in the same resource group.",
        ),
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    key_vault_reference_identity: Annotated[
        str | None,
        typer.Option(
            "--key-vault-reference-identity",
            help="The identity that resolves the app's vault references: \\[system] (the "
            "default) or a user-assigned identity's ID or name in the same resource group; it "
            "must be assigned to the app.",
        ),
    ] = None,
    tags: TagsOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create an app (or update one that exists, keeping its identities)."""
    sub = subscription_of(data_dir, subscription)
    properties: dict[str, Any] = {}
    if key_vault_reference_identity is not None:
        system, ids = identity_refs(sub, group, [key_vault_reference_identity])
        if key_vault_reference_identity.lower() == "systemassigned":
            system = True
        properties["keyVaultReferenceIdentity"] = "SystemAssigned" if system else ids[0]
    if command is not None:
        try:
            properties["command"] = shlex.split(command)
        except ValueError as exc:
            fail(f"--command cannot be split into words: {exc}")
    if description is not None:
        properties["description"] = description
    path = resource_path(sub, group, APP_TYPE, name)
    existing = next(
        (
            a
            for a in list_resources(data_dir, sub, group, APP_TYPE)
            if a["name"].lower() == name.lower()
        ),
        None,
    )
    body: dict[str, Any] = {"properties": properties}
    if tags is not None:
        body["tags"] = parse_tags(tags)
    if assign_identity is not None:
        system, ids = identity_refs(sub, group, assign_identity)
        if existing is not None:
            body["identity"] = assign_block(existing, system, ids)
        else:
            body["identity"] = identity_block(system, {i: {} for i in ids})
    if existing is None:
        result = call(data_dir, "PUT", path, body)
    else:
        note(f"the app {existing['name']} exists in {group}; updating it")
        result = call(data_dir, "PATCH", path, body)
    show(app_json(result), output, APP.columns, _app_row)


add_commands(app_app, APP)
