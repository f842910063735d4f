"""The one decision function: may principal P perform action A at scope S, and why.

Assignments are indexed by scope and then by holder, and group memberships by member. A scope
grants at itself and every scope below it, so a decision walks the target's ancestor scopes
(a handful: the resource, its group, the subscription, the root) and at each one intersects
who holds assignments there with the caller and the groups it is in (nested groups too). It
never looks at assignments elsewhere, however many the caller or its groups hold. The index is
rebuilt when the store's access or directory generation moves, so a revoked role stops working
on the next request in every process.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import Engine, select

from keyless.access.permissions import BUILT_IN_ROLES, Permissions
from keyless.base.scopes import ROOT, scope_key
from keyless.store.generation import ACCESS_GENERATION, read_generations
from keyless.store.models import GroupMember, RoleAssignment, RoleDefinition

__all__ = ["ACCESS_GENERATION", "AccessEngine", "AccessIndex", "Decision"]


@dataclass(frozen=True)
class Role:
    id: str
    name: str
    permissions: Permissions
    built_in: bool
    assignable_scopes: tuple[str, ...] = ("/",)


class Grant(NamedTuple):
    """One role assignment as the index holds it (a tuple: the index makes 100,000s of them)."""

    assignment_id: str
    principal_id: str  # who holds the assignment: the caller or one of its groups
    role_id: str
    scope_key: str
    scope: str


def ancestor_keys(target_key: str) -> list[str]:
    """The scope key and every scope key above it, nearest first (whole segments only)."""
    keys = [target_key]
    cut = target_key.rfind("/")
    while cut > 0:
        keys.append(target_key[:cut])
        cut = target_key.rfind("/", 0, cut)
    if target_key != ROOT:
        keys.append(ROOT)
    return keys


@dataclass(frozen=True)
class Decision:
    allowed: bool
    principal_id: str
    action: str
    scope: str
    grant: Grant | None = None
    role_name: str | None = None

    @property
    def reason(self) -> str:
        if self.grant is None:
            return (
                f"no role assignment of {self.principal_id} (or of a group it is in) at "
                f"{self.scope} or above permits {self.action}"
            )
        via = (
            ""
            if self.grant.principal_id == self.principal_id
            else (f" through group {self.grant.principal_id}")
        )
        return (
            f"granted by role {self.role_name!r} at {self.grant.scope}{via} "
            f"(assignment {self.grant.assignment_id})"
        )


@dataclass
class AccessIndex:
    roles: dict[str, Role]
    grants: dict[str, list[Grant]]  # by holder
    groups_of: dict[str, set[str]]
    grants_at: dict[str, dict[str, list[Grant]]] = field(default_factory=dict)
    _closure: dict[str, frozenset[str]] = field(default_factory=dict)
    _allows: dict[tuple[str, str, bool], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grants and not self.grants_at:
            self.grants_at = grants_by_scope(self.grants)

    def principals(self, principal_id: str) -> frozenset[str]:
        """The principal and every group it belongs to, directly or through other groups."""
        cached = self._closure.get(principal_id)
        if cached is not None:
            return cached
        seen = {principal_id}
        frontier = [principal_id]
        while frontier:
            for group in self.groups_of.get(frontier.pop(), ()):
                if group not in seen:
                    seen.add(group)
                    frontier.append(group)
        result = frozenset(seen)
        self._closure[principal_id] = result
        return result

    def _role_allows(self, role_id: str, action: str, data: bool) -> bool:
        key = (role_id, action.lower(), data)
        allowed = self._allows.get(key)
        if allowed is None:
            role = self.roles.get(role_id)
            allowed = bool(role and role.permissions.allows(action, data))
            self._allows[key] = allowed
        return allowed

    def _reaching(self, principal_id: str, scope: str) -> Iterator[Grant]:
        """The assignments that reach `scope` for this principal, nearest scope first."""
        members = self.principals(principal_id)
        grants_at = self.grants_at
        for key in ancestor_keys(scope_key(scope)):
            holders = grants_at.get(key)
            if holders is None:
                continue
            # Walk the smaller side: who holds grants here, or the caller and its groups.
            if len(holders) <= len(members):
                for holder, grants in holders.items():
                    if holder in members:
                        yield from grants
            else:
                for member in members:
                    yield from holders.get(member, ())

    def applicable(self, principal_id: str, scope: str) -> list[Grant]:
        """Every assignment that reaches `scope` for this principal (own, inherited, group)."""
        return list(self._reaching(principal_id, scope))

    def check(self, principal_id: str, action: str, scope: str, data: bool = False) -> Decision:
        for grant in self._reaching(principal_id, scope):
            if self._role_allows(grant.role_id, action, data):
                role = self.roles[grant.role_id]
                return Decision(True, principal_id, action, scope, grant, role.name)
        return Decision(False, principal_id, action, scope)


def grants_by_scope(grants: dict[str, list[Grant]]) -> dict[str, dict[str, list[Grant]]]:
    at: dict[str, dict[str, list[Grant]]] = defaultdict(dict)
    for holder, held in grants.items():
        for grant in held:
            at[grant.scope_key].setdefault(holder, []).append(grant)
    return dict(at)


def built_in_roles() -> dict[str, Role]:
    return {r.id: Role(r.id, r.name, r.permissions, True) for r in BUILT_IN_ROLES}


class AccessEngine:
    """A process's view of the access index, kept in step with the store."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._generations: tuple[int, int] = (-1, -1)
        self._index = AccessIndex(built_in_roles(), {}, {})

    def index(self) -> AccessIndex:
        with self._engine.connect() as connection:
            generations = read_generations(connection)
        return self.index_at(generations)

    def built_at(self, generations: tuple[int, int]) -> AccessIndex | None:
        """The index if it is already built for these (directory, access) generations, read
        by the caller in this request; else None (a rebuild is due, and may take a while)."""
        # Generations first: a rebuild sets the index before them, so this never pairs new
        # generations with the old index.
        if generations != self._generations:
            return None
        return self._index

    def index_at(self, generations: tuple[int, int]) -> AccessIndex:
        """The index for the (directory, access) generations the caller read in this request."""
        if generations == self._generations:
            return self._index
        with self._lock:
            if generations != self._generations:
                self._index = self._load(generations, self._generations)
                self._generations = generations
        return self._index

    def check(self, principal_id: str, action: str, scope: str, data: bool = False) -> Decision:
        return self.index().check(principal_id, action, scope, data)

    def _load(self, new: tuple[int, int], old: tuple[int, int]) -> AccessIndex:
        current = self._index
        with self._engine.connect() as connection:
            if new[1] != old[1]:
                roles = built_in_roles()
                for definition in connection.execute(select(RoleDefinition)).mappings():
                    roles[definition["id"]] = Role(
                        definition["id"],
                        definition["role_name"],
                        Permissions.from_json(definition["permissions"]),
                        False,
                        tuple(definition["assignable_scopes"]),
                    )
                grants: dict[str, list[Grant]] = defaultdict(list)
                columns = (
                    RoleAssignment.id,
                    RoleAssignment.principal_id,
                    RoleAssignment.role_definition_id,
                    RoleAssignment.scope_key,
                    RoleAssignment.scope,
                )
                for row in connection.execute(select(*columns)):
                    grants[row[1]].append(Grant(*row))
                grants_at = grants_by_scope(grants)
            else:
                roles, grants, grants_at = current.roles, current.grants, current.grants_at
            if new[0] != old[0]:
                groups_of: dict[str, set[str]] = defaultdict(set)
                for member, group in connection.execute(
                    select(GroupMember.member_id, GroupMember.group_id)
                ):
                    groups_of[member].add(group)
            else:
                groups_of = current.groups_of
        return AccessIndex(dict(roles), dict(grants), dict(groups_of), grants_at)
