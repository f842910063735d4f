"""The Key Vault target: the identity gets `Vault Secrets User` at the vault's scope, and the
app's settings say where the vault is and which scope to ask a token for.

Nothing is created inside the vault: the connection is a role assignment (recorded, so
`delete` removes exactly the one it made; an assignment that already existed is left alone).
"""

from __future__ import annotations

import uuid
from typing import Any

from keyless.connector.plan import Plan
from keyless.connector.target import (
    Check,
    ProvisionContext,
    ValidationContext,
    configuration_check,
    find_target,
    register,
    skipped,
)

VAULT_TYPE = "Keyless.Vault/vaults"
ROLE = "Vault Secrets User"
READ_ACTION = "Keyless.Vault/vaults/secrets/getSecret/action"
VAULT_AUDIENCE = "api://keyless/vault"
# What Azure's Service Connector writes: the SDK asks for this scope, Keyless maps it.
AZURE_SCOPE = "https://vault.azure.net/.default"
AUTHZ = "/providers/Keyless.Authorization/roleAssignments"


class KeyVaultTarget:
    kind = "keyvault"
    key_target = "KEYVAULT"

    def provision(self, ctx: ProvisionContext, plan: Plan) -> dict[str, Any]:
        given = str(ctx.options["vault"])
        vault = plan.step(
            f"find vault {given!r}",
            lambda: find_target(ctx, VAULT_TYPE, given, "vault", "keyless vault list"),
        )
        assignment = f"{vault['id']}{AUTHZ}/{uuid.uuid4()}"
        body = {"properties": {"roleDefinitionId": ROLE, "principalId": ctx.identity.principal_id}}

        def assign() -> bool:
            try:
                ctx.api.call("PUT", assignment, body)
            except Exception as exc:
                if "already exists" in str(exc):
                    return False  # someone gave it before: not ours to take away
                raise
            return True

        created = plan.step(
            f"give {ctx.identity.client_id or ctx.identity.principal_id} the role {ROLE!r} on "
            f"vault {vault['name']}",
            assign,
        )
        if created:
            plan.on_undo(
                f"removed the {ROLE!r} assignment", lambda: ctx.api.call("DELETE", assignment)
            )
        block: dict[str, Any] = {
            "type": self.kind,
            "id": vault["id"],
            "endpoint": str(vault["properties"]["vaultUri"]),
        }
        if created:
            block["roleAssignmentId"] = assignment
        return block

    def configuration(self, ctx: ProvisionContext, target: dict[str, Any]) -> dict[str, str]:
        return {"RESOURCEENDPOINT": str(target["endpoint"]), "SCOPE": AZURE_SCOPE}

    def revert(
        self, ctx: ProvisionContext, connection: dict[str, Any], options: dict[str, Any]
    ) -> list[str]:
        assignment = connection["targetService"].get("roleAssignmentId")
        if not assignment:
            return [f"the {ROLE!r} assignment existed before the connection; left in place"]
        try:
            ctx.api.call("DELETE", str(assignment))
        except Exception as exc:
            if "HTTP 404" not in str(exc):
                raise
            return [f"the {ROLE!r} assignment was already gone"]
        return [f"the {ROLE!r} assignment on the vault removed"]

    def validate(self, ctx: ValidationContext) -> list[Check]:
        target = ctx.connection["targetService"]
        checks = [configuration_check(ctx, "delete the connection and create it again")]
        if ctx.identity_problem is not None:
            checks.append(
                Check(
                    "identity",
                    False,
                    ctx.identity_problem,
                    "assign the identity to the app again, or delete this connection",
                )
            )
            return checks + skipped("token", "role")
        checks.append(Check("identity", True, "the identity exists and is the app's"))
        if ctx.target is None:
            checks.append(
                Check(
                    "target",
                    False,
                    f"the vault {target['id']} no longer exists",
                    "delete this connection; create the vault, then connect again",
                )
            )
            return checks + skipped("token", "role")
        checks.append(Check("target", True, f"vault {target['endpoint']} exists"))
        try:
            ctx.issue_token(VAULT_AUDIENCE)
            checks.append(Check("token", True, f"a token for {VAULT_AUDIENCE} was issued"))
        except Exception as exc:
            reason = getattr(exc, "description", None) or str(exc)
            checks.append(Check("token", False, f"no token for the identity: {reason}", ""))
            return checks + skipped("role")
        allowed = ctx.extra["allowed"](READ_ACTION, str(target["id"]))
        checks.append(
            Check(
                "role",
                bool(allowed),
                f"the identity may {'' if allowed else 'not '}read secrets ({READ_ACTION})",
                ""
                if allowed
                else f"give the identity {ROLE!r} at the vault's scope (`keyless role "
                "assignment create`), or delete this connection and create it again",
            )
        )
        return checks


KEYVAULT = register(KeyVaultTarget())
