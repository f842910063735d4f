"""The one interface every connection target implements, and the registry of targets.

`provision` and `revert` run where the user is (the CLI), with the user's own rights: the
management API for Keyless resources and, for a database, the signed-in user's token as the
database administrator. `validate` runs in the server, which can issue the identity's token
without handing it to anyone. `configuration` is pure: what the app's settings should hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from keyless.connector.plan import Plan

AUTH_TYPES = ("systemAssignedIdentity", "userAssignedIdentity", "servicePrincipal")


class Management(Protocol):
    """The management API as the signed-in user (the CLI's ApiClient satisfies it)."""

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any: ...


class VaultData(Protocol):
    """A vault's data plane as the signed-in user (the CLI's `VaultData`): the JSON answer, or
    an exception with `status` (the HTTP status) and `code` (Key Vault's) when refused."""

    def __call__(
        self, vault: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class Identity:
    auth_type: str  # one of AUTH_TYPES
    principal_id: str  # object ID
    client_id: str
    tenant_id: str


@dataclass
class ProvisionContext:
    api: Management
    app: dict[str, Any]  # the source app as the API returns it
    identity: Identity
    connection: str
    client_type: str
    options: dict[str, Any]  # target-specific: server, database, vault, ...
    admin_token: Callable[[str], str]  # scope -> the signed-in user's token for it
    say: Callable[[str], None] = lambda _line: None
    # For a client secret kept in a vault (keyless.connector.clientsecret): the data plane, and
    # a check that (tenant, client ID, secret) signs the service principal in (raises if not).
    vault_data: VaultData | None = None
    check_secret: Callable[[str, str, str], None] | None = None
    # Run when the whole operation is over (after any rollback): closes database sessions.
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None  # None: not run, because an earlier check failed
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        result = "skipped" if self.passed is None else ("pass" if self.passed else "fail")
        return {"name": self.name, "result": result, "detail": self.detail, "fix": self.fix}


@dataclass
class ValidationContext:
    """What the server knows when it validates a connection (nothing here leaves it)."""

    connection: dict[str, Any]  # the connection's properties
    app_settings: dict[str, str]
    identity_problem: str | None  # why the identity is unusable, or None
    issue_token: Callable[[str], str]  # resource name -> a fresh token for the identity
    target: dict[str, Any] | None  # the target resource's properties, None if it is gone
    role_owner: Callable[[str, str], str | None]  # (server, role) -> mapped object ID
    extra: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    kind: str  # as typed after `connection create`, e.g. "postgres"
    key_target: str  # the middle of its keys, e.g. "POSTGRESQL"

    def provision(self, ctx: ProvisionContext, plan: Plan) -> dict[str, Any]:
        """Make what the connection needs; register each change's undo on `plan`. Returns
        the `targetService` block recorded on the connection."""
        ...

    def configuration(self, ctx: ProvisionContext, target: dict[str, Any]) -> dict[str, str]:
        """Key suffixes (`CONNECTIONSTRING`, `HOST`, ...) and their values."""
        ...

    def revert(
        self, ctx: ProvisionContext, connection: dict[str, Any], options: dict[str, Any]
    ) -> list[str]:
        """Undo `provision` for a recorded connection; returns what was removed. Tolerates
        what is already gone (a role dropped by hand)."""
        ...

    def validate(self, ctx: ValidationContext) -> list[Check]: ...


def sibling_path(app_id: str, resource_type: str, target: str) -> str:
    """A target given as a name in the app's resource group, or as a full resource ID."""
    if target.startswith("/subscriptions/"):
        return target
    group_id = app_id.split("/providers/", 1)[0]
    return f"{group_id}/providers/{resource_type}/{target}"


def find_target(
    ctx: ProvisionContext, resource_type: str, given: str, what: str, lister: str
) -> Any:
    """The target resource, given as a name in the app's group or as a resource ID; a target
    that is not there says how to name one in another resource group."""
    path = sibling_path(str(ctx.app["id"]), resource_type, given)
    try:
        return ctx.api.call("GET", path)
    except Exception as exc:
        if "HTTP 404" not in str(exc):
            raise
        group = path.split("/resourceGroups/", 1)[-1].split("/", 1)[0]
        raise ValueError(
            f"no {what} {given.rstrip('/').rsplit('/', 1)[-1]!r} in resource group {group!r}; "
            "for one in another resource group add --target-resource-group GROUP, or give its "
            f"resource ID with --target-id (`{lister}` shows their IDs)"
        ) from None


def configuration_check(ctx: ValidationContext, fix: str) -> Check:
    """Every key the connection wrote is still in the app's settings."""
    keys = ctx.connection.get("configurationKeys", [])
    missing = [k for k in keys if not ctx.app_settings.get(k)]
    if missing:
        return Check(
            "configuration keys",
            False,
            f"missing from the app's settings: {', '.join(missing)}",
            fix,
        )
    return Check("configuration keys", True, f"{', '.join(keys)} present")


def skipped(*names: str) -> list[Check]:
    """Checks that were not run because an earlier one failed (reported, not guessed)."""
    return [Check(name, None, "not checked: an earlier check failed") for name in names]


_TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    _TARGETS[target.kind] = target
    return target


def lookup(kind: str) -> Target:
    _load()
    try:
        return _TARGETS[kind]
    except KeyError:
        raise ValueError(
            f"unknown connection target {kind!r}; Keyless connects to {', '.join(sorted(_TARGETS))}"
        ) from None


def kinds() -> list[str]:
    _load()
    return sorted(_TARGETS)


def _load() -> None:
    from keyless.connector import keyvault, postgres  # noqa: F401 - they register themselves
