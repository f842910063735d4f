"""Keyless client credentials: tokens for apps with no secret in their code or configuration.

Depends on nothing server-side (only httpx, cryptography and PyJWT). The credentials satisfy
azure-core's protocols (`get_token`, `get_token_info`), so any Azure SDK client accepts them.
Async variants are in `keyless.identity.aio`.

    from keyless.identity import DefaultCredential
    token = DefaultCredential().get_token("api://keyless/management/.default")
"""

import logging as _logging

from ._base import Credential
from ._cache import clear as clear_token_cache
from ._certificate import CertificateCredential
from ._chained import ChainedCredential
from ._client_secret import ClientSecretCredential
from ._default import DefaultCredential
from ._developer import DeveloperCredential
from ._environment import EnvironmentCredential
from ._errors import ClientAuthenticationError, CredentialUnavailableError
from ._managed_identity import ManagedIdentityCredential
from ._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions
from ._workload_identity import WorkloadIdentityCredential

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "CertificateCredential",
    "ChainedCredential",
    "ClientAuthenticationError",
    "ClientSecretCredential",
    "Credential",
    "CredentialUnavailableError",
    "DefaultCredential",
    "DeveloperCredential",
    "EnvironmentCredential",
    "ManagedIdentityCredential",
    "TokenRequestOptions",
    "WorkloadIdentityCredential",
    "clear_token_cache",
]

# A library logs; the application decides where that goes (nothing printed by default).
_logging.getLogger("keyless.identity").addHandler(_logging.NullHandler())
