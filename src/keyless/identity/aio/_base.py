"""What every async credential shares: azure-core's async credential protocols, the cached
hit path, one in-flight request per cache key (an asyncio.Lock per event loop), and serving
the old token while a refresh fails. The cache itself is shared with the sync credentials."""

from __future__ import annotations

import abc
import logging
import time
from types import TracebackType
from typing import Any, Self

import httpx

from .. import _cache
from .._cache import ENTRIES, CachedToken, CacheKey
from .._config import single_scope
from .._errors import ClientAuthenticationError
from .._flow import TokenFlow
from .._http import AsyncRequestHook, new_async_client, parse_token_response, send_async
from .._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

_LOG = logging.getLogger("keyless.identity")


class AsyncCredential(abc.ABC):
    """azure-core's async credential protocols, `close()` and the async context manager."""

    @abc.abstractmethod
    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken: ...

    @abc.abstractmethod
    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo: ...

    async def close(self) -> None:  # noqa: B027 - most credentials hold nothing to release
        """Release connections; the credential can still be used (it reconnects)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        await self.close()


class AsyncCachingCredential(AsyncCredential):
    """An async credential whose tokens live in the process-wide cache (see CachingCredential)."""

    _cache_id: str
    _tenant_id: str = ""

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        if claims is None and len(scopes) == 1:
            key = (self._cache_id, tenant_id or self._tenant_id, scopes[0], enable_cae)
            entry = ENTRIES.get(key)
            if entry is not None and time.time() < entry.refresh_at:
                return entry.access_token
        return (await self._get(scopes, claims, tenant_id, enable_cae)).access_token

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        if not options and len(scopes) == 1:
            entry = ENTRIES.get((self._cache_id, self._tenant_id, scopes[0], False))
            if entry is not None and time.time() < entry.refresh_at:
                return entry.info
        options = options or {}
        fetched = await self._get(
            scopes,
            options.get("claims") or None,
            options.get("tenant_id") or None,
            bool(options.get("enable_cae", False)),
        )
        return fetched.info

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        return tenant_id or self._tenant_id

    @abc.abstractmethod
    async def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> CachedToken: ...

    async def _get(
        self, scopes: tuple[str, ...], claims: str | None, tenant_id: str | None, cae: bool
    ) -> CachedToken:
        scope = single_scope(scopes)
        tenant = self._resolve_tenant(tenant_id)
        key: CacheKey = (self._cache_id, tenant, scope, cae)
        lock = _cache.async_lock(key)
        if claims is None:
            entry = ENTRIES.get(key)
            now = time.time()
            if entry is not None and now < entry.refresh_at:
                return entry
            if entry is not None and now < entry.usable_until:
                if lock.locked():  # another task is refreshing: keep using the old token
                    return entry
                async with lock:
                    current = ENTRIES.get(key)
                    if current is not None and time.time() < current.refresh_at:
                        return current
                    try:
                        fresh = await self._fetch(scope, tenant, claims, cae)
                    except Exception as exc:
                        _LOG.warning(
                            "%s: refreshing the token for %s failed; the cached token stays in "
                            "use until it expires: %s",
                            type(self).__name__,
                            scope,
                            exc,
                        )
                        entry.defer_refresh(time.time())
                        return entry
                    _cache.store(key, fresh)
                    return fresh
        waited_since = time.monotonic()
        async with lock:
            if claims is None:
                current = _cache.fresh(key)
                if current is not None:
                    return current
                shared = _cache.failure_since(key, waited_since)
                if shared is not None:
                    raise shared
            try:
                fresh = await self._fetch(scope, tenant, claims, cae)
            except ClientAuthenticationError as exc:
                _cache.record_failure(key, exc)
                raise
            _cache.store(key, fresh)
            return fresh


class AsyncHttpCredential(AsyncCachingCredential):
    """An async caching credential that asks an HTTP token service through its `TokenFlow`."""

    def __init__(self, flow: TokenFlow, *, request_hook: AsyncRequestHook | None = None) -> None:
        self._flow = flow
        self._cache_id = flow.cache_id
        self._tenant_id = flow.tenant_id
        self._request_hook = request_hook
        self._client: httpx.AsyncClient | None = None

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        return self._flow.resolve_tenant(tenant_id)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_async_client(
                self._request_hook, trust_env=self._flow.trust_env, plain_http=self._flow.plain_http
            )
        return self._client

    async def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> CachedToken:
        who = type(self).__name__
        request = self._flow.request(scope, tenant_id, claims, enable_cae)
        sent_at = time.time()
        response = await send_async(self._http(), request, who)
        try:
            token = parse_token_response(response, request, who, sent_at, self._flow.hint)
        finally:
            await response.aclose()
        _LOG.info("%s: got a token for %s", who, scope)
        return token

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
