"""Async DeveloperCredential: `keyless account get-access-token` run with asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time

from .._cache import CachedToken
from .._developer import DEFAULT_TIMEOUT_S, DeveloperFlow
from ._base import AsyncCachingCredential


class DeveloperCredential(AsyncCachingCredential):
    """The signed-in developer's token from ``keyless account get-access-token`` (see the
    sync class)."""

    def __init__(
        self, *, tenant_id: str | None = None, process_timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self._flow = DeveloperFlow(tenant_id, process_timeout)
        self._cache_id = self._flow.cache_id
        self._tenant_id = self._flow.tenant_id

    async def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> CachedToken:
        args = self._flow.command(scope, tenant_id)
        started = time.time()
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._flow.environment(),
            )
        except OSError as exc:
            raise self._flow.failed_to_start(exc) from None
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self._flow.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise self._flow.timed_out() from None
        return self._flow.parse(
            process.returncode or 0,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            started,
        )
