"""Whether a scope names something that exists: asked here, answered by the resources layer.

A role assignment or a custom role's assignable scope must name a resource group or resource
that exists. Those live in keyless.resources, a layer above this one, so access does not import
it: the layer that knows registers its lookups here when the server is composed
(keyless.server.app), and until it has, every check refuses rather than letting an assignment
at an unchecked scope through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from keyless.base.errors import KeylessError
from keyless.base.scopes import Scope

# Each raises the layer's not-found error (a ResourceError) when the thing is missing.
FindGroup = Callable[[Session, str, str, str], object]  # (session, tenant, subscription, name)
FindResource = Callable[[Session, str, Scope], object]  # (session, tenant, scope)


class LookupsMissing(KeylessError):
    """The server was composed without registering its resource lookups: a wiring bug."""

    status = 500
    code = "InternalServerError"


@dataclass(frozen=True)
class _Lookups:
    find_group: FindGroup
    find_resource: FindResource


_registered: _Lookups | None = None


def register_lookups(find_group: FindGroup, find_resource: FindResource) -> None:
    """Called once at composition; registering again replaces (a test app built twice)."""
    global _registered
    _registered = _Lookups(find_group, find_resource)


def _lookups() -> _Lookups:
    if _registered is None:
        raise LookupsMissing(
            "no resource lookups are registered with keyless.access.existence; the server "
            "registers them in keyless.server.app.create_app"
        )
    return _registered


def require_group(session: Session, tenant_id: str, subscription_id: str, name: str) -> None:
    _lookups().find_group(session, tenant_id, subscription_id, name)


def require_resource(session: Session, tenant_id: str, scope: Scope) -> None:
    _lookups().find_resource(session, tenant_id, scope)
