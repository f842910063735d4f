"""Async EnvironmentCredential (see the sync module for the variables it reads)."""

from __future__ import annotations

from .._environment import EnvironmentArguments, NotUsableArguments
from .._http import AsyncRequestHook
from .._tokens import AsyncTokenCredentialLike
from ._certificate import CertificateCredential
from ._chained import AsyncDelegatingCredential
from ._client_secret import ClientSecretCredential


class NotUsableCredential(NotUsableArguments[AsyncTokenCredentialLike], AsyncDelegatingCredential):
    """Stands in for a credential that could not be built (see the sync class)."""


class EnvironmentCredential(
    EnvironmentArguments[AsyncTokenCredentialLike, AsyncRequestHook], AsyncDelegatingCredential
):
    """A service principal from AZURE_* environment variables."""

    _kinds = {"certificate": CertificateCredential, "secret": ClientSecretCredential}
    _not_usable = NotUsableCredential
