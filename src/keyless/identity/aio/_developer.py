"""Async DeveloperCredential: `keyless account get-access-token` run with asyncio."""

from __future__ import annotations

from .._developer import DeveloperArguments
from ._base import AsyncCachingCredential


class DeveloperCredential(DeveloperArguments, AsyncCachingCredential):
    """The signed-in developer's token from ``keyless account get-access-token`` (see the
    sync class)."""
