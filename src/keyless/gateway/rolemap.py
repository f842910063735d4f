"""The role mappings and group memberships as one gateway process holds them.

Built from the store when the directory generation moves (mapping writes, group membership
changes and principal deletions all bump it), so a bind costs no store read beyond the
generation the authority's cache reads anyway, and a removed mapping or membership is refused
on the very next bind in every process.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from keyless.store.models import DatabaseRoleMapping, GroupMember


@dataclass(frozen=True)
class Owner:
    tenant_id: str
    principal_id: str
    principal_type: str


@dataclass
class RoleMap:
    generation: int
    owners: dict[tuple[str, str], Owner]  # (server key, role) -> who the role belongs to
    groups_of: dict[str, frozenset[str]]  # member -> groups it is directly in
    _closure: dict[str, frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def owner(self, server: str, role: str) -> Owner | None:
        return self.owners.get((server, role))

    def principals(self, principal_id: str) -> frozenset[str]:
        """The principal and every group it is in, directly or through nested groups."""
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
        with self._lock:
            if len(self._closure) > 100_000:  # bounded: one entry per principal seen binding
                self._closure.clear()
            self._closure[principal_id] = result
        return result


class RoleMapCache:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._map = RoleMap(generation=-1, owners={}, groups_of={})

    def at(self, generation: int) -> RoleMap:
        """The mappings as of `generation` (the directory generation the caller just read)."""
        current = self._map
        if current.generation == generation:
            return current
        with self._lock:
            if self._map.generation != generation:
                self._map = self._load(generation)
            return self._map

    def _load(self, generation: int) -> RoleMap:
        # Read after the generation was: a write landing in between is labelled with the older
        # generation and simply read again on the next bind, never the other way round.
        owners: dict[tuple[str, str], Owner] = {}
        groups: dict[str, set[str]] = defaultdict(set)
        with self._engine.connect() as connection:
            for row in connection.execute(
                select(
                    DatabaseRoleMapping.server_key,
                    DatabaseRoleMapping.role_name,
                    DatabaseRoleMapping.tenant_id,
                    DatabaseRoleMapping.principal_id,
                    DatabaseRoleMapping.principal_type,
                )
            ):
                owners[(row[0], row[1])] = Owner(row[2], row[3], row[4])
            for member, group in connection.execute(
                select(GroupMember.member_id, GroupMember.group_id)
            ):
                groups[member].add(group)
        return RoleMap(
            generation=generation,
            owners=owners,
            groups_of={member: frozenset(g) for member, g in groups.items()},
        )
