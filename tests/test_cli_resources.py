"""The resource manager and RBAC as a user types them: `keyless group|identity|app|role|account`.

Every command runs as a real subprocess against a real server (HTTPS over loopback). The
session server is shared with other modules, so every name carries a random suffix and no test
depends on what else is there. Commands are written as a shell line (split with shlex).
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest

from keyless.cli.resources import spread
from tests.support.server import KeylessServer

IDENTITY = "Keyless.ManagedIdentity/userAssignedIdentities"


# ------------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def q(value: str) -> str:
    return shlex.quote(value)


def run(server: KeylessServer, line: str, check: bool = True) -> Any:
    # stdin is a pipe, never a terminal, as in a script.
    return server.cli(*shlex.split(line), check=check, input="")


def kl(server: KeylessServer, line: str) -> Any:
    """Run `keyless <line>`, which must succeed; return its JSON."""
    return json.loads(run(server, line).stdout)


def table(server: KeylessServer, line: str) -> str:
    out = str(run(server, f"{line} -o table").stdout)
    assert "┃" in out, out
    return out


def refused(server: KeylessServer, line: str) -> str:
    """Run a command that must fail cleanly; return its error message, unwrapped."""
    result = run(server, line, check=False)
    assert result.returncode != 0, f"keyless {line} succeeded: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error:"), message
    return message


def sub_scope(server: KeylessServer) -> str:
    return f"/subscriptions/{server.subscription_id}"


def group_scope(server: KeylessServer, group: str) -> str:
    return f"{sub_scope(server)}/resourceGroups/{group}"


def sp_exists(server: KeylessServer, principal_id: str) -> bool:
    return bool(run(server, f"ad sp show --id {principal_id}", check=False).returncode == 0)


def assignments_of(server: KeylessServer, principal_id: str) -> list[dict[str, Any]]:
    return list(kl(server, f"role assignment list --assignee-object-id {principal_id} --all"))


@pytest.fixture
def group(keyless_server: KeylessServer) -> str:
    name = unique("rg")
    kl(keyless_server, f"group create -n {name}")
    return name


# --------------------------------------------------------------------------- argument parsing


def test_list_options_take_space_separated_values_as_az_does() -> None:
    variadic = {"--tags": "", "--assign-identity": "[system]", "--ids": None}

    def parsed(line: str) -> str:
        return " ".join(spread(line.split(), variadic))

    assert parsed("-n x --tags a=b c=d -l here") == "-n x --tags a=b --tags c=d -l here"
    assert parsed("--assign-identity -g rg") == "--assign-identity [system] -g rg"
    assert parsed("--assign-identity") == "--assign-identity [system]"
    assert parsed("--assign-identity=id1 id2") == "--assign-identity id1 --assign-identity id2"
    assert parsed("--tags") == "--tags "  # no tags at all
    assert parsed("--ids") == "--ids"  # it needs a value: click says so
    assert " ".join(spread(["--name", "--tags"], {})) == "--name --tags"


# ------------------------------------------------------------------------------------ groups


def test_group_create_list_show_delete(keyless_server: KeylessServer) -> None:
    server = keyless_server
    name = unique("rg")
    created = kl(server, f"group create -n {name} -l lab --tags env=dev team=x")
    assert created["id"] == group_scope(server, name)
    assert created["name"] == name
    assert created["type"] == "Keyless.Resources/resourceGroups"
    assert created["location"] == "lab"
    assert created["tags"] == {"env": "dev", "team": "x"}
    assert created["properties"]["provisioningState"] == "Succeeded"

    # Idempotent, as `az group create` is; --subscription by ID or by name.
    again = kl(server, f"group create -n {name} --subscription {server.subscription_id}")
    assert again["id"] == created["id"]
    by_name = kl(server, f"group show -n {name} --subscription 'Default subscription'")
    assert by_name["id"] == created["id"]

    assert name in [g["name"] for g in kl(server, "group list")]
    assert name in table(server, "group list")
    assert kl(server, f"group show -n {name}")["location"] == "lab"
    assert name in table(server, f"group show -n {name}")

    deleted = kl(server, f"group delete -n {name} --yes")
    assert deleted == {"deletedResources": 0, "deletedRoleAssignments": 0, "reverted": []}
    assert "could not be found" in refused(server, f"group show -n {name}")
    assert name not in [g["name"] for g in kl(server, "group list")]


def test_group_delete_without_yes_says_what_and_refuses(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    kl(server, f"identity create -g {group} -n shared")
    kl(server, f"app create -g {group} -n web --assign-identity")
    result = run(server, f"group delete -n {group}", check=False)
    assert result.returncode != 0
    said = " ".join(result.stderr.split())
    assert f"{IDENTITY}/shared" in said and "Keyless.Web/apps/web" in said
    assert "--yes" in said and "nothing was deleted" in said
    assert result.stdout == ""
    assert len(kl(server, f"app list -g {group}")) == 1
    assert kl(server, f"group show -n {group}")["name"] == group


def test_group_delete_removes_everything_under_it(keyless_server: KeylessServer) -> None:
    server = keyless_server
    group = unique("rg")
    kl(server, f"group create -n {group}")
    uai = kl(server, f"identity create -g {group} -n id1")
    app = kl(server, f"app create -g {group} -n web --assign-identity [system] id1")
    system_pid = app["identity"]["principalId"]
    reader = kl(server, f"ad sp create-for-rbac -n {unique('reader')}")
    at_group = kl(
        server, f"role assignment create --assignee {reader['appId']} --role Reader -g {group}"
    )
    # The user-assigned identity's own grant lies outside the group: it goes with its principal.
    outside = kl(
        server,
        f"role assignment create --assignee-object-id {uai['principalId']} --role Reader "
        f"--scope {sub_scope(server)}",
    )
    at_app = kl(
        server,
        f"role assignment create --assignee-object-id {system_pid} --role Reader "
        f"--scope {app['id']}",
    )

    result = kl(server, f"group delete -n {group} --yes")
    assert result["deletedResources"] == 2
    # Every assignment that went, truthfully: at the group, at the app, and the one the
    # user-assigned identity held outside it (issue #13: it said 0 after previewing them).
    assert result["deletedRoleAssignments"] == 3
    assert result["reverted"] == []

    assert "could not be found" in refused(server, f"group show -n {group}")
    assert "could not be found" in refused(server, f"app list -g {group}")
    assert not sp_exists(server, system_pid)
    assert not sp_exists(server, uai["principalId"])
    remaining = {a["name"] for a in kl(server, "role assignment list --all")}
    assert not remaining & {at_group["name"], outside["name"], at_app["name"]}
    # The principal that merely held a role at the group is still in the directory.
    assert sp_exists(server, reader["appId"])


# -------------------------------------------------------------------------------- identities


def test_identity_create_list_show_delete(keyless_server: KeylessServer, group: str) -> None:
    server = keyless_server
    created = kl(server, f"identity create -g {group} -n worker --tags a=1")
    assert created["id"] == f"{group_scope(server, group)}/providers/{IDENTITY}/worker"
    assert created["name"] == "worker"
    assert created["type"] == IDENTITY
    assert created["resourceGroup"] == group
    assert created["tags"] == {"a": "1"}
    assert created["tenantId"] == server.tenant_id
    for key in ("clientId", "principalId"):
        uuid.UUID(created[key])
    assert sp_exists(server, created["principalId"])

    # Creating it again keeps the same principal.
    again = kl(server, f"identity create -g {group} -n worker")
    assert (again["principalId"], again["clientId"]) == (
        created["principalId"],
        created["clientId"],
    )
    shown = kl(server, f"identity show -g {group} -n worker")
    assert shown["clientId"] == created["clientId"]

    assert [i["name"] for i in kl(server, f"identity list -g {group}")] == ["worker"]
    assert created["id"] in [i["id"] for i in kl(server, "identity list")]
    assert created["clientId"] in table(server, f"identity list -g {group}")
    assert "worker" in table(server, f"identity show -g {group} -n worker")

    assert kl(server, f"identity delete -g {group} -n worker") == {
        "deleted": created["id"],
        "deletedRoleAssignments": 0,
    }
    assert "was not found" in refused(server, f"identity show -g {group} -n worker")
    assert kl(server, f"identity list -g {group}") == []
    assert not sp_exists(server, created["principalId"])


# -------------------------------------------------------------------------------------- apps


def test_app_with_system_identity_lives_and_dies_with_it(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    command = "python app.py --port 8000 'two words'"
    app = kl(server, f"app create -g {group} -n api --command {q(command)} --assign-identity")
    assert app["resourceGroup"] == group
    assert app["type"] == "Keyless.Web/apps"
    assert app["properties"]["command"] == ["python", "app.py", "--port", "8000", "two words"]
    assert app["identity"]["type"] == "SystemAssigned"
    assert app["identity"]["tenantId"] == server.tenant_id
    principal = app["identity"]["principalId"]
    assert kl(server, f"ad sp show --id {principal}")["displayName"] == "api"

    shown = kl(server, f"app show -g {group} -n api")
    assert shown["identity"]["principalId"] == principal
    assert [a["name"] for a in kl(server, f"app list -g {group}")] == ["api"]
    assert app["id"] in [a["id"] for a in kl(server, "app list")]
    listing = table(server, f"app list -g {group}")
    assert command in listing and principal in listing
    assert "SystemAssigned" in table(server, f"app show -g {group} -n api")

    grant = kl(server, f"role assignment create --assignee {principal} --role Reader -g {group}")
    assert [a["name"] for a in assignments_of(server, principal)] == [grant["name"]]

    # `app create` again updates the app and keeps its identity.
    updated = kl(server, f"app create -g {group} -n api --command 'python v2.py'")
    assert updated["properties"]["command"] == ["python", "v2.py"]
    assert updated["identity"]["principalId"] == principal

    # The count is what went: the grant its identity held (issue #13: it said 0).
    assert kl(server, f"app delete -g {group} -n api") == {
        "deleted": app["id"],
        "deletedRoleAssignments": 1,
        "reverted": [],
    }
    assert "was not found" in refused(server, f"app show -g {group} -n api")
    refused(server, f"ad sp show --id {principal}")  # its service principal is gone
    assert assignments_of(server, principal) == []  # and so are its role assignments
    assert kl(server, f"app list -g {group}") == []


def test_user_assigned_identity_shared_by_two_apps(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    uai = kl(server, f"identity create -g {group} -n shared")
    # By name in the same group, and by resource ID.
    one = kl(server, f"app create -g {group} -n one --assign-identity shared")
    two = kl(server, f"app create -g {group} -n two --assign-identity [system] {uai['id']}")
    assert one["identity"]["type"] == "UserAssigned"
    assert two["identity"]["type"] == "SystemAssigned, UserAssigned"
    for app in (one, two):
        attached = app["identity"]["userAssignedIdentities"][uai["id"]]
        assert attached == {"principalId": uai["principalId"], "clientId": uai["clientId"]}
    grant = kl(
        server,
        f"role assignment create --assignee-object-id {uai['principalId']} --role Reader "
        f"-g {group}",
    )

    kl(server, f"app delete -g {group} -n one")
    # The identity, its principal and its grant survive; the other app still has it.
    survivor = kl(server, f"identity show -g {group} -n shared")
    assert survivor["principalId"] == uai["principalId"]
    assert sp_exists(server, uai["principalId"])
    assert [a["name"] for a in assignments_of(server, uai["principalId"])] == [grant["name"]]
    still = kl(server, f"app identity show -g {group} -n two")
    assert list(still["userAssignedIdentities"]) == [uai["id"]]

    # Deleting the identity detaches it from the app that remains.
    kl(server, f"identity delete -g {group} -n shared")
    after = kl(server, f"app identity show -g {group} -n two")
    assert after["type"] == "SystemAssigned"
    assert "userAssignedIdentities" not in after
    assert after["principalId"] == two["identity"]["principalId"]
    assert not sp_exists(server, uai["principalId"])
    assert assignments_of(server, uai["principalId"]) == []


def test_app_identity_assign_remove_show(keyless_server: KeylessServer, group: str) -> None:
    server = keyless_server
    uai = kl(server, f"identity create -g {group} -n extra")
    kl(server, f"app create -g {group} -n web")
    assert kl(server, f"app identity show -g {group} -n web") == {"type": "None"}

    system = kl(server, f"app identity assign -g {group} -n web")
    assert system["type"] == "SystemAssigned"
    principal = system["principalId"]

    # Adds; does not replace.
    both = kl(server, f"app identity assign -g {group} -n web --identities extra")
    assert both["type"] == "SystemAssigned, UserAssigned"
    assert both["principalId"] == principal
    assert list(both["userAssignedIdentities"]) == [uai["id"]]
    shown = table(server, f"app identity show -g {group} -n web")
    assert principal in shown and uai["id"] in shown
    # Assigning what it has changes nothing.
    same = kl(server, f"app identity assign -g {group} -n web --identities [system] {uai['id']}")
    assert same == both

    only_system = kl(server, f"app identity remove -g {group} -n web --identities {uai['id']}")
    assert only_system == {
        "principalId": principal,
        "tenantId": server.tenant_id,
        "type": "SystemAssigned",
    }
    assert sp_exists(server, uai["principalId"])  # detached, not deleted

    kl(server, f"app identity assign -g {group} -n web --identities extra")
    kl(server, f"role assignment create --assignee-object-id {principal} --role Reader -g {group}")
    only_user = kl(server, f"app identity remove -g {group} -n web")  # default: [system]
    assert only_user["type"] == "UserAssigned"
    assert "principalId" not in only_user
    assert not sp_exists(server, principal)
    assert assignments_of(server, principal) == []

    missing = refused(server, f"app identity remove -g {group} -n web --identities nope")
    assert "does not use" in missing and "nope" in missing
    assert kl(server, f"app identity remove -g {group} -n web --identities extra") == {
        "type": "None"
    }


def test_patch_identity_type_decides_what_stays(keyless_server: KeylessServer, group: str) -> None:
    """The ARM semantics under `app identity`: a PATCH whose identity type leaves out
    UserAssigned (or is None) removes the user-assigned identities."""
    server = keyless_server
    kl(server, f"identity create -g {group} -n u1")
    app = kl(server, f"app create -g {group} -n p --assign-identity [system] u1")
    headers = {"Authorization": f"Bearer {server.admin_token()}"}
    with server.http() as http:
        body = {"identity": {"type": "SystemAssigned"}}
        response = http.patch(app["id"], json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["identity"] == {
            "principalId": app["identity"]["principalId"],
            "tenantId": server.tenant_id,
            "type": "SystemAssigned",
        }
        kl(server, f"app identity assign -g {group} -n p --identities u1")
        response = http.patch(app["id"], json={"identity": {"type": "None"}}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["identity"] == {"type": "None"}
    assert not sp_exists(server, app["identity"]["principalId"])


# ------------------------------------------------------------------------------------- roles


def test_role_definition_list_create_delete(
    keyless_server: KeylessServer, group: str, tmp_path: Path
) -> None:
    server = keyless_server
    names = {r["roleName"]: r for r in kl(server, "role definition list")}
    assert {"Owner", "Contributor", "Reader", "User Access Administrator"} <= set(names)
    assert names["Reader"]["roleType"] == "BuiltInRole"
    assert names["Reader"]["permissions"][0]["actions"] == ["*/read"]
    reader = kl(server, "role definition list --name reader")
    assert [r["name"] for r in reader] == [names["Reader"]["name"]]
    assert kl(server, f"role definition list --name {names['Reader']['name']}") == reader
    assert "Owner" in table(server, "role definition list")

    role_name = unique("App Reader No Writes")
    az_shape = {
        "Name": role_name,
        "IsCustom": True,
        "Description": "Reads apps but may not change them.",
        "Actions": ["Keyless.Web/apps/*"],
        "NotActions": ["Keyless.Web/apps/write", "Keyless.Web/apps/delete"],
        "DataActions": [],
        "NotDataActions": [],
        "AssignableScopes": [sub_scope(server)],
    }
    path = tmp_path / "role.json"
    path.write_text(json.dumps(az_shape))
    created = kl(server, f"role definition create --role-definition @{path}")
    assert created["roleName"] == role_name
    assert created["roleType"] == "CustomRole"
    assert created["description"] == az_shape["Description"]
    assert created["permissions"][0]["notActions"] == az_shape["NotActions"]
    assert created["assignableScopes"] == [sub_scope(server)]
    custom = kl(server, "role definition list --custom-role-only")
    assert role_name in [r["roleName"] for r in custom]
    assert all(r["roleType"] == "CustomRole" for r in custom)

    # ARM's shape, inline; no assignable scopes means the tenant root.
    arm_name = unique("Vault Peeker")
    permissions = [{"actions": [], "dataActions": ["Keyless.Vault/vaults/secrets/*"]}]
    arm = {"properties": {"roleName": arm_name, "permissions": permissions}}
    arm_role = kl(server, f"role definition create --role-definition {q(json.dumps(arm))}")
    assert arm_role["permissions"][0]["dataActions"] == ["Keyless.Vault/vaults/secrets/*"]
    assert arm_role["assignableScopes"] == ["/"]

    # notActions subtract: the custom role reads the app but may not write it.
    holder = kl(server, f"ad sp create-for-rbac -n {unique('holder')}")
    app = kl(server, f"app create -g {group} -n target")
    assignment = kl(
        server,
        f"role assignment create --assignee {holder['appId']} --role {q(role_name)} -g {group}",
    )
    assert assignment["roleDefinitionName"] == role_name
    check = kl(
        server,
        f"role assignment check --assignee {holder['appId']} --scope {app['id']} "
        "--action Keyless.Web/apps/read Keyless.Web/apps/write",
    )
    assert [r["allowed"] for r in check["results"]] == [True, False]

    in_use = refused(server, f"role definition delete --name {q(role_name)}")
    assert "delete those assignments first" in in_use
    kl(server, f"role assignment delete --ids {assignment['id']}")
    deleted = kl(server, f"role definition delete --name {q(role_name)}")
    assert deleted == {"deleted": created["name"]}
    kl(server, f"role definition delete --name {arm_role['name']}")
    custom = kl(server, "role definition list --custom-role-only")
    assert not {role_name, arm_name} & {r["roleName"] for r in custom}
    builtin = refused(server, "role definition delete --name Reader")
    assert "built-in roles cannot be deleted" in builtin


def test_role_assignment_create_list_check_delete(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    display = unique("deployer")
    sp = kl(server, f"ad sp create-for-rbac -n {display}")
    principal = kl(server, f"ad sp show --id {sp['appId']}")["id"]
    app = kl(server, f"app create -g {group} -n site")

    # The assignee by display name.
    created = kl(
        server, f"role assignment create --assignee {display} --role Contributor -g {group}"
    )
    assert created["principalId"] == principal
    assert created["principalType"] == "ServicePrincipal"
    assert created["principalName"] == display
    assert created["roleDefinitionName"] == "Contributor"
    assert created["scope"] == group_scope(server, group)
    assert created["id"] == (
        f"{group_scope(server, group)}/providers/Keyless.Authorization/roleAssignments/"
        f"{created['name']}"
    )
    # The same assignment again (assignee by appId) is refused, naming the one that exists.
    duplicate = refused(
        server,
        f"role assignment create --assignee {sp['appId']} --role Contributor "
        f"--scope {group_scope(server, group)}",
    )
    assert created["name"] in duplicate

    assert [a["name"] for a in kl(server, f"role assignment list -g {group}")] == [created["name"]]
    mine = kl(server, f"role assignment list --assignee {sp['appId']} --all")
    assert [a["name"] for a in mine] == [created["name"]]
    # At the subscription only what is assigned there; --all reaches below.
    assert created["name"] not in [a["name"] for a in kl(server, "role assignment list")]
    assert created["name"] in [a["name"] for a in kl(server, "role assignment list --all")]
    inherited = kl(server, f"role assignment list --scope {app['id']} --include-inherited")
    assert created["name"] in [a["name"] for a in inherited]
    assert kl(server, f"role assignment list --scope {app['id']}") == []
    assert created["name"] in table(server, f"role assignment list -g {group}")

    # Inherited by the app below; Contributor cannot assign roles. Exit 0 either way.
    check = kl(
        server,
        f"role assignment check --assignee {display} --scope {app['id']} "
        "--action Keyless.Web/apps/write --action Keyless.Authorization/roleAssignments/write",
    )
    assert check["principalId"] == principal and check["scope"] == app["id"]
    write, assign = check["results"]
    assert write["allowed"] is True
    assert "Contributor" in write["reason"] and created["name"] in write["reason"]
    assert assign["allowed"] is False and "no role assignment" in assign["reason"]
    shown = table(
        server,
        f"role assignment check --assignee {display} -g {group} "
        "--action data:Keyless.Vault/vaults/secrets/getSecret/action",
    )
    assert "False" in shown and "getSecret" in shown
    me = kl(server, f"role assignment check --action '*' -g {group}")
    assert me["results"][0]["allowed"] is True  # the administrator owns the root scope

    deleted = kl(
        server, f"role assignment delete --assignee {display} --role contributor -g {group}"
    )
    assert [d["name"] for d in deleted] == [created["name"]]
    assert kl(server, f"role assignment list -g {group}") == []
    again = refused(
        server, f"role assignment delete --assignee {display} --role Contributor -g {group}"
    )
    assert "no matching role assignment" in again

    by_id = [
        kl(
            server,
            f"role assignment create --assignee {principal} --role {role} --scope {app['id']}",
        )
        for role in ("Reader", "Contributor")
    ]
    deleted = kl(server, f"role assignment delete --ids {by_id[0]['id']} {by_id[1]['name']}")
    assert sorted(d["name"] for d in deleted) == sorted(a["name"] for a in by_id)
    assert assignments_of(server, principal) == []


# ----------------------------------------------------------------------------------- account


def test_account_show_and_list(keyless_server: KeylessServer) -> None:
    server = keyless_server
    account = kl(server, "account show")
    assert account["id"] == server.subscription_id
    assert account["tenantId"] == server.tenant_id
    assert account["user"]["type"] == "user" and account["user"]["name"]
    assert server.subscription_id in table(server, "account show")
    default = [s for s in kl(server, "account list") if s["isDefault"]]
    assert [s["id"] for s in default] == [server.subscription_id]
    assert default[0]["name"] == "Default subscription"
    assert default[0]["tenantId"] == server.tenant_id
    assert "Default subscription" in table(server, "account list")


# --------------------------------------------------------------------------------- bad input


def snapshot(server: KeylessServer) -> Any:
    return [
        kl(server, line)
        for line in (
            "group list",
            "app list",
            "identity list",
            "role assignment list --all",
            "role definition list --custom-role-only",
        )
    ]


def test_bad_input_is_refused_clearly_and_changes_nothing(
    keyless_server: KeylessServer, group: str, tmp_path: Path
) -> None:
    server = keyless_server
    kl(server, f"app create -g {group} -n existing")
    me = kl(server, "account show")["user"]["name"]
    before = snapshot(server)
    missing = unique("missing")
    sub, rg = sub_scope(server), group_scope(server, group)
    assign = f"role assignment create --assignee {me} --role Reader"
    define = "role definition create --role-definition"
    unbalanced = "python 'app.py"
    cases = {
        # unknown role, unknown assignee
        f"role assignment create --assignee {me} --role 'No Such Role' -g {group}": (
            "no role named or with ID 'No Such Role'"
        ),
        f"role assignment create --assignee {missing} --role Reader -g {group}": (
            f"no user, group or service principal matches '{missing}'"
        ),
        f"role assignment create --assignee a/b --role Reader -g {group}": (
            "no user, group or service principal matches 'a/b'"
        ),
        f"role assignment check --assignee {missing} --action x/read": (
            "no user, group or service principal matches"
        ),
        # malformed scopes
        f"{assign} --scope subscriptions/x": "a scope starts with '/'",
        f"{assign} --scope /subscriptions/not-a-guid": "is not a GUID",
        f"{assign} --scope {rg}/../..": "'.' or '..' segment",
        f"{assign} --scope {sub}/resourceGroups/{missing}": f"'{missing}' could not be found",
        f"role assignment list --scope {sub}/things/x": "after the subscription comes",
        f"{assign} --scope / -g {group}": "not both",
        # illegal names
        "group create -n 'bad name!'": "'bad name!' is not valid",
        "group create -n a/b": "'a/b' is not valid",
        "group create -n ..": "'..' is not valid",
        f"identity create -g {group} -n 'no*stars'": "'no*stars' is not valid",
        f"app create -g {group} -n 'x?y'": "'x?y' is not valid",
        f"app create -g {group} -n ok --assign-identity bad/name": "'bad/name' is not valid",
        # unknown group, unknown resources
        f"group show -n {missing}": f"'{missing}' could not be found",
        f"group delete -n {missing} --yes": f"'{missing}' could not be found",
        f"group delete -n {missing}": f"'{missing}' could not be found",
        f"identity create -g {missing} -n x": f"'{missing}' could not be found",
        f"app create -g {missing} -n x": f"'{missing}' could not be found",
        f"app list -g {missing}": f"'{missing}' could not be found",
        f"app show -g {group} -n {missing}": "was not found",
        f"app delete -g {group} -n {missing}": "was not found",
        f"identity delete -g {group} -n {missing}": "was not found",
        f"app identity assign -g {group} -n {missing}": "was not found",
        # an identity that does not exist: the app is not created either
        f"app create -g {group} -n half --assign-identity {missing}": (
            "create it with `keyless identity create`"
        ),
        f"app identity assign -g {group} -n existing --identities {rg}": "is not a",
        f"app create -g {group} -n y --command {q(unbalanced)}": "cannot be split",
        "group create -n z --tags =v": "is not a tag",
        "group create -n z --subscription 'No Such Subscription'": "no subscription is named",
        # role definitions and assignment deletion
        f"""{define} '{{"Name": "r", "Actions": ["bad action"]}}'""": "is not an action",
        f"""{define} '{{"Name": "r", "Action": ["*"]}}'""": "unknown fields action",
        f"{define} '{{not json'": "not valid JSON",
        f"{define} @{tmp_path}/none.json": "cannot read",
        f"""{define} '{{"Name": "Reader", "Actions": ["*"]}}'""": "'Reader' already exists",
        f"role definition delete --name {missing}": "no role named or with ID",
        f"role assignment delete --assignee {me} --role Reader -g {group}": "no matching",
        "role assignment delete --ids /subscriptions/x": "is not a role assignment ID",
        f"role assignment delete --ids {uuid.uuid4()}": "no role assignment",
        f"role assignment delete -g {group}": "say which assignments",
    }
    for line, expected in cases.items():
        message = refused(server, line)
        assert expected in message, f"keyless {line}: {message}"
    assert snapshot(server) == before
