"""The async shell: azure-core's async credential protocols, performing by awaiting the steps
that the shared logic (`.._caching`, `.._delegating`) asks for. A cache key's lock is an
asyncio.Lock per event loop; the cache itself is shared with the sync credentials."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from .. import _cache, _steps
from .._caching import CachingCore, HttpCore, token_options
from .._http import AsyncRequestHook, build, new_async_client
from .._steps import Drive, Kwargs, Scopes, Step, Steps
from .._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

T = TypeVar("T")


async def run(steps: Steps[T], perform: Callable[[Step], Awaitable[Any]]) -> T:
    """Perform the steps one after the other, awaiting each, until the logic has its answer."""
    drive = Drive(steps)
    while (step := drive.next()) is not None:
        try:
            drive.outcome = await perform(step)
        except BaseException as exc:  # thrown back in where it was asked for, to clean up
            drive.failure = exc
    return drive.result


async def perform(step: Step) -> Any:
    """One step, awaited (AsyncHttpCredential adds sending)."""
    match step:
        case _steps.Acquire(key, wait):
            lock = _cache.async_lock(key)
            if not wait and lock.locked():  # another task holds it: no waiting
                return None
            await lock.acquire()
            return lock
        case _steps.Call(function, args, kwargs):
            return await function(*args, **kwargs)
        case _steps.Pause(seconds):
            await asyncio.sleep(seconds)
            return None
        case _steps.RunProcess(args, env, timeout):
            return await _run_process(args, env, timeout)
    raise TypeError(f"no async way to perform {step!r}")


async def _run_process(args: list[str], env: dict[str, str], timeout: float) -> _steps.Completed:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return _steps.Completed(
        process.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


class AsyncCredential:
    """azure-core's async credential protocols, `close()` and the async context manager.
    Keyless's credentials answer through `_token` and `_token_info`; a subclass may instead
    override `get_token` and `get_token_info` themselves."""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return await self._token(scopes, claims, tenant_id, enable_cae, kwargs)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return await self._token_info(scopes, options)

    async def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        raise NotImplementedError(f"{type(self).__name__} implements no get_token")

    async def _token_info(
        self, scopes: Scopes, options: TokenRequestOptions | None
    ) -> AccessTokenInfo:
        raise NotImplementedError(f"{type(self).__name__} implements no get_token_info")

    async def close(self) -> None:
        """Release connections; the credential can still be used (it reconnects)."""

    async def _perform(self, step: Step) -> Any:
        return await perform(step)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.close()


class AsyncCachingCredential(CachingCore, AsyncCredential):
    """An async credential whose tokens live in the process-wide cache (see `.._caching`)."""

    async def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        entry = self._cached(scopes, claims, tenant_id, cae)
        if entry is None:
            entry = await run(self._get(scopes, claims, tenant_id, cae), self._perform)
        return entry.access_token

    async def _token_info(
        self, scopes: Scopes, options: TokenRequestOptions | None
    ) -> AccessTokenInfo:
        entry = self._cached_info(scopes, options)
        if entry is None:
            entry = await run(self._get(scopes, *token_options(options)), self._perform)
        return entry.info


class AsyncHttpCredential(HttpCore[AsyncRequestHook], AsyncCachingCredential):
    """An async caching credential that sends its `TokenFlow`'s requests with httpx."""

    _client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_async_client(
                self._request_hook, trust_env=self._flow.trust_env, plain_http=self._flow.plain_http
            )
        return self._client

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, _steps.Send):
            client = self._http()
            answer = await client.send(build(client, step.request))
            await answer.aclose()  # read whole: the connection can go back to the pool
            return answer
        return await perform(step)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
