"""ARM paths and IDs as the CLI builds them: the subscription to act in, names as path
segments, scopes the user typed, and the resource group an ID names.

The server validates and authorises; these only stop what would change which path is meant.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from keyless.cli.admin import call
from keyless.cli.options import paths_for
from keyless.cli.output import fail
from keyless.cli.session import CliError, signed_in

APP_TYPE = "Keyless.Web/apps"
IDENTITY_TYPE = "Keyless.ManagedIdentity/userAssignedIdentities"
AUTHZ = "/providers/Keyless.Authorization"


def token_of(data_dir: Any) -> dict[str, Any]:
    """The cached sign-in, refreshed (or signed in again, no password) when it has expired."""
    try:
        return signed_in(paths_for(data_dir))
    except CliError as exc:
        fail(str(exc))


def subscription_of(data_dir: Any, explicit: str | None) -> str:
    """--subscription as a GUID or a display name; by default the signed-in subscription."""
    if explicit:
        try:
            return str(uuid.UUID(explicit))
        except ValueError:
            pass
        found = [
            s["subscriptionId"]
            for s in call(data_dir, "GET", "/subscriptions")["value"]
            if str(s.get("displayName", "")).lower() == explicit.lower()
        ]
        if len(found) != 1:
            fail(
                f"{'several subscriptions are' if found else 'no subscription is'} named "
                f"{explicit[:100]!r}; give its ID (`keyless account list` shows them)"
            )
        return str(found[0])
    subscription = token_of(data_dir).get("subscription")
    if not subscription:
        fail(
            "your sign-in has no default subscription; pass --subscription "
            "(`keyless account list` shows them)"
        )
    return str(subscription)


def segment(value: str, what: str) -> str:
    """A name as one URL path segment. '/' or a leading '.' would change which path is meant,
    so they stop here; the server judges the rest and says what a valid name is."""
    if not value or "/" in value or value.startswith("."):
        fail(
            f"the {what} {value[:100]!r} is not valid: use 1 to 90 letters, digits, '.', '_', "
            "'-', '(' or ')', starting with a letter or digit"
        )
    return quote(value, safe="()")


def scope_path(scope: str, what: str = "scope") -> str:
    """A scope or resource ID the user typed, as a URL path ('' for the root scope)."""
    if not scope.startswith("/"):
        fail(
            f"the {what} {scope[:200]!r} is not valid: a scope starts with '/', e.g. "
            "/subscriptions/{id}/resourceGroups/{name}"
        )
    parts = scope.rstrip("/").split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        fail(f"the {what} {scope[:200]!r} is not valid: it has an empty, '.' or '..' segment")
    return "".join("/" + quote(p, safe="()") for p in parts)


# The server's scope rules (keyless.access.scopes) are the reference; importing them from here
# would load the access engine and the store into every CLI process, so the two one-line rules
# the CLI needs are restated until they live in a layer the CLI can import cheaply.
def scope_key(scope: str) -> str:
    return scope.lower().rstrip("/") or "/"


def is_within(outer: str, inner: str) -> bool:
    """`inner` is `outer` or lies below it (keys, whole segments)."""
    return outer == "/" or inner == outer or inner.startswith(outer + "/")


def group_path(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{segment(group, 'resource group name')}"


def resource_path(subscription: str, group: str, type_name: str, name: str) -> str:
    return f"{group_path(subscription, group)}/providers/{type_name}/{segment(name, 'name')}"


def resource_id(subscription: str, group: str, type_name: str, name: str) -> str:
    segment(group, "resource group name")
    segment(name, "name")
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{type_name}/{name}"


def group_of(resource_id_: str) -> str | None:
    parts = resource_id_.split("/")
    return parts[4] if len(parts) > 4 and parts[3].lower() == "resourcegroups" else None


def list_resources(
    data_dir: Any, sub: str, group: str | None, type_name: str
) -> list[dict[str, Any]]:
    """Resources of one type in a group, or in the whole subscription without one."""
    if group is None:
        path, params = f"/subscriptions/{sub}/resources", {"resourceType": type_name}
        return list(call(data_dir, "GET", path, params=params)["value"])
    return list(call(data_dir, "GET", f"{group_path(sub, group)}/providers/{type_name}")["value"])
