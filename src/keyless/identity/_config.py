"""Settings read from arguments and the environment, validated with errors that say what to set."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from ._errors import ClientAuthenticationError

AZURE_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
KEYLESS_ENDPOINT = "KEYLESS_ENDPOINT"
AZURE_TENANT_ID = "AZURE_TENANT_ID"
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
AZURE_CLIENT_SECRET = "AZURE_CLIENT_SECRET"  # noqa: S105 - a variable name
AZURE_CLIENT_CERTIFICATE_PATH = "AZURE_CLIENT_CERTIFICATE_PATH"
AZURE_CLIENT_CERTIFICATE_PASSWORD = "AZURE_CLIENT_CERTIFICATE_PASSWORD"  # noqa: S105
AZURE_CLIENT_SEND_CERTIFICATE_CHAIN = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"
AZURE_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"  # noqa: S105
IDENTITY_ENDPOINT = "IDENTITY_ENDPOINT"
IDENTITY_HEADER = "IDENTITY_HEADER"
AZURE_POD_IDENTITY_AUTHORITY_HOST = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
REQUESTS_CA_BUNDLE = "REQUESTS_CA_BUNDLE"
SSL_CERT_FILE = "SSL_CERT_FILE"

ENV_HINT = 'run `eval "$(keyless env)"` to set it for your Keyless server'

_TENANT = re.compile(r"^[A-Za-z0-9.-]+$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.\-:/]+$")
_DEFAULT_SUFFIX = "/.default"


def env(name: str) -> str | None:
    """An environment variable, with empty treated as unset."""
    return os.environ.get(name) or None


def resolve_authority(authority: str | None) -> str:
    """The authority host as `https://host[:port]` (no trailing slash).

    From `authority=`, else AZURE_AUTHORITY_HOST, else KEYLESS_ENDPOINT. Plain http is refused:
    a token request carries a secret or an assertion, and azure-identity refuses it too.
    """
    source = "authority="
    if not authority:
        source, authority = AZURE_AUTHORITY_HOST, env(AZURE_AUTHORITY_HOST)
    if not authority:
        source, authority = KEYLESS_ENDPOINT, env(KEYLESS_ENDPOINT)
    if not authority:
        raise ValueError(
            f"no authority host: set {AZURE_AUTHORITY_HOST} to your Keyless server's URL "
            f"(e.g. https://keyless.example:8443; {ENV_HINT}) or pass authority="
        )
    if "://" not in authority:
        authority = "https://" + authority
    parts = urlsplit(authority)
    if parts.scheme.lower() != "https":
        raise ValueError(
            f"{source} is {authority!r}, which is not https. Keyless credentials send secrets "
            "and assertions only over TLS: use the server's https:// URL "
            f"({ENV_HINT}; it also sets REQUESTS_CA_BUNDLE so the Keyless CA is trusted)"
        )
    if not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{source} is {authority!r}, which is not a URL like https://host[:port]")
    return authority.rstrip("/")


def validate_tenant_id(tenant_id: str, source: str = "tenant_id") -> str:
    if not _TENANT.match(tenant_id):
        raise ValueError(
            f"{source} {tenant_id!r} is not a tenant ID: use the tenant's GUID "
            "(`keyless tenant show`) with only letters, digits, '-' and '.'"
        )
    return tenant_id


def resolve_tenant(default: str, requested: str | None, allowed: frozenset[str]) -> str:
    """The tenant for one request: the credential's own unless another was asked for and allowed."""
    if not requested or requested == default:
        return default
    validate_tenant_id(requested)
    if "*" in allowed or requested in allowed:
        return requested
    raise ClientAuthenticationError(
        f"this credential is configured for tenant {default!r} and may not get a token for "
        f"tenant {requested!r}; add it to additionally_allowed_tenants (or '*' for any tenant)"
    )


def single_scope(scopes: tuple[str, ...]) -> str:
    """Keyless issues a token for one resource at a time: exactly one scope."""
    if len(scopes) != 1:
        example = "'https://management.azure.com/.default'"
        if not scopes:
            raise ValueError(f"get_token needs a scope, for example {example}")
        raise ValueError(
            f"get_token takes one scope (one resource per token), not {len(scopes)}: "
            f"ask once per resource, for example {example}"
        )
    scope = scopes[0]
    if not _SCOPE.match(scope):
        raise ValueError(
            f"{scope!r} is not a valid scope: use '{{resource}}/.default', for example "
            "'api://keyless/management/.default'"
        )
    return scope


def scope_to_resource(scope: str) -> str:
    """`{resource}/.default` -> `{resource}`, for managed identity and developer sign-in."""
    return scope[: -len(_DEFAULT_SUFFIX)] if scope.endswith(_DEFAULT_SUFFIX) else scope


def missing_message(missing: list[str]) -> str:
    names = [f"{name}" for name in missing]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]
