"""Which operation a vault request's method and path name, with the data action it needs."""

from __future__ import annotations

from keyless.vault.operations import (
    DELETE,
    GET_SECRET,
    PURGE,
    READ_METADATA,
    RECOVER,
    SET_SECRET,
    UPDATE,
    Operation,
    VaultError,
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


def resolve(method: str, path: str) -> Operation:
    """The operation a method and path name; a trailing slash means the latest version."""
    parts = path.split("/")[1:]
    if parts and parts[-1] == "" and len(parts) == 3:  # /secrets/{name}/
        parts = parts[:-1]
    collection = parts[0] if parts else ""
    rest = parts[1:]
    if collection == "secrets":
        if not rest and method == "GET":
            return Operation(READ_METADATA, None, None, list_secrets, False)
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
