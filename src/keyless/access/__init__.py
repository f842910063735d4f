"""Role-based access control (keyless.access): role definitions, assignments at scopes, and the
decision function every part calls."""

from keyless.access.engine import AccessEngine, AccessIndex, Decision
from keyless.base.scopes import Scope, ScopeError, parse_scope

__all__ = ["AccessEngine", "AccessIndex", "Decision", "Scope", "ScopeError", "parse_scope"]
