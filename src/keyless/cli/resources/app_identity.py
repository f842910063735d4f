"""`keyless app identity`: an app's managed identities, in the shape of `az webapp identity`;
and the identity blocks that `app create --assign-identity` sends too."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import fail, note, show
from keyless.cli.resources.arm import (
    APP_TYPE,
    IDENTITY_TYPE,
    resource_id,
    resource_path,
    subscription_of,
)
from keyless.cli.resources.az import SYSTEM, AzCommand, GroupOption, NameOption, SubscriptionOption

app_identity_app = typer.Typer(
    help="An app's managed identities (system- and user-assigned).", no_args_is_help=True
)

IdentitiesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--identities",
        help="Space-separated: \\[system] and user-assigned identity IDs or names in the same "
        "resource group \\[default: \\[system]].",
        show_default=False,
    ),
]
COLUMNS = ["type", "principalId", "tenantId", "userAssignedIdentities"]


def identity_refs(sub: str, group: str, values: list[str]) -> tuple[bool, list[str]]:
    """`[system]` and user-assigned identities (resource IDs, or names in the app's group)."""
    system = False
    ids: list[str] = []
    for value in values:
        # az spells it "[system]"; "system" is what people type, and no identity may be named
        # that in its place, so both mean the system-assigned identity.
        if value.lower() in (SYSTEM, "system"):
            system = True
            continue
        full = value if value.startswith("/") else resource_id(sub, group, IDENTITY_TYPE, value)
        if full.lower() not in {i.lower() for i in ids}:
            ids.append(full)
    return system, ids


def identity_block(system: bool, users: dict[str, Any]) -> dict[str, Any]:
    kinds = [k for k, on in (("SystemAssigned", system), ("UserAssigned", bool(users))) if on]
    block: dict[str, Any] = {"type": ", ".join(kinds) or "None"}
    if users:
        block["userAssignedIdentities"] = users
    return block


def _current(app: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    identity = app.get("identity") or {}
    return "principalId" in identity, dict(identity.get("userAssignedIdentities") or {})


def assign_block(app: dict[str, Any], system: bool, ids: list[str]) -> dict[str, Any]:
    """A PATCH identity block that adds to what the app has (it never takes anything away)."""
    has_system, users = _current(app)
    known = {k.lower() for k in users}
    # The app's own identities are named again so the block's type keeps UserAssigned.
    wanted: dict[str, Any] = {k: {} for k in users}
    wanted.update({i: {} for i in ids if i.lower() not in known})
    return identity_block(has_system or system, wanted)


def _identity_out(app: dict[str, Any]) -> dict[str, Any]:
    return dict(app.get("identity") or {"type": "None"})


def _row(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": identity.get("type"),
        "principalId": identity.get("principalId"),
        "tenantId": identity.get("tenantId"),
        "userAssignedIdentities": "\n".join(identity.get("userAssignedIdentities") or {}),
    }


@app_identity_app.command("assign", cls=AzCommand)
def app_identity_assign(
    group: GroupOption,
    name: NameOption,
    identities: IdentitiesOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Give the app more identities: its system-assigned one and/or user-assigned ones. What it
    has already stays."""
    sub = subscription_of(data_dir, subscription)
    path = resource_path(sub, group, APP_TYPE, name)
    system, ids = identity_refs(sub, group, identities or [SYSTEM])
    app = call(data_dir, "GET", path)
    result = call(data_dir, "PATCH", path, {"identity": assign_block(app, system, ids)})
    show(_identity_out(result), output, COLUMNS, _row)


@app_identity_app.command("remove", cls=AzCommand)
def app_identity_remove(
    group: GroupOption,
    name: NameOption,
    identities: IdentitiesOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Take identities away from the app. Removing the system-assigned identity deletes it and
    its role assignments; a user-assigned identity is only detached."""
    sub = subscription_of(data_dir, subscription)
    path = resource_path(sub, group, APP_TYPE, name)
    system, ids = identity_refs(sub, group, identities or [SYSTEM])
    app = call(data_dir, "GET", path)
    has_system, users = _current(app)
    by_lower = {k.lower(): k for k in users}
    missing = [i for i in ids if i.lower() not in by_lower]
    if missing:
        fail(
            f"the app {app['name']} does not use {', '.join(missing)}; `keyless app identity "
            "show` lists its identities"
        )
    if system and not has_system:
        note(f"the app {app['name']} has no system-assigned identity")
    keep_system = has_system and not system
    removed = {by_lower[i.lower()] for i in ids}
    if removed:
        # {id: null} takes one away; the server works out what type is left.
        block = identity_block(keep_system, {k: None for k in removed})
    else:
        block = identity_block(keep_system, {k: {} for k in users})
    result = call(data_dir, "PATCH", path, {"identity": block})
    show(_identity_out(result), output, COLUMNS, _row)


@app_identity_app.command("show")
def app_identity_show(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The app's identities: the system-assigned principal and the user-assigned ones."""
    sub = subscription_of(data_dir, subscription)
    app = call(data_dir, "GET", resource_path(sub, group, APP_TYPE, name))
    show(_identity_out(app), output, COLUMNS, _row)
