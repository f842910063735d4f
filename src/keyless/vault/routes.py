"""Which operation a vault request's method and path name, with the data action it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from keyless.vault.backup import MAX_RESTORE_BODY, backup_secret, restore_secret
from keyless.vault.errors import VaultError
from keyless.vault.operations import (
    _NO_QUERY,
    BACKUP,
    DELETE,
    GET_SECRET,
    PURGE,
    READ_METADATA,
    RECOVER,
    RESTORE,
    SET_SECRET,
    UPDATE,
    Operation,
    _secret_name,
    delete_secret,
    get_deleted,
    get_secret,
    list_deleted,
    list_secrets,
    list_versions,
    purge_secret,
    recover_secret,
    set_secret,
    update_secret,
)


def resolve(method: str, path: str, query: Mapping[str, str] = _NO_QUERY) -> Operation:
    """The operation a method and path name (a trailing slash means the latest version), with
    the request's query parameters."""
    return replace(_route(method, path), query=query)


def _route(method: str, path: str) -> Operation:
    parts = path.split("/")[1:]
    if parts and parts[-1] == "" and len(parts) == 3:  # /secrets/{name}/
        parts = parts[:-1]
    collection = parts[0] if parts else ""
    rest = parts[1:]
    if collection == "secrets":
        if not rest and method == "GET":
            return Operation(READ_METADATA, None, None, list_secrets, False)
        if rest == ["restore"] and method == "POST":  # the name is in the backup
            return Operation(RESTORE, None, None, restore_secret, True, max_body=MAX_RESTORE_BODY)
        if len(rest) == 1 and rest[0]:
            name = _secret_name(rest[0])
            if method == "PUT":
                return Operation(SET_SECRET, name, None, set_secret, True)
            if method == "GET":
                return Operation(GET_SECRET, name, None, get_secret, False)
            if method == "PATCH":
                return Operation(UPDATE, name, None, update_secret, True)
            if method == "DELETE":
                return Operation(DELETE, name, None, delete_secret, True)
        if len(rest) == 2 and rest[0]:
            name = _secret_name(rest[0])
            if rest[1] == "versions" and method == "GET":
                return Operation(READ_METADATA, name, None, list_versions, False)
            if rest[1] == "backup" and method == "POST":
                return Operation(BACKUP, name, None, backup_secret, False)
            if method == "GET":
                return Operation(GET_SECRET, name, rest[1], get_secret, False)
            if method == "PATCH":
                return Operation(UPDATE, name, rest[1], update_secret, True)
    elif collection == "deletedsecrets":
        if not rest and method == "GET":
            return Operation(READ_METADATA, None, None, list_deleted, False)
        if len(rest) == 1 and rest[0]:
            name = _secret_name(rest[0])
            if method == "GET":
                return Operation(READ_METADATA, name, None, get_deleted, False)
            if method == "DELETE":
                return Operation(PURGE, name, None, purge_secret, True)
        if len(rest) == 2 and rest[1] == "recover" and method == "POST":
            return Operation(RECOVER, _secret_name(rest[0]), None, recover_secret, True)
    raise VaultError(
        404,
        "NotFound",
        f"this vault has no {method} {path[:200]}; Keyless vaults serve /secrets and "
        "/deletedsecrets as Azure Key Vault does",
    )
