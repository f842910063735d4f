"""`keyless group`, `keyless identity`, `keyless app` and `keyless account`: the resource
manager, in the shape of `az group`, `az identity`, `az webapp` and `az account`.

Everything goes through the management API (ARM paths, the signed-in user's token); the server
validates and authorises, and its messages say what to do. The helpers here that build ARM
paths, pick the subscription and read az-style list options are shared with `keyless role`.
"""

from __future__ import annotations

import shlex
import sys
import uuid
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

import typer
from typer.core import TyperCommand

from keyless.cli import cleanup
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, note
from keyless.cli.session import CliError, signed_in

group_app = typer.Typer(help="Resource groups.", no_args_is_help=True)
identity_app = typer.Typer(help="User-assigned managed identities.", no_args_is_help=True)
app_app = typer.Typer(help="Apps that Keyless hosts, and their identities.", no_args_is_help=True)
app_identity_app = typer.Typer(
    help="An app's managed identities (system- and user-assigned).", no_args_is_help=True
)
app_app.add_typer(app_identity_app, name="identity")
account_app = typer.Typer(help="Your sign-in and its subscriptions.", no_args_is_help=True)

APP_TYPE = "Keyless.Web/apps"
IDENTITY_TYPE = "Keyless.ManagedIdentity/userAssignedIdentities"
SYSTEM = "[system]"
AUTHZ = "/providers/Keyless.Authorization"

# Options that take several space-separated values, as az's do (`--tags a=b c=d`), with what
# the option means when it is given with no value at all (None: it needs one).
_VARIADIC: dict[str, str | None] = {
    "--tags": "",
    "--assign-identity": SYSTEM,
    "--identities": SYSTEM,
    "--ids": None,
    "--action": None,
    "--customized-keys": None,
    "--service-principal": None,
    "--user-identity": None,
    "--settings": None,
    "--setting-names": None,
}


def spread(args: list[str], variadic: dict[str, str | None]) -> list[str]:
    """`--tags a=b c=d` -> `--tags a=b --tags c=d`; a bare `--assign-identity` -> `[system]`.
    Values run up to the next word that starts with '-'."""
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out += args[i:]
            break
        name, eq, value = word.partition("=")
        i += 1
        if name not in variadic:
            out.append(word)
            continue
        values = [value] if eq else []
        while i < len(args) and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        if not values:
            default = variadic[name]
            if default is None:
                out.append(word)  # click then says that the option needs a value
                continue
            values = [default]
        for item in values:
            out += [name, item]
    return out


