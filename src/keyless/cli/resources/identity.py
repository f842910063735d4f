"""`keyless identity`: user-assigned managed identities, in the shape of `az identity`."""

from __future__ import annotations

from typing import Any

import typer

from keyless.cli.resources.arm import IDENTITY_TYPE, group_of
from keyless.cli.resources.kind import ResourceKind, add_commands

identity_app = typer.Typer(help="User-assigned managed identities.", no_args_is_help=True)


def identity_json(resource: dict[str, Any]) -> dict[str, Any]:
    """As `az identity show` prints it: the properties flattened beside the name."""
    properties = {
        k: v for k, v in resource.get("properties", {}).items() if k != "provisioningState"
    }
    return {
        "id": resource["id"],
        "name": resource["name"],
        "type": resource["type"],
        "resourceGroup": group_of(resource["id"]),
        "location": resource.get("location"),
        "tags": resource.get("tags", {}),
        **properties,
        "systemData": resource.get("systemData"),
    }


IDENTITY = ResourceKind(
    type_name=IDENTITY_TYPE,
    to_json=identity_json,
    columns=["name", "resourceGroup", "location", "clientId", "principalId"],
    create_help="Create a user-assigned identity: a resource of its own, with its own "
    "principal, that any number of apps can use.",
    list_help="User-assigned identities you may read.",
    show_help="One user-assigned identity.",
    delete_help="Delete a user-assigned identity: it is detached from every app that uses it, "
    "and its role assignments go with it.",
)
add_commands(identity_app, IDENTITY)
