"""`connection update` and `connection repair`: make an existing connection what its record
(and the options given) say it is, without deleting it.

Both re-run the target's provisioning with the recorded target: each step is idempotent (a
role that exists and is Keyless's is kept, the mapping is written again, grants are granted
again), so what was lost (a role dropped by hand, a mapping removed) comes back and nothing
else changes. Then the keys are computed again (for a new client type or identity) and written
in place of the old ones. A failure undoes what this run made, as `create` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from keyless.connector.keys import prefixed
from keyless.connector.plan import Plan, StepFailed
from keyless.connector.service import (
    AuthChoice,
    ConnectionRequestError,
    _resolve_identity,
    write_keys,
    write_settings,
)
from keyless.connector.target import Identity, Management, ProvisionContext, VaultData, lookup

# What a connection's record holds (the API adds provisioningState to what it shows).
RECORDED = (
    "targetService", "authInfo", "clientType", "configurationKeys", "createdResources",
    "secretStore",
)  # fmt: skip


def _options(kind: str, target: dict[str, Any]) -> dict[str, Any]:
    """The create options a recorded target block stands for."""
    if kind == "postgres":
        return {"server": target["id"], "database": target["database"], "role": target["role"]}
    return {"vault": target["id"]}


def _prefix(key_target: str, connection: str, recorded: list[str]) -> str:
    """The prefix the connection's keys were written with (a second connection's has its
    name in it)."""
    own = prefixed(key_target, connection)
    return own if any(k.startswith(own) for k in recorded) else prefixed(key_target, None)


def change(
    api: Management,
    app_path: str,
    connection: str,
    admin_token: Callable[[str], str],
    client_type: str | None = None,
    auth: AuthChoice | None = None,
    say: Callable[[str], None] = lambda _line: None,
    vault_data: VaultData | None = None,
) -> dict[str, Any]:
    """Re-provision the connection (with a new client type and/or identity if given) and
    write its keys again; returns the updated record."""
    path = f"{app_path}/connections/{connection}"
    record = api.call("GET", path)
    props = record["properties"]
    kind = str(props["targetService"]["type"])
    target = lookup(kind)
    if auth is not None and auth.secret is not None:
        raise ConnectionRequestError(
            "a new --secret is kept by `connection create`: delete this connection and create "
            "it again with the secret"
        )
    if auth is not None and props.get("secretStore"):
        raise ConnectionRequestError(
            "this connection keeps a service principal's secret; to connect as another "
            "identity, delete it and create it again"
        )
    if auth is not None and kind != "postgres":
        raise ConnectionRequestError(
            f"changing the identity of a {kind} connection is not supported: delete it and "
            "create it again with the new identity"
        )
    old = props["authInfo"]
    plan = Plan(say)
    app = api.call("GET", app_path)
    was = Identity(
        str(old["authType"]),
        str(old["principalId"]),
        str(old.get("clientId", "")),
        str(old.get("tenantId", "")),
    )
    if auth is None:
        identity = was
    else:
        identity, app, _enabled = _resolve_identity(api, app_path, app, auth, plan)
    ctx = ProvisionContext(
        api=api,
        app=app,
        identity=identity,
        connection=connection,
        client_type=client_type or str(props["clientType"]),
        options=_options(kind, props["targetService"]),
        admin_token=admin_token,
        say=say,
        vault_data=vault_data,
    )
    recorded = list(props.get("configurationKeys", []))
    try:
        if kind == "postgres" and identity.principal_id != old["principalId"]:
            _remap(ctx, plan, props["targetService"], str(old["principalId"]))
        prefix = _prefix(target.key_target, connection, recorded)
        secret = props.get("secretStore")
        as_made = dataclasses.replace(ctx, identity=was, client_type=str(props["clientType"]))
        renamed = set(write_keys(as_made, target, props["targetService"], prefix, secret)) != set(
            recorded
        )
        if renamed and (client_type is not None or auth is not None):
            raise ConnectionRequestError(
                "its keys were renamed when it was created (--customized-keys), so new ones "
                "cannot be written in their place; delete the connection and create it again"
            )
        block = {**props["targetService"], **target.provision(ctx, plan)}
        keys = write_keys(ctx, target, block, prefix, secret)
        if renamed:
            say("its keys were renamed at create (--customized-keys): left as they are")
            keys = {k: "" for k in recorded}
        else:
            write_settings(api, app_path, keys, plan, replacing=recorded)
        updated = {
            **{k: v for k, v in props.items() if k in RECORDED},
            "targetService": block,
            "clientType": ctx.client_type,
            "authInfo": {
                "authType": identity.auth_type,
                "principalId": identity.principal_id,
                "clientId": identity.client_id,
                "tenantId": identity.tenant_id,
            },
            "configurationKeys": sorted(keys),
        }
        result: dict[str, Any] = plan.step(
            f"record connection {connection!r}",
            lambda: api.call("PUT", path, {"properties": updated}),
        )
        return result
    except StepFailed:
        raise
    except Exception as exc:  # outside a step: still undo everything made so far
        undone, left = plan.rollback()
        raise StepFailed("connection update", str(exc), undone, left) from None
    finally:
        for close in ctx.cleanup:
            close()


def _remap(ctx: ProvisionContext, plan: Plan, target: dict[str, Any], old: str) -> None:
    """Let the new identity log in as the connection's role (and the old one no longer)."""
    mapping = f"{target['id']}/roleMappings/{target['role']}"
    plan.step(
        f"map role {target['role']!r} to {ctx.identity.auth_type} "
        f"{ctx.identity.client_id or ctx.identity.principal_id}",
        lambda: ctx.api.call(
            "PUT", mapping, {"properties": {"principalId": ctx.identity.principal_id}}
        ),
    )
    plan.on_undo(
        f"mapped role {target['role']!r} back to its identity",
        lambda: ctx.api.call("PUT", mapping, {"properties": {"principalId": old}}),
    )
