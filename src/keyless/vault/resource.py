"""The `Keyless.Vault/vaults` resource type and the host names vaults answer on."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from keyless.base.errors import ResourceError
from keyless.base.vault_domain import VAULT_NAME, VaultDomain
from keyless.resources.types import Properties, PropertiesError, ResourceType, register
from keyless.store.models import Resource, Vault

VAULT_TYPE = "Keyless.Vault/vaults"
DEFAULT_RETENTION_DAYS = 90
# Azure's rule: 3-24 characters, letters, digits and hyphens, starting with a letter, ending
# with a letter or digit, no two hyphens in a row. The name is a DNS label of the vault's URL.


def check_vault_name(name: str) -> str:
    if not VAULT_NAME.match(name):
        raise ResourceError(
            400,
            "VaultNameNotValid",
            f"vault name {name[:60]!r} is not valid: use 3-24 letters, digits and hyphens, "
            "starting with a letter, ending with a letter or digit, no '--'",
        )
    return name.lower()


def _validate(properties: Properties) -> Properties:
    allowed = {
        "vaultUri",
        "tenantId",
        "enableRbacAuthorization",
        "enableSoftDelete",
        "softDeleteRetentionInDays",
        "sku",
    }
    unknown = set(properties) - allowed
    if unknown:
        raise PropertiesError(
            f"unknown vault properties: {', '.join(sorted(unknown))} (a vault has "
            f"{', '.join(sorted(allowed))})"
        )
    retention = properties.get("softDeleteRetentionInDays", DEFAULT_RETENTION_DAYS)
    if isinstance(retention, bool) or not isinstance(retention, int) or not 7 <= retention <= 90:
        raise PropertiesError("softDeleteRetentionInDays must be a whole number from 7 to 90")
    for flag in ("enableRbacAuthorization", "enableSoftDelete"):
        if properties.get(flag, True) is not True:
            raise PropertiesError(
                f"{flag} can only be true: Keyless vaults authorize by role data actions and "
                "always soft-delete"
            )
    return {
        "enableRbacAuthorization": True,
        "enableSoftDelete": True,
        "softDeleteRetentionInDays": retention,
    }


def _after_write(domain: VaultDomain) -> Any:
    def after_write(session: Session, resource: Resource, created: bool) -> None:
        name = check_vault_name(resource.name)
        if not domain.usable:
            raise ResourceError(
                400,
                "VaultHostUnavailable",
                f"vaults need a DNS name for the server ({domain.host} is not one); set the "
                "public host to a name such as localhost",
            )
        vault = session.get(Vault, name)
        if vault is not None and vault.resource_key != resource.key:
            raise ResourceError(
                409,
                "VaultAlreadyExists",
                f"a vault named {name!r} already exists on this server (vault names are "
                "host names, unique across resource groups and tenants); choose another name",
            )
        retention = int(resource.properties["softDeleteRetentionInDays"])
        if vault is None:
            session.add(
                Vault(
                    name=name,
                    resource_key=resource.key,
                    resource_id=resource.id,
                    tenant_id=resource.tenant_id,
                    retention_days=retention,
                    sealed_key=None,
                    created_at=time.time(),
                )
            )
        else:
            vault.retention_days = retention
        resource.properties = {
            **resource.properties,
            "vaultUri": domain.vault_url(name) + "/",
            "tenantId": resource.tenant_id,
        }

    return after_write


def register_vault_type(domain: VaultDomain) -> ResourceType:
    return register(ResourceType(VAULT_TYPE, _validate, after_write=_after_write(domain)))
