"""Async Keyless credentials: `async get_token`/`get_token_info`, `async close`, and the async
context manager, as azure-core's async protocols expect. They share the process-wide token cache
with the sync credentials in `keyless.identity`."""

from .._errors import ClientAuthenticationError, CredentialUnavailableError
from .._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions
from ._base import AsyncCredential
from ._certificate import CertificateCredential
from ._chained import ChainedCredential
from ._client_secret import ClientSecretCredential
from ._default import DefaultCredential
from ._developer import DeveloperCredential
from ._environment import EnvironmentCredential
from ._managed_identity import ManagedIdentityCredential
from ._workload_identity import WorkloadIdentityCredential

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "AsyncCredential",
    "CertificateCredential",
    "ChainedCredential",
    "ClientAuthenticationError",
    "ClientSecretCredential",
    "CredentialUnavailableError",
    "DefaultCredential",
    "DeveloperCredential",
    "EnvironmentCredential",
    "ManagedIdentityCredential",
    "TokenRequestOptions",
    "WorkloadIdentityCredential",
]
