"""Async ManagedIdentityCredential."""

from __future__ import annotations

from .._http import AsyncRequestHook
from .._managed_identity import ManagedIdentityArguments
from ._base import AsyncHttpCredential


class ManagedIdentityCredential(ManagedIdentityArguments[AsyncRequestHook], AsyncHttpCredential):
    """The managed identity of the app or machine this code runs on (see the sync class)."""
