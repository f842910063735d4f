"""Async DefaultCredential: environment -> workload identity -> managed identity -> developer."""

from __future__ import annotations

from .._default import DefaultChain
from .._http import AsyncRequestHook
from .._tokens import AsyncTokenCredentialLike
from ._chained import ChainedCredential
from ._developer import DeveloperCredential
from ._environment import EnvironmentCredential, NotUsableCredential
from ._managed_identity import ManagedIdentityCredential
from ._workload_identity import WorkloadIdentityCredential


class DefaultCredential(
    DefaultChain[AsyncTokenCredentialLike, AsyncRequestHook], ChainedCredential
):
    """The async twin of `keyless.identity.DefaultCredential`, with the same keywords."""

    _environment = EnvironmentCredential
    _workload_identity = WorkloadIdentityCredential
    _managed_identity = ManagedIdentityCredential
    _developer = DeveloperCredential
    _not_usable = NotUsableCredential
