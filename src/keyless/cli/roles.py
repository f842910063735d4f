"""`keyless role ...`: role definitions, role assignments and access checks, in the shape of
`az role`.

Definitions and assignments live under `{scope}/providers/Keyless.Authorization/...`; an
assignee is resolved (object ID, appId, user principal name or display name) by the server's
principals endpoint, so the CLI and the server agree on who is meant.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import emit, fail, iso_time, note
from keyless.cli.resources import (
    AUTHZ,
    AzCommand,
    SubscriptionOption,
    group_path,
    is_within,
    scope_key,
    scope_path,
    show,
    subscription_of,
    token_of,
)
from keyless.cli.signedin import signed_in_user_id

app = typer.Typer(help="Role-based access control.", no_args_is_help=True)
definition_app = typer.Typer(help="Role definitions: built-in and custom.", no_args_is_help=True)
assignment_app = typer.Typer(
    help="Role assignments: a principal holds a role at a scope.", no_args_is_help=True
)
app.add_typer(definition_app, name="definition")
app.add_typer(assignment_app, name="assignment")

ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--scope",
        help="A scope: /, /subscriptions/{id}, .../resourceGroups/{name}, or a resource ID "
        "\\[default: the subscription].",
        show_default=False,
    ),
]
ResourceGroupOption = Annotated[
    str | None,
    typer.Option("--resource-group", "-g", help="Use this resource group as the scope."),
]
AssigneeOption = Annotated[
    str | None,
    typer.Option(
        "--assignee",
        help="Object ID, appId, user principal name or display name of the principal; `me` "
        "for yourself.",
    ),
]
AssigneeObjectIdOption = Annotated[
    str | None,
    typer.Option("--assignee-object-id", help="The principal's object ID (no lookup)."),
]


# ------------------------------------------------------------------------------------ helpers


def target_scope(
    data_dir: Any, scope: str | None, group: str | None, subscription: str | None
) -> tuple[str, bool]:
    """The scope asked for, and whether it was asked for (else the default subscription)."""
    if scope is not None and group is not None:
        fail("give --scope or --resource-group, not both")
    if scope is not None:
        scope_path(scope)
        return scope, True
    sub = subscription_of(data_dir, subscription)
    if group is not None:
        group_path(sub, group)  # checks the name
        return f"/subscriptions/{sub}/resourceGroups/{group}", True
    return f"/subscriptions/{sub}", False


def resolve_assignee(data_dir: Any, assignee: str) -> dict[str, Any]:
    """{id, type, displayName} of the one principal that `assignee` names."""
    if not assignee.strip() or "/" in assignee or not assignee.strip("."):
        fail(f"no user, group or service principal matches {assignee[:100]!r}")
    if assignee.strip().lower() == "me":  # as Microsoft Graph's /me: the signed-in user
        assignee = signed_in_user_id(data_dir)
    return dict(
        call(
            data_dir, "GET", f"/providers/Keyless.Directory/principals/{quote(assignee, safe='@')}"
        )
    )


def principal_of(
    data_dir: Any, assignee: str | None, object_id: str | None, required: bool = True
) -> dict[str, Any] | None:
    if assignee is not None and object_id is not None:
        fail("give --assignee or --assignee-object-id, not both")
    if object_id is not None:
        try:
            return {"id": str(uuid.UUID(object_id)), "type": None, "displayName": None}
        except ValueError:
            fail(f"--assignee-object-id {object_id[:100]!r} is not a GUID")
    if assignee is not None:
        return resolve_assignee(data_dir, assignee)
    if required:
        fail("say who: --assignee (object ID, appId, user principal name or display name)")
    return None


def definitions(data_dir: Any, scope: str) -> list[dict[str, Any]]:
    return [
        definition_json(d)
        for d in call(data_dir, "GET", f"{scope_path(scope)}{AUTHZ}/roleDefinitions")["value"]
    ]


def definition_json(definition: dict[str, Any]) -> dict[str, Any]:
    """As `az role definition list` prints it: the properties flattened beside the ID."""
    p = definition.get("properties", {})
    return {
        "id": definition["id"],
        "name": definition["name"],
        "type": definition["type"],
        "roleName": p.get("roleName"),
        "roleType": p.get("type"),
        "description": p.get("description", ""),
        "permissions": p.get("permissions", []),
        "assignableScopes": p.get("assignableScopes", []),
    }


def find_definition(roles: list[dict[str, Any]], ref: str) -> dict[str, Any] | None:
    """By role name (any case; Azure's names of the vault roles too), GUID or role definition
    ID, as az accepts."""
    from keyless.access.permissions import role_name

    ref = role_name(ref)
    tail = ref.rstrip("/").rsplit("/", 1)[-1].lower()
    for role in roles:
        if str(role["roleName"]).lower() == ref.lower() or role["name"].lower() == tail:
            return role
    return None


def assignment_json(
    assignment: dict[str, Any],
    role_names: dict[str, str],
    principal: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """As `az role assignment list` prints it: flat, with the role's name."""
    p = assignment.get("properties", {})
    role_id = str(p.get("roleDefinitionId", ""))
    out: dict[str, Any] = {
        "id": assignment["id"],
        "name": assignment["name"],
        "type": assignment["type"],
        "principalId": p.get("principalId"),
        "principalType": p.get("principalType"),
    }
    if principal is not None and principal.get("id") == p.get("principalId"):
        out["principalName"] = principal.get("displayName")
    out.update(
        {
            "roleDefinitionId": role_id,
            "roleDefinitionName": role_names.get(role_id.rsplit("/", 1)[-1].lower()),
            "scope": p.get("scope"),
            "createdOn": iso_time(p.get("createdOn")),
            "createdBy": p.get("createdBy"),
        }
    )
    return out


def role_names(data_dir: Any, scope: str) -> dict[str, str]:
    return {d["name"].lower(): str(d["roleName"]) for d in definitions(data_dir, scope)}


ASSIGNMENT_COLUMNS = ["principalId", "principalType", "roleDefinitionName", "scope", "name"]
DEFINITION_COLUMNS = ["roleName", "roleType", "name", "description"]


# -------------------------------------------------------------------------------- definitions


_AZ_KEYS = {
    "name",
    "rolename",
    "description",
    "actions",
    "notactions",
    "dataactions",
    "notdataactions",
    "assignablescopes",
    "permissions",
    "id",
    "type",
    "roletype",
    "iscustom",
}


def _is_guid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def definition_body(raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(role ID, ARM body) from az's shape (Name, Actions, ...: any case) or ARM's
    ({properties: {roleName, permissions, assignableScopes}})."""
    inner = raw.get("properties")
    props: dict[str, Any] = inner if isinstance(inner, dict) else raw
    lower = {str(k).lower(): v for k, v in props.items()}
    unknown = set(lower) - _AZ_KEYS - {"properties"}
    if unknown:
        fail(
            f"--role-definition has unknown fields {', '.join(sorted(unknown))}; a role has "
            "Name, Description, Actions, NotActions, DataActions, NotDataActions, "
            "AssignableScopes"
        )
    outer_name = raw.get("name") if props is not raw else None
    name = lower.get("rolename")
    if name is None and not _is_guid(lower.get("name")):
        name = lower.get("name")
    if not isinstance(name, str) or not name.strip():
        fail("--role-definition needs the role's Name (or roleName)")
    role_id = next(
        (
            str(uuid.UUID(str(c).rsplit("/", 1)[-1]))
            for c in (outer_name, lower.get("name"), lower.get("id"))
            if c is not None and _is_guid(str(c).rsplit("/", 1)[-1])
        ),
        str(uuid.uuid4()),
    )
    if "permissions" in lower:
        permissions = lower["permissions"]
    else:
        permissions = [
            {
                key: lower.get(key.lower(), [])
                for key in ("actions", "notActions", "dataActions", "notDataActions")
            }
        ]
    body: dict[str, Any] = {
        "roleName": name.strip(),
        "description": lower.get("description", "") or "",
        "permissions": permissions,
    }
    if lower.get("assignablescopes"):
        body["assignableScopes"] = lower["assignablescopes"]
    return role_id, {"properties": body}


def _read_json(value: str, what: str) -> dict[str, Any]:
    text = value
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            fail(f"cannot read the {what} file {path}: {exc.strerror}")
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        fail(f"{what} is not valid JSON ({exc})")
    if not isinstance(loaded, dict):
        fail(f"{what} must be a JSON object")
    return loaded


@definition_app.command("list")
def definition_list(
    name: Annotated[str | None, typer.Option("--name", "-n", help="A role's name or ID.")] = None,
    custom_role_only: Annotated[
        bool, typer.Option("--custom-role-only", help="Only custom roles.")
    ] = False,
    scope: ScopeOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Role definitions: the built-in roles and your custom ones."""
    where, _ = target_scope(data_dir, scope, None, subscription)
    roles = definitions(data_dir, where)
    if name is not None:
        match = find_definition(roles, name)
        roles = [match] if match is not None else []
    if custom_role_only:
        roles = [r for r in roles if r["roleType"] == "CustomRole"]
    show(roles, output, DEFINITION_COLUMNS)


def _required_definition(data_dir: Any, where: str, name: str) -> dict[str, Any]:
    """The role definition named (or with ID) `name` visible at `where`; a clear stop if none."""
    role = find_definition(definitions(data_dir, where), name)
    if role is None:
        fail(f"no role named or with ID {name[:100]!r}; `keyless role definition list` shows them")
    return role


@definition_app.command("show")
def definition_show(
    name: Annotated[str, typer.Option("--name", "-n", help="The role's name or ID.")],
    scope: ScopeOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One role definition, by name (Azure's names of the vault roles too) or ID."""
    where, _ = target_scope(data_dir, scope, None, subscription)
    role = _required_definition(data_dir, where, name)
    show(role, output, DEFINITION_COLUMNS)


@definition_app.command("create")
def definition_create(
    role_definition: Annotated[
        str,
        typer.Option(
            "--role-definition",
            help="JSON or @file: Name, Description, Actions, NotActions, DataActions, "
            "NotDataActions, AssignableScopes (as az), or ARM properties.",
        ),
    ],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create a custom role."""
    role_id, body = definition_body(_read_json(role_definition, "--role-definition"))
    scopes = body["properties"].get("assignableScopes")
    where = scopes[0] if isinstance(scopes, list) and scopes and isinstance(scopes[0], str) else "/"
    path = f"{scope_path(where, 'assignable scope')}{AUTHZ}/roleDefinitions/{role_id}"
    show(definition_json(call(data_dir, "PUT", path, body)), output, DEFINITION_COLUMNS)


@definition_app.command("delete")
def definition_delete(
    name: Annotated[str, typer.Option("--name", "-n", help="The role's name or ID.")],
    scope: ScopeOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete a custom role (its assignments must be deleted first)."""
    where, given = target_scope(data_dir, scope, None, subscription)
    role = _required_definition(data_dir, where, name)
    if not given:
        scopes = role["assignableScopes"]
        where = scopes[0] if scopes else "/"
    emit(
        call(data_dir, "DELETE", f"{scope_path(where)}{AUTHZ}/roleDefinitions/{role['name']}"),
        output,
    )


# -------------------------------------------------------------------------------- assignments


@assignment_app.command("create")
def assignment_create(
    role: Annotated[str, typer.Option("--role", help="Role name, GUID or definition ID.")],
    assignee: AssigneeOption = None,
    assignee_object_id: AssigneeObjectIdOption = None,
    scope: ScopeOption = None,
    group: ResourceGroupOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Give a principal a role at a scope (and so at every scope below it)."""
    principal = principal_of(data_dir, assignee, assignee_object_id)
    assert principal is not None
    where, given = target_scope(data_dir, scope, group, subscription)
    if not given:
        note(f"no --scope given: assigning at the subscription {where}")
    body = {"properties": {"roleDefinitionId": role, "principalId": principal["id"]}}
    path = f"{scope_path(where)}{AUTHZ}/roleAssignments/{uuid.uuid4()}"
    created = call(data_dir, "PUT", path, body)
    out = assignment_json(created, role_names(data_dir, where), principal)
    show(out, output, ASSIGNMENT_COLUMNS)


def _assignments_at(
    data_dir: Any, where: str, principal: dict[str, Any] | None
) -> list[dict[str, Any]]:
    params = {"principalId": principal["id"]} if principal is not None else None
    path = f"{scope_path(where)}{AUTHZ}/roleAssignments"
    return list(call(data_dir, "GET", path, params=params)["value"])


@assignment_app.command("list")
def assignment_list(
    assignee: AssigneeOption = None,
    assignee_object_id: AssigneeObjectIdOption = None,
    scope: ScopeOption = None,
    group: ResourceGroupOption = None,
    all_: Annotated[
        bool,
        typer.Option("--all", help="Also the assignments below the scope (and above it)."),
    ] = False,
    include_inherited: Annotated[
        bool, typer.Option("--include-inherited", help="Also those above the scope.")
    ] = False,
    role: Annotated[str | None, typer.Option("--role", help="Role name, GUID or ID.")] = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Role assignments at a scope (by default the subscription) that you may read."""
    principal = principal_of(data_dir, assignee, assignee_object_id, required=False)
    where, _ = target_scope(data_dir, scope, group, subscription)
    key = scope_key(where)
    role_id = None
    if role is not None:
        found = find_definition(definitions(data_dir, where), role)
        if found is None:
            fail(f"no role {role[:100]!r}; `keyless role definition list` shows them")
        role_id = found["name"].lower()
    rows = []
    for a in _assignments_at(data_dir, where, principal):
        at = scope_key(a["properties"]["scope"])
        of_role = role_id is None or (
            a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1].lower() == role_id
        )
        if of_role and (all_ or at == key or (include_inherited and is_within(at, key))):
            rows.append(a)
    names = role_names(data_dir, where)
    show([assignment_json(a, names, principal) for a in rows], output, ASSIGNMENT_COLUMNS)


@assignment_app.command("delete", cls=AzCommand)
def assignment_delete(
    ids: Annotated[
        list[str] | None,
        typer.Option("--ids", help="Space-separated role assignment IDs (or their GUIDs)."),
    ] = None,
    assignee: AssigneeOption = None,
    assignee_object_id: AssigneeObjectIdOption = None,
    role: Annotated[str | None, typer.Option("--role", help="Role name, GUID or ID.")] = None,
    scope: ScopeOption = None,
    group: ResourceGroupOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete role assignments: by ID, or those of --assignee and/or --role at --scope."""
    if ids:
        if any(v is not None for v in (assignee, assignee_object_id, role, scope, group)):
            fail("give --ids alone, or --assignee/--role/--scope without --ids")
        paths = []
        for value in ids:
            if _is_guid(value):
                paths.append(f"{AUTHZ}/roleAssignments/{uuid.UUID(value)}")
                continue
            marker = f"{AUTHZ}/roleassignments/".lower()
            if marker not in value.lower():
                fail(f"{value[:200]!r} is not a role assignment ID ({{scope}}{AUTHZ}/...)")
            paths.append(scope_path(value, "role assignment ID"))
        emit([call(data_dir, "DELETE", p) for p in paths], output)
        return
    principal = principal_of(data_dir, assignee, assignee_object_id, required=False)
    if principal is None and role is None:
        fail("say which assignments: --ids, or --assignee and/or --role (with --scope)")
    where, _ = target_scope(data_dir, scope, group, subscription)
    roles = definitions(data_dir, where)
    role_id = None
    if role is not None:
        found = find_definition(roles, role)
        if found is None:
            fail(
                f"no role named or with ID {role[:100]!r}; `keyless role definition list` "
                "shows them"
            )
        role_id = found["name"].lower()
    key = scope_key(where)
    matched = [
        a
        for a in _assignments_at(data_dir, where, principal)
        if scope_key(a["properties"]["scope"]) == key
        and (
            role_id is None
            or a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1].lower() == role_id
        )
    ]
    if not matched:
        fail(
            f"no matching role assignment at {where}; `keyless role assignment list --all` "
            "shows them"
        )
    names = {d["name"].lower(): str(d["roleName"]) for d in roles}
    deleted = [call(data_dir, "DELETE", scope_path(a["id"])) for a in matched]
    emit([assignment_json(a, names, principal) for a in deleted], output)


@assignment_app.command("check", cls=AzCommand)
def assignment_check(
    action: Annotated[
        list[str],
        typer.Option(
            "--action",
            help="Action(s) to check, e.g. Keyless.Web/apps/write; prefix data actions with "
            "'data:'. Repeat the option or give several.",
        ),
    ],
    assignee: AssigneeOption = None,
    assignee_object_id: AssigneeObjectIdOption = None,
    scope: ScopeOption = None,
    group: ResourceGroupOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """May the principal (by default, you) perform these actions at the scope, and why.

    Each answer names the assignment that grants it. Exits 0 whether or not access is granted.
    """
    principal = principal_of(data_dir, assignee, assignee_object_id, required=False)
    principal_id = principal["id"] if principal else token_of(data_dir)["user"]["id"]
    where, _ = target_scope(data_dir, scope, group, subscription)
    result = call(
        data_dir,
        "POST",
        f"{scope_path(where)}{AUTHZ}/checkAccess",
        {"principalId": principal_id, "actions": action},
    )
    columns = ["action", "dataAction", "allowed", "reason"]
    emit(result, output, columns, table=lambda checked: checked["results"])
