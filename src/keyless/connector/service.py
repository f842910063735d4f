"""`connection create` and `connection delete` as the CLI runs them: one undoable operation.

Create, in order: enable or attach the identity if needed, let the target provision (role,
grants, mapping...), write the configuration keys into the app's settings, record the
connection. A failure at any step undoes every earlier one and says what failed. Delete
reverts the target, removes the keys the connection wrote, and removes the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyless.base.errors import KeylessError
from keyless.base.scopes import parse_scope
from keyless.connector import clientsecret
from keyless.connector.clientsecret import ClientSecret
from keyless.connector.keys import (
    apply_customized,
    identity_values,
    is_property,
    prefixed,
    secret_key,
)
from keyless.connector.plan import Plan, StepFailed
from keyless.connector.records import check_connection_name
from keyless.connector.target import Identity, Management, ProvisionContext, VaultData, lookup

IDENTITY_TYPE = "Keyless.ManagedIdentity/userAssignedIdentities"


class ConnectionRequestError(KeylessError, ValueError):
    """The request cannot be carried out as given; nothing was changed."""


@dataclass(frozen=True)
class AuthChoice:
    auth_type: str  # systemAssignedIdentity | userAssignedIdentity | servicePrincipal
    client_id: str | None = None
    secret: ClientSecret | None = None  # a service principal's, kept in a vault

    def __post_init__(self) -> None:
        if self.secret is not None and self.auth_type != "servicePrincipal":
            raise ConnectionRequestError(
                "a client secret goes with --service-principal only: a managed identity gets "
                "its tokens with no secret"
            )


def _identity_block(system: bool, users: dict[str, Any]) -> dict[str, Any]:
    kinds = [k for k, on in (("SystemAssigned", system), ("UserAssigned", bool(users))) if on]
    block: dict[str, Any] = {"type": ", ".join(kinds) or "None"}
    if users:
        block["userAssignedIdentities"] = {k: {} for k in users}
    return block


def _subscription_of(resource_id: str) -> str:
    return resource_id.split("/")[2]


def _resolve_identity(
    api: Management, app_path: str, app: dict[str, Any], auth: AuthChoice, plan: Plan
) -> tuple[Identity, dict[str, Any], bool]:
    """(the identity, the app as it is now, whether a system identity was enabled for this)."""
    identity = app.get("identity") or {}
    users: dict[str, Any] = dict(identity.get("userAssignedIdentities") or {})
    tenant = str(identity.get("tenantId", ""))
    if auth.auth_type == "systemAssignedIdentity":
        if "principalId" in identity:
            return Identity(auth.auth_type, identity["principalId"], "", tenant), app, False
        app = plan.step(
            "enable the app's system-assigned identity",
            lambda: api.call("PATCH", app_path, {"identity": _identity_block(True, users)}),
        )
        plan.on_undo(
            "disabled the system-assigned identity again",
            lambda: api.call("PATCH", app_path, {"identity": _identity_block(False, users)}),
        )
        made = app["identity"]
        return Identity(auth.auth_type, made["principalId"], "", made["tenantId"]), app, True
    if auth.auth_type == "userAssignedIdentity":
        client_id = (auth.client_id or "").lower()
        for info in users.values():
            if str(info.get("clientId", "")).lower() == client_id:
                return (
                    Identity(auth.auth_type, info["principalId"], info["clientId"], tenant),
                    app,
                    False,
                )
        found = api.call(
            "GET",
            f"/subscriptions/{_subscription_of(app_path)}/resources",
            params={"resourceType": IDENTITY_TYPE},
        )["value"]
        match = [r for r in found if str(r["properties"].get("clientId", "")).lower() == client_id]
        if not match:
            raise ConnectionRequestError(
                f"no user-assigned identity with client ID {auth.client_id} in this subscription "
                "(`keyless identity list` shows them)"
            )
        wanted = {**users, match[0]["id"]: {}}
        has_system = "principalId" in identity
        app = plan.step(
            f"assign identity {match[0]['name']} to the app",
            lambda: api.call("PATCH", app_path, {"identity": _identity_block(has_system, wanted)}),
        )
        plan.on_undo(
            f"unassigned identity {match[0]['name']} again",
            lambda: api.call("PATCH", app_path, {"identity": _identity_block(has_system, users)}),
        )
        props = match[0]["properties"]
        return (
            Identity(auth.auth_type, props["principalId"], props["clientId"], props["tenantId"]),
            app,
            False,
        )
    sp = api.call("GET", f"/admin/v1/servicePrincipals/{auth.client_id}")
    return Identity(auth.auth_type, sp["id"], sp["appId"], sp["appOwnerOrganizationId"]), app, False


def _reference_identity(
    api: Management, app_path: str, plan: Plan, enabled: list[bool]
) -> tuple[str, str]:
    """(object ID, description) of the identity `keyless app run` reads vault references
    with: the one `keyVaultReferenceIdentity` names, else the system-assigned identity, which
    is enabled (a step of the plan; `enabled` records it) when the app has none."""
    app = api.call("GET", app_path)
    identity = app.get("identity") or {}
    users: dict[str, Any] = dict(identity.get("userAssignedIdentities") or {})
    named = str((app.get("properties") or {}).get("keyVaultReferenceIdentity") or "")
    where = parse_scope(app_path)
    app_args = f"-g {where.resource_group} -n {where.resource_names[-1]}"
    if named and named.lower() != "systemassigned":
        for resource_id, info in users.items():
            if resource_id.lower() == named.lower():
                return str(info["principalId"]), f"the app's reference identity {resource_id}"
        raise ConnectionRequestError(
            f"the app's keyVaultReferenceIdentity names {named}, which is not assigned to the "
            "app, so `keyless app run` could not read the client secret; assign it (`keyless app "
            f"identity assign {app_args} --identities {named}`) or name another (`keyless app "
            f"create {app_args} --key-vault-reference-identity NAME_OR_ID`, or [system])"
        )
    if "principalId" in identity:
        return str(identity["principalId"]), "the app's system-assigned identity"
    made = plan.step(
        "enable the app's system-assigned identity (keyless app run reads the client secret "
        "with it)",
        lambda: api.call("PATCH", app_path, {"identity": _identity_block(True, users)}),
    )
    plan.on_undo(
        "disabled the system-assigned identity again",
        lambda: api.call("PATCH", app_path, {"identity": _identity_block(False, users)}),
    )
    enabled.append(True)
    return str(made["identity"]["principalId"]), "the app's system-assigned identity"


def _check_secret(ctx: ProvisionContext, plan: Plan, secret: ClientSecret) -> None:
    """Before anything is stored: the secret must sign the service principal in (a typo or a
    reset credential is caught here, not at the app's first start)."""
    check = ctx.check_secret
    if check is None:
        raise ConnectionRequestError("this client cannot check a client secret")
    identity = ctx.identity
    plan.step(
        f"check that the secret signs in service principal {identity.client_id}",
        lambda: check(identity.tenant_id, identity.client_id, secret.value),
    )


def _connections(api: Management, app_path: str) -> list[dict[str, Any]]:
    return list(api.call("GET", f"{app_path}/connections")["value"])


def create(
    api: Management,
    app_path: str,
    kind: str,
    connection: str,
    client_type: str,
    auth: AuthChoice,
    options: dict[str, Any],
    customized: dict[str, str],
    admin_token: Callable[[str], str],
    say: Callable[[str], None] = lambda _line: None,
    vault_data: VaultData | None = None,
    check_secret: Callable[[str, str, str], None] | None = None,
) -> dict[str, Any]:
    """Create the connection; with `auth.secret`, keep the service principal's secret in a
    vault (`vault_data`, after `check_secret` accepted it) and reference it."""
    target = lookup(kind)
    check_connection_name(connection)
    app = api.call("GET", app_path)
    existing = _connections(api, app_path)
    if any(c["name"].lower() == connection.lower() for c in existing):
        raise ConnectionRequestError(
            f"the app already has a connection named {connection!r}; delete it first or choose "
            "another --connection"
        )
    second = any(c["properties"]["targetService"]["type"] == kind for c in existing)
    plan = Plan(say)
    identity, app, enabled = _resolve_identity(api, app_path, app, auth, plan)
    ctx = ProvisionContext(
        api=api,
        app=app,
        identity=identity,
        connection=connection,
        client_type=client_type,
        options=dict(options),
        admin_token=admin_token,
        say=say,
        vault_data=vault_data,
        check_secret=check_secret,
    )
    reference_enabled: list[bool] = []
    try:
        secret_block: dict[str, Any] | None = None
        if auth.secret is not None:
            _check_secret(ctx, plan, auth.secret)
            secret_block = clientsecret.store(
                ctx,
                plan,
                auth.secret,
                lambda: _reference_identity(api, app_path, plan, reference_enabled),
            )
        target_block = target.provision(ctx, plan)
        prefix = prefixed(target.key_target, connection if second else None)
        keys = write_keys(ctx, target, target_block, prefix, secret_block)
        if customized:
            keys = plan.step(
                "rename keys (--customized-keys)", lambda: apply_customized(keys, customized)
            )
        write_settings(api, app_path, keys, plan)
        record = {
            "properties": {
                "targetService": target_block,
                "authInfo": {
                    "authType": identity.auth_type,
                    "principalId": identity.principal_id,
                    "clientId": identity.client_id,
                    "tenantId": identity.tenant_id,
                },
                "clientType": client_type,
                "configurationKeys": sorted(keys),
                "createdResources": {
                    "systemIdentity": enabled or bool(reference_enabled),
                    "role": bool(ctx.options.get("_created_role", True)),
                },
            }
        }
        if secret_block is not None:
            record["properties"]["secretStore"] = secret_block
        path = f"{app_path}/connections/{connection}"
        result: dict[str, Any] = plan.step(
            f"record connection {connection!r}", lambda: api.call("PUT", path, record)
        )
        return result
    except StepFailed:
        raise
    except Exception as exc:  # outside a step: still undo everything made so far
        undone, left = plan.rollback()
        raise StepFailed("connection create", str(exc), undone, left) from None
    finally:
        for close in ctx.cleanup:
            close()


def write_keys(
    ctx: ProvisionContext,
    target: Any,
    target_block: dict[str, Any],
    prefix: str,
    secret_block: dict[str, Any] | None,
) -> dict[str, str]:
    """Every key the connection writes, before --customized-keys: the target's, then the
    identity's, then the secret's reference."""
    identity = ctx.identity
    keys = {
        (k if is_property(k) else prefix + k): v
        for k, v in target.configuration(ctx, target_block).items()
    }
    keys.update(
        identity_values(
            ctx.client_type, prefix, identity.auth_type, identity.client_id, identity.tenant_id
        )
    )
    if secret_block is not None:
        keys[secret_key(ctx.client_type, prefix, clientsecret.KEY)] = clientsecret.reference(
            secret_block
        )
    return keys


def write_settings(
    api: Management,
    app_path: str,
    keys: dict[str, str],
    plan: Plan,
    replacing: tuple[str, ...] | list[str] = (),
) -> None:
    """Write the connection's keys into the app's settings (a step, undone by restoring them
    all), in place of `replacing` (its old keys); a key of another owner is never taken."""
    before = dict(api.call("GET", app_path)["properties"].get("appSettings") or {})
    current = {k: v for k, v in before.items() if k not in replacing}

    def write() -> None:
        clashes = [k for k in keys if k in current and current[k] != keys[k]]
        if clashes:
            raise ConnectionRequestError(
                f"the app already has settings {', '.join(clashes)} with other values; rename "
                "this connection's keys with --customized-keys KEY=NEW_KEY, or remove them"
            )
        api.call("PATCH", app_path, {"properties": {"appSettings": {**current, **keys}}})

    plan.step(f"write {', '.join(sorted(keys))} into the app's settings", write)
    plan.on_undo(
        "restored the app's settings",
        lambda: api.call("PATCH", app_path, {"properties": {"appSettings": before}}),
    )


def delete(
    api: Management,
    app_path: str,
    connection: str,
    options: dict[str, Any],
    admin_token: Callable[[str], str],
    say: Callable[[str], None] = lambda _line: None,
    vault_data: VaultData | None = None,
) -> list[str]:
    path = f"{app_path}/connections/{connection}"
    record = api.call("GET", path)
    props = record["properties"]
    target = lookup(str(props["targetService"]["type"]))
    app = api.call("GET", app_path)
    auth = props["authInfo"]
    identity = Identity(
        auth["authType"], auth["principalId"], auth.get("clientId", ""), auth.get("tenantId", "")
    )
    ctx = ProvisionContext(
        api, app, identity, connection, props["clientType"], {}, admin_token, say
    )
    try:
        done = target.revert(ctx, props, options)
        if props.get("secretStore"):
            done += clientsecret.revert(api, vault_data, props["secretStore"])
    finally:
        for close in ctx.cleanup:
            close()
    for line in done:
        say(line)
    settings = dict(api.call("GET", app_path)["properties"].get("appSettings") or {})
    removed = [k for k in props.get("configurationKeys", []) if k in settings]
    if removed:
        remaining = {k: v for k, v in settings.items() if k not in removed}
        api.call("PATCH", app_path, {"properties": {"appSettings": remaining}})
        done.append(f"settings {', '.join(removed)} removed from the app")
        say(done[-1])
    api.call("DELETE", path)
    done.append(f"connection {connection!r} deleted")
    return done
