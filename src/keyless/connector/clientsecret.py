"""A service principal connection with a client secret: the secret goes into a vault, the app's
settings get a vault reference to it (`AZURE_<TARGET>_CLIENTSECRET=@Keyless.Vault(SecretUri=...)`),
never the secret (docs/design.md, "what a connection writes").

`keyless app run` resolves the reference with the app's reference identity (its
system-assigned identity unless `keyVaultReferenceIdentity` names another), so that identity
gets `Vault Secrets User` on the one secret, unless it can read it already. Each change is a
step of the connection's plan with its undo; `revert` takes back what `store` made, recorded in
the connection's `secretStore` block: the secret (deleted, then purged: a soft-deleted client
secret would stay recoverable for the vault's retention) and the role assignment.

The value lives in memory only, in `ClientSecret` (left out of its repr); the vault's answers
are never echoed, and no message here quotes it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keyless.base.errors import KeylessError
from keyless.connector.plan import Plan
from keyless.connector.target import (
    Check,
    Management,
    ProvisionContext,
    VaultData,
    sibling_path,
)

VAULT_TYPE = "Keyless.Vault/vaults"
KEY = "CLIENTSECRET"
READER_ROLE = "Vault Secrets User"
AUTHZ = "/providers/Keyless.Authorization"
_SECRETS = "Keyless.Vault/vaults/secrets/"
GET_SECRET = _SECRETS + "getSecret/action"
# What the user needs on the vault so that delete (and a failed create) can erase the secret.
WRITER_ACTIONS = {
    _SECRETS + "setSecret/action": "set",
    _SECRETS + "readMetadata/action": "read metadata",
    _SECRETS + "delete": "delete",
    _SECRETS + "purge/action": "purge",
}
MAX_LENGTH = 25 * 1024  # the vault's limit on a value


class SecretError(KeylessError, ValueError):
    """The secret cannot be stored as asked; nothing was changed."""


@dataclass(frozen=True)
class ClientSecret:
    vault: str  # the vault to keep it in: a name in the app's group, or a resource ID
    value: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.value:
            raise SecretError("the client secret is empty; give the service principal's secret")
        if len(self.value) > MAX_LENGTH:
            raise SecretError(
                f"the client secret is longer than a vault holds ({MAX_LENGTH} characters)"
            )
        if not self.vault:
            raise SecretError(
                "a client secret is kept in a vault: name one with --vault NAME (the app's "
                "settings get a reference to it, never the secret)"
            )


def secret_name(app: str, connection: str) -> str:
    """`{app}-{connection}-client-secret`, in the letters a secret name allows."""
    raw = f"{app}-{connection}-client-secret"
    return re.sub(r"-{2,}", "-", re.sub(r"[^0-9A-Za-z-]", "-", raw))[:127].strip("-")


def reference(block: dict[str, Any]) -> str:
    """The setting's value: a reference that follows the secret's latest version, so a new
    version (after `keyless ad sp credential reset`) reaches the app at its next start."""
    return f"@Keyless.Vault(SecretUri={block['secretUri']})"


def _status(exc: Exception) -> int:
    return int(getattr(exc, "status", 0) or 0)


def _missing_actions(api: Management, scope: str, principal: str | None) -> list[str]:
    body: dict[str, Any] = {"actions": [f"data:{a}" for a in (*WRITER_ACTIONS, GET_SECRET)]}
    if principal is not None:
        body["principalId"] = principal
    answer = api.call("POST", f"{scope}{AUTHZ}/checkAccess", body)
    return [r["action"] for r in answer["results"] if not r["allowed"]]


def store(
    ctx: ProvisionContext,
    plan: Plan,
    secret: ClientSecret,
    reader: Callable[[], tuple[str, str]],
) -> dict[str, Any]:
    """Keep the secret in its vault and let the app's reference identity read it. `reader`
    gives (the reference identity's object ID, how to name it), enabling it if need be (a step
    of the plan). Returns the `secretStore` block to record."""
    vault_data = ctx.vault_data
    if vault_data is None:
        raise SecretError("this client cannot store secrets in a vault")
    path = sibling_path(str(ctx.app["id"]), VAULT_TYPE, secret.vault)
    vault = plan.step(f"find vault {secret.vault!r}", lambda: ctx.api.call("GET", path))
    name = secret_name(str(ctx.app["name"]), ctx.connection)
    scope = f"{vault['id']}/secrets/{name}"

    def check_rights() -> None:
        missing = [a for a in _missing_actions(ctx.api, scope, None) if a in WRITER_ACTIONS]
        if missing:
            raise SecretError(
                f"you may not {', '.join(WRITER_ACTIONS[a] for a in missing)} secrets in vault "
                f"{vault['name']} ({', '.join(missing)}); a connection keeps its client secret "
                "there and erases it on delete, which needs Vault Administrator on the vault "
                f'(`keyless role assignment create --assignee me --role "Vault Administrator" '
                f"--scope {vault['id']}`)"
            )

    plan.step(f"check your rights on vault {vault['name']}", check_rights)

    def check_free() -> None:
        for probe, what in ((f"/secrets/{name}/versions", "a secret"),
                            (f"/deletedsecrets/{name}", "a deleted secret")):  # fmt: skip
            try:
                vault_data(vault["name"], "GET", probe)
            except Exception as exc:
                if _status(exc) == 404:
                    continue
                raise
            raise SecretError(
                f"vault {vault['name']} already has {what} named {name!r}, which this "
                "connection did not make; name the connection otherwise (--connection), or "
                "remove that secret"
            )

    plan.step(f"check that the secret name {name!r} is free", check_free)
    body = {
        "value": secret.value,
        "contentType": "client secret",
        "tags": {
            "keylessConnection": f"{ctx.app['name']}/{ctx.connection}"[:256],
            "clientId": ctx.identity.client_id,
        },
    }
    plan.step(
        f"store the client secret in vault {vault['name']} as {name!r}",
        lambda: vault_data(vault["name"], "PUT", f"/secrets/{name}", body),
    )
    plan.on_undo(
        f"deleted and purged the secret {name!r} from vault {vault['name']}",
        lambda: _erase(vault_data, str(vault["name"]), name),
    )
    principal, who = reader()
    block: dict[str, Any] = {
        "vaultId": vault["id"],
        "secretName": name,
        "secretUri": f"{str(vault['properties']['vaultUri']).rstrip('/')}/secrets/{name}",
        "readerPrincipalId": principal,
    }
    can_read = plan.step(
        f"check whether {who} may read the secret",
        lambda: GET_SECRET not in _missing_actions(ctx.api, scope, principal),
    )
    if not can_read:
        assignment = f"{scope}{AUTHZ}/roleAssignments/{uuid.uuid4()}"
        plan.step(
            f"give {who} the role {READER_ROLE!r} on the secret {name!r}",
            lambda: ctx.api.call(
                "PUT",
                assignment,
                {"properties": {"roleDefinitionId": READER_ROLE, "principalId": principal}},
            ),
        )
        plan.on_undo(
            f"removed the {READER_ROLE!r} assignment on the secret",
            lambda: ctx.api.call("DELETE", assignment),
        )
        block["roleAssignmentId"] = assignment
    return block


def _erase(vault_data: VaultData, vault: str, name: str) -> None:
    """Delete, then purge; what is already gone is fine (so a second `delete` completes)."""
    for method, path in (("DELETE", f"/secrets/{name}"), ("DELETE", f"/deletedsecrets/{name}")):
        try:
            vault_data(vault, method, path)
        except Exception as exc:
            if _status(exc) != 404:
                raise


def revert(api: Management, vault_data: VaultData | None, block: dict[str, Any]) -> list[str]:
    """Undo `store` for a recorded connection; returns what was removed."""
    done: list[str] = []
    assignment = block.get("roleAssignmentId")
    if assignment:
        try:
            api.call("DELETE", str(assignment))
            done.append(f"the {READER_ROLE!r} assignment on the client secret removed")
        except Exception as exc:
            if "HTTP 404" not in str(exc):
                raise
            done.append(f"the {READER_ROLE!r} assignment on the client secret was already gone")
    if vault_data is None:
        raise SecretError("this client cannot remove secrets from a vault")
    vault = str(block["vaultId"]).rstrip("/").rsplit("/", 1)[-1]
    try:
        _erase(vault_data, vault, str(block["secretName"]))
    except Exception as exc:
        if getattr(exc, "code", "") == "VaultNotFound":
            return [*done, f"vault {vault} no longer exists; its secrets went with it"]
        raise
    done.append(f"the client secret {block['secretName']!r} deleted and purged from vault {vault}")
    return done


def checks(
    block: dict[str, Any],
    settings: dict[str, str],
    secret_problem: str | None,
    reader_problem: str | None,
) -> list[Check]:
    """What `validate` reports about the client secret: the setting still holds the reference,
    the secret is there and servable, and the app's reference identity may read it (so
    `keyless app run` resolves it). Never reads the value."""
    expected = reference(block)
    out = []
    if expected in settings.values():
        out.append(Check("client secret reference", True, f"a setting holds {expected}"))
    else:
        out.append(
            Check(
                "client secret reference",
                False,
                f"no app setting holds {expected} any more",
                "delete the connection and create it again",
            )
        )
    if secret_problem is not None:
        out.append(
            Check(
                "client secret",
                False,
                secret_problem,
                "delete the connection and create it again with the service principal's "
                "current secret",
            )
        )
    else:
        out.append(Check("client secret", True, f"{block['secretName']} is in its vault"))
    if reader_problem is not None:
        out.append(
            Check(
                "client secret readable by the app",
                False,
                reader_problem,
                f"give the app's reference identity {READER_ROLE!r} on the secret "
                f"({block['vaultId']}/secrets/{block['secretName']}), or delete the connection "
                "and create it again",
            )
        )
    else:
        out.append(
            Check(
                "client secret readable by the app",
                True,
                "the app's reference identity may read it (keyless app run resolves it)",
            )
        )
    return out
