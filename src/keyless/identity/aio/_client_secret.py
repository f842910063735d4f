"""Async ClientSecretCredential."""

from __future__ import annotations

from .._client_secret import ClientSecretArguments
from .._http import AsyncRequestHook
from ._base import AsyncHttpCredential


class ClientSecretCredential(ClientSecretArguments[AsyncRequestHook], AsyncHttpCredential):
    """Authenticates a service principal with its client secret (see the sync class)."""