class AzCommand(TyperCommand):
    """A command whose list options read space-separated values, as az's do."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = {opt for param in self.params for opt in param.opts}
        mine = {k: v for k, v in _VARIADIC.items() if k in names}
        return super().parse_args(ctx, spread(args, mine))


SubscriptionOption = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        help="Subscription name or ID \\[default: the one you signed in to].",
        show_default=False,
    ),
]
GroupOption = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.")]
NameOption = Annotated[str, typer.Option("--name", "-n", help="Name.")]


# ----------------------------------------------------------------------------- shared helpers


def token_of(data_dir: Any) -> dict[str, Any]:
    """The cached sign-in, refreshed (or signed in again, no password) when it has expired."""
    try:
        return signed_in(paths_for(data_dir))
    except CliError as exc:
        fail(str(exc))


def subscription_of(data_dir: Any, explicit: str | None) -> str:
    """--subscription as a GUID or a display name; by default the signed-in subscription."""
    if explicit:
        try:
            return str(uuid.UUID(explicit))
        except ValueError:
            pass
        found = [
            s["subscriptionId"]
            for s in call(data_dir, "GET", "/subscriptions")["value"]
            if str(s.get("displayName", "")).lower() == explicit.lower()
        ]
        if len(found) != 1:
            fail(
                f"{'several subscriptions are' if found else 'no subscription is'} named "
                f"{explicit[:100]!r}; give its ID (`keyless account list` shows them)"
            )
        return str(found[0])
    subscription = token_of(data_dir).get("subscription")
    if not subscription:
        fail(
            "your sign-in has no default subscription; pass --subscription "
            "(`keyless account list` shows them)"
        )
    return str(subscription)


def segment(value: str, what: str) -> str:
    """A name as one URL path segment. '/' or a leading '.' would change which path is meant,
    so they stop here; the server judges the rest and says what a valid name is."""
    if not value or "/" in value or value.startswith("."):
        fail(
            f"the {what} {value[:100]!r} is not valid: use 1 to 90 letters, digits, '.', '_', "
            "'-', '(' or ')', starting with a letter or digit"
        )
    return quote(value, safe="()")


def scope_path(scope: str, what: str = "scope") -> str:
    """A scope or resource ID the user typed, as a URL path ('' for the root scope)."""
    if not scope.startswith("/"):
        fail(
            f"the {what} {scope[:200]!r} is not valid: a scope starts with '/', e.g. "
            "/subscriptions/{id}/resourceGroups/{name}"
        )
    parts = scope.rstrip("/").split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        fail(f"the {what} {scope[:200]!r} is not valid: it has an empty, '.' or '..' segment")
    return "".join("/" + quote(p, safe="()") for p in parts)


def scope_key(scope: str) -> str:
    return scope.lower().rstrip("/") or "/"


def is_within(outer: str, inner: str) -> bool:
    """`inner` is `outer` or lies below it (keys, whole segments)."""
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


def group_path(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{segment(group, 'resource group name')}"


def resource_path(subscription: str, group: str, type_name: str, name: str) -> str:
    return f"{group_path(subscription, group)}/providers/{type_name}/{segment(name, 'name')}"


def resource_id(subscription: str, group: str, type_name: str, name: str) -> str:
    segment(group, "resource group name")
    segment(name, "name")
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{type_name}/{name}"


def group_of(resource_id_: str) -> str | None:
    parts = resource_id_.split("/")
    return parts[4] if len(parts) > 4 and parts[3].lower() == "resourcegroups" else None


def show(
    data: Any,
    output: str,
    columns: list[str],
    row: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """JSON as the API shapes it; for `-o table`, one flat row per item."""
    if output == "table" and row is not None:
        items = data if isinstance(data, list) else [data]
        emit([row(item) for item in items], output, columns)
        return
    emit(data, output, columns)


# ------------------------------------------------------------------------------------ groups


def _tags(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    tags: dict[str, str] = {}
    for value in values:
        if value == "":
            continue
        key, eq, text = value.partition("=")
        if not key:
            fail(f"--tags {value[:100]!r} is not a tag: write name=value (space-separated)")
        tags[key] = text if eq else ""
    return tags


TagsOption = Annotated[
    list[str] | None,
    typer.Option("--tags", help="Space-separated tags: name=value name2=value2."),
]


@group_app.command("create", cls=AzCommand)
def group_create(
    name: NameOption,
    location: Annotated[
        str | None, typer.Option("--location", "-l", help="Location \\[default: local].")
    ] = None,
    tags: TagsOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create a resource group, or update its tags if it exists."""
    body: dict[str, Any] = {"tags": _tags(tags) or {}}
    if location is not None:
        body["location"] = location
    sub = subscription_of(data_dir, subscription)
    show(call(data_dir, "PUT", group_path(sub, name), body), output, ["name", "location", "id"])


