"""ARM-shaped scopes: `/`, `/subscriptions/{sub}`, `.../resourceGroups/{rg}`,
`.../providers/{Namespace}/{type}/{name}` (and nested child types).

A scope is a prefix of a resource ID, compared case-insensitively segment by segment, as ARM
does; `scope_key` is the canonical lower-case form stored and indexed.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from keyless.base.errors import KeylessError

ROOT = "/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$")
_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9]*\.[A-Za-z][A-Za-z0-9.]*$")
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
MAX_SCOPE_LENGTH = 1024


class ScopeError(KeylessError, ValueError):
    """The scope or resource ID is malformed; the message says which part and why."""

    code = "InvalidResourceId"


@dataclass(frozen=True)
class Scope:
    """A parsed scope. `resource_types`/`resource_names` hold nested types for child resources."""

    subscription: str | None = None
    resource_group: str | None = None
    namespace: str | None = None
    resource_types: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    @property
    def level(self) -> str:
        if self.subscription is None:
            return "root"
        if self.resource_group is None:
            return "subscription"
        if self.namespace is None:
            return "resourceGroup"
        return "resource"

    @property
    def resource_type(self) -> str:
        """`Namespace/type[/child]`, e.g. `Keyless.Web/apps`."""
        return "/".join([self.namespace or "", *self.resource_types])

    @property
    def name(self) -> str:
        return self.resource_names[-1] if self.resource_names else ""

    def id(self) -> str:
        if self.subscription is None:
            return ROOT
        parts = ["", "subscriptions", self.subscription]
        if self.resource_group is not None:
            parts += ["resourceGroups", self.resource_group]
        if self.namespace is not None:
            parts += ["providers", self.namespace]
            for kind, name in zip(self.resource_types, self.resource_names, strict=True):
                parts += [kind, name]
        return "/".join(parts)

    def key(self) -> str:
        return scope_key(self.id())

    def parent(self) -> Scope | None:
        if self.level == "root":
            return None
        if self.level == "subscription":
            return Scope()
        if self.level == "resourceGroup":
            return Scope(self.subscription)
        if len(self.resource_types) > 1:
            return Scope(
                self.subscription,
                self.resource_group,
                self.namespace,
                self.resource_types[:-1],
                self.resource_names[:-1],
            )
        return Scope(self.subscription, self.resource_group)


def scope_key(scope_id: str) -> str:
    return scope_id.lower().rstrip("/") or ROOT


def is_within(scope_key_: str, target_key: str) -> bool:
    """True when `target_key` is `scope_key_` or lies below it (whole segments only)."""
    if scope_key_ == ROOT:
        return True
    return target_key == scope_key_ or target_key.startswith(scope_key_ + "/")


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ScopeError(
            f"the {what} {name[:100]!r} is not valid: use 1 to 90 letters, digits, '.', '_', '-', "
            "'(' or ')', starting with a letter or digit"
        )
    return name


def _check_guid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ScopeError(f"the subscription ID {value[:100]!r} is not a GUID") from None


def parse_scope(scope_id: str) -> Scope:
    """Parse and validate; raises ScopeError naming the part that is wrong."""
    if not isinstance(scope_id, str) or not scope_id.startswith("/"):
        raise ScopeError("a scope starts with '/', e.g. /subscriptions/{id}/resourceGroups/{name}")
    if len(scope_id) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"the scope is longer than {MAX_SCOPE_LENGTH} characters")
    if scope_id == ROOT:
        return Scope()
    parts = scope_id.rstrip("/").split("/")[1:]
    if any(p == "" for p in parts):
        raise ScopeError("the scope has an empty segment ('//')")
    if parts[0].lower() != "subscriptions" or len(parts) < 2:
        raise ScopeError("a scope below / starts with /subscriptions/{subscriptionId}")
    subscription = _check_guid(parts[1])
    rest = parts[2:]
    if not rest:
        return Scope(subscription)
    if rest[0].lower() != "resourcegroups" or len(rest) < 2:
        raise ScopeError("after the subscription comes /resourceGroups/{name}")
    group = check_name(rest[1], "resource group name")
    rest = rest[2:]
    if not rest:
        return Scope(subscription, group)
    if rest[0].lower() != "providers" or len(rest) < 4 or len(rest) % 2 != 0:
        raise ScopeError(
            "a resource ID continues /providers/{Namespace}/{type}/{name}[/{childType}/{name}]"
        )
    namespace = rest[1]
    if not _NAMESPACE.match(namespace):
        raise ScopeError(f"{namespace[:100]!r} is not a resource provider namespace (Keyless.Web)")
    types, names = [], []
    for kind, name in zip(rest[2::2], rest[3::2], strict=True):
        if not _TYPE.match(kind):
            raise ScopeError(f"{kind[:100]!r} is not a resource type name")
        types.append(kind)
        names.append(check_name(name, "resource name"))
    return Scope(subscription, group, namespace, tuple(types), tuple(names))
