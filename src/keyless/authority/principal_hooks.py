"""What must go when a principal leaves the directory, for parts above the authority.

The directory deletes a principal's credentials, group memberships and role assignments itself.
Grants that higher parts keep (the token gateway's database role mappings) are theirs to
remove; they register here, and the directory calls them in the deleting transaction, so no
grant outlives its holder and nothing is left half-removed. The authority never imports them.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

# (session, tenant ID, object ID) of the principal being deleted, inside its transaction.
PrincipalRemoved = Callable[[Session, str, str], None]

_on_removed: list[PrincipalRemoved] = []


def on_principal_removed(hook: PrincipalRemoved) -> None:
    """Register `hook` once (registering the same function again changes nothing)."""
    if hook not in _on_removed:
        _on_removed.append(hook)


def principal_removed(session: Session, tenant_id: str, object_id: str) -> None:
    for hook in _on_removed:
        hook(session, tenant_id, object_id)