@group_app.command("list")
def group_list(
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Resource groups in the subscription that you may read."""
    sub = subscription_of(data_dir, subscription)
    groups = call(data_dir, "GET", f"/subscriptions/{sub}/resourceGroups")["value"]
    show(groups, output, ["name", "location", "id"])


@group_app.command("show")
def group_show(
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One resource group."""
    sub = subscription_of(data_dir, subscription)
    show(call(data_dir, "GET", group_path(sub, name)), output, ["name", "location", "id"])


@group_app.command("delete")
def group_delete(
    name: NameOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete a resource group and everything in it: its resources, their identities and every
    role assignment at or below it, in one transaction."""
    sub = subscription_of(data_dir, subscription)
    path = group_path(sub, name)
    if not yes:
        group = call(data_dir, "GET", path)
        resources = call(data_dir, "GET", f"{path}/resources")["value"]
        key = scope_key(group["id"])
        assignments = [
            a
            for a in call(data_dir, "GET", f"{path}{AUTHZ}/roleAssignments")["value"]
            if is_within(key, scope_key(a["properties"]["scope"]))
        ]
        lines = [f"The resource group {group['name']!r} will be deleted with everything in it:"]
        lines += [f"  {r['type']}/{r['name']}" for r in resources] or ["  (no resources)"]
        lines.append(
            f"  {len(assignments)} role assignment(s) at or below it, and every role assignment "
            "held by the identities of these resources"
        )
        lines += [f"  {line}" for line in cleanup.preview(data_dir, path)]
        note("\n".join(lines))
        if not sys.stdin.isatty():
            fail(
                "there is no terminal to confirm on, so nothing was deleted; run again with "
                "--yes to delete it"
            )
        if not typer.confirm("Are you sure you want to perform this operation?", err=True):
            fail("not confirmed; nothing was deleted")
    _delete_with_cleanup(data_dir, path, output)


def _delete_with_cleanup(data_dir: Any, path: str, output: str) -> None:
    """Undo what lives outside the store (a connection's database role...), then delete; the
    answer says both. A failed cleanup deletes nothing more."""
    try:
        undone = cleanup.run(data_dir, path, note)
    except ValueError as exc:
        fail(f"{exc}; nothing else was deleted: fix it and run the delete again")
    result = call(data_dir, "DELETE", path)
    emit({**result, "reverted": undone}, output)


# -------------------------------------------------------------------------------- identities


def identity_json(resource: dict[str, Any]) -> dict[str, Any]:
    """As `az identity show` prints it: the properties flattened beside the name."""
    properties = {
        k: v for k, v in resource.get("properties", {}).items() if k != "provisioningState"
    }
    return {
        "id": resource["id"],
        "name": resource["name"],
        "type": resource["type"],
        "resourceGroup": group_of(resource["id"]),
        "location": resource.get("location"),
        "tags": resource.get("tags", {}),
        **properties,
        "systemData": resource.get("systemData"),
    }


IDENTITY_COLUMNS = ["name", "resourceGroup", "location", "clientId", "principalId"]


@identity_app.command("create", cls=AzCommand)
def identity_create(
    group: GroupOption,
    name: NameOption,
    location: Annotated[str | None, typer.Option("--location", "-l")] = None,
    tags: TagsOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create a user-assigned identity: a resource of its own, with its own principal, that any
    number of apps can use."""
    sub = subscription_of(data_dir, subscription)
    body: dict[str, Any] = {"tags": _tags(tags) or {}}
    if location is not None:
        body["location"] = location
    created = call(data_dir, "PUT", resource_path(sub, group, IDENTITY_TYPE, name), body)
    show(identity_json(created), output, IDENTITY_COLUMNS)


@identity_app.command("list")
def identity_list(
    group: Annotated[
        str | None, typer.Option("--resource-group", "-g", help="Only this resource group.")
    ] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """User-assigned identities you may read."""
    sub = subscription_of(data_dir, subscription)
    show(
        [identity_json(r) for r in _list(data_dir, sub, group, IDENTITY_TYPE)],
        output,
        IDENTITY_COLUMNS,
    )


@identity_app.command("show")
def identity_show(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One user-assigned identity."""
    sub = subscription_of(data_dir, subscription)
    found = call(data_dir, "GET", resource_path(sub, group, IDENTITY_TYPE, name))
    show(identity_json(found), output, IDENTITY_COLUMNS)


@identity_app.command("delete")
def identity_delete(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete a user-assigned identity: it is detached from every app that uses it, and its
    role assignments go with it."""
    sub = subscription_of(data_dir, subscription)
    emit(call(data_dir, "DELETE", resource_path(sub, group, IDENTITY_TYPE, name)), output)


def _list(data_dir: Any, sub: str, group: str | None, type_name: str) -> list[dict[str, Any]]:
    if group is None:
        path, params = f"/subscriptions/{sub}/resources", {"resourceType": type_name}
        return list(call(data_dir, "GET", path, params=params)["value"])
    return list(call(data_dir, "GET", f"{group_path(sub, group)}/providers/{type_name}")["value"])


# -------------------------------------------------------------------------------------- apps


def app_json(resource: dict[str, Any]) -> dict[str, Any]:
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


APP_COLUMNS = ["name", "resourceGroup", "location", "command", "identity", "principalId"]


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


def _identity_block(system: bool, users: dict[str, Any]) -> dict[str, Any]:
    kinds = [k for k, on in (("SystemAssigned", system), ("UserAssigned", bool(users))) if on]
    block: dict[str, Any] = {"type": ", ".join(kinds) or "None"}
    if users:
        block["userAssignedIdentities"] = users
    return block


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
            for a in call(data_dir, "GET", f"{group_path(sub, group)}/providers/{APP_TYPE}")[
                "value"
            ]
            if a["name"].lower() == name.lower()
        ),
        None,
    )
    body: dict[str, Any] = {"properties": properties}
    if tags is not None:
        body["tags"] = _tags(tags)
    if assign_identity is not None:
        system, ids = identity_refs(sub, group, assign_identity)
        if existing is not None:
            body["identity"] = _assign_block(existing, system, ids)
        else:
            body["identity"] = _identity_block(system, {i: {} for i in ids})
    if existing is None:
        result = call(data_dir, "PUT", path, body)
    else:
        note(f"the app {existing['name']} exists in {group}; updating it")
        result = call(data_dir, "PATCH", path, body)
    show(app_json(result), output, APP_COLUMNS, _app_row)


@app_app.command("list")
def app_list(
    group: Annotated[
        str | None, typer.Option("--resource-group", "-g", help="Only this resource group.")
    ] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Apps you may read."""
    sub = subscription_of(data_dir, subscription)
    apps = [app_json(r) for r in _list(data_dir, sub, group, APP_TYPE)]
    show(apps, output, APP_COLUMNS, _app_row)


@app_app.command("show")
def app_show(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One app."""
    sub = subscription_of(data_dir, subscription)
    found = call(data_dir, "GET", resource_path(sub, group, APP_TYPE, name))
    show(app_json(found), output, APP_COLUMNS, _app_row)


@app_app.command("delete")
def app_delete(
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete an app: its system-assigned identity and that identity's role assignments go with
    it; user-assigned identities stay, detached from it."""
    sub = subscription_of(data_dir, subscription)
    _delete_with_cleanup(data_dir, resource_path(sub, group, APP_TYPE, name), output)


IdentitiesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--identities",
        help="Space-separated: \\[system] and user-assigned identity IDs or names in the same "
        "resource group \\[default: \\[system]].",
        show_default=False,
    ),
]


def _current(app: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    identity = app.get("identity") or {}
    return "principalId" in identity, dict(identity.get("userAssignedIdentities") or {})


def _assign_block(app: dict[str, Any], system: bool, ids: list[str]) -> dict[str, Any]:
    """A PATCH identity block that adds to what the app has (it never takes anything away)."""
    has_system, users = _current(app)
    known = {k.lower() for k in users}
    # The app's own identities are named again so the block's type keeps UserAssigned.
    wanted: dict[str, Any] = {k: {} for k in users}
    wanted.update({i: {} for i in ids if i.lower() not in known})
    return _identity_block(has_system or system, wanted)


def _identity_out(app: dict[str, Any]) -> dict[str, Any]:
    return dict(app.get("identity") or {"type": "None"})


def _identity_row(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": identity.get("type"),
        "principalId": identity.get("principalId"),
        "tenantId": identity.get("tenantId"),
        "userAssignedIdentities": "\n".join(identity.get("userAssignedIdentities") or {}),
    }


IDENTITY_BLOCK_COLUMNS = ["type", "principalId", "tenantId", "userAssignedIdentities"]


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
    result = call(data_dir, "PATCH", path, {"identity": _assign_block(app, system, ids)})
    show(_identity_out(result), output, IDENTITY_BLOCK_COLUMNS, _identity_row)


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
        block = _identity_block(keep_system, {k: None for k in removed})
    else:
        block = _identity_block(keep_system, {k: {} for k in users})
    result = call(data_dir, "PATCH", path, {"identity": block})
    show(_identity_out(result), output, IDENTITY_BLOCK_COLUMNS, _identity_row)


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
    show(_identity_out(app), output, IDENTITY_BLOCK_COLUMNS, _identity_row)


# ----------------------------------------------------------------------------------- account


@account_app.command("show")
def account_show(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Who you are signed in as, and your default tenant and subscription."""
    token = token_of(data_dir)
    emit(
        {
            "environmentName": "Keyless",
            "id": token.get("subscription"),
            "isDefault": True,
            "state": "Enabled",
            "tenantId": token.get("tenant"),
            "homeTenantId": token.get("tenant"),
            "user": token.get("user"),
            "endpoint": token.get("endpoint"),
        },
        output,
        ["id", "tenantId", "user", "endpoint"],
    )


@account_app.command("list")
def account_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """The subscriptions you may read."""
    token = token_of(data_dir)
    subscriptions = call(data_dir, "GET", "/subscriptions")["value"]
    emit(
        [
            {
                "cloudName": "Keyless",
                "id": s["subscriptionId"],
                "name": s["displayName"],
                "isDefault": s["subscriptionId"] == token.get("subscription"),
                "state": s["state"],
                "tenantId": s["tenantId"],
                "homeTenantId": s["tenantId"],
                "user": token.get("user"),
            }
            for s in subscriptions
        ],
        output,
        ["name", "id", "isDefault", "state", "tenantId"],
    )
