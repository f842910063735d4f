"""What every sync credential shares: the azure-core protocol methods, the cached hit path,
one in-flight request per cache key, and serving the old token while a refresh fails."""

from __future__ import annotations

import abc
import logging
import threading
import time
from types import TracebackType
from typing import Any, Self

import httpx

from . import _cache
from ._cache import ENTRIES, CachedToken, CacheKey
from ._config import single_scope
from ._errors import ClientAuthenticationError
from ._flow import TokenFlow
from ._http import Exchange, RequestHook, new_client, parse_token_response, send, through
from ._loopback import exchange as loopback_exchange
from ._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

_LOG = logging.getLogger("keyless.identity")


class Credential(abc.ABC):
    """The azure-core credential protocols (`get_token`, `get_token_info`), `close()` and
    the context manager."""

    @abc.abstractmethod
    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken: ...

    @abc.abstractmethod
    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo: ...

    def close(self) -> None:  # noqa: B027 - most credentials hold nothing to release
        """Release connections; the credential can still be used (it reconnects)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.close()


class CachingCredential(Credential):
    """A credential whose tokens live in the process-wide cache.

    Subclasses set `_cache_id` (the identity: same value = same tokens) and `_tenant_id`, and
    implement `_fetch`, which asks the token service and never looks at the cache.
    """

    _cache_id: str
    _tenant_id: str = ""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        if claims is None and len(scopes) == 1:
            entry = ENTRIES.get(
                (self._cache_id, tenant_id or self._tenant_id, scopes[0], enable_cae)
            )
            if entry is not None and time.time() < entry.refresh_at:
                return entry.access_token
        return self._get(scopes, claims, tenant_id, enable_cae).access_token

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        if not options and len(scopes) == 1:
            entry = ENTRIES.get((self._cache_id, self._tenant_id, scopes[0], False))
            if entry is not None and time.time() < entry.refresh_at:
                return entry.info
        options = options or {}
        return self._get(
            scopes,
            options.get("claims") or None,
            options.get("tenant_id") or None,
            bool(options.get("enable_cae", False)),
        ).info

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        """The tenant of the cache key and the request. Default: the credential's own, and a
        requested one is part of the key (for credentials that cannot choose a tenant)."""
        return tenant_id or self._tenant_id

    @abc.abstractmethod
    def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> CachedToken: ...

    def _get(
        self, scopes: tuple[str, ...], claims: str | None, tenant_id: str | None, cae: bool
    ) -> CachedToken:
        scope = single_scope(scopes)
        tenant = self._resolve_tenant(tenant_id)
        key: CacheKey = (self._cache_id, tenant, scope, cae)
        lock = _cache.thread_lock(key)
        if claims is None:
            entry = ENTRIES.get(key)
            now = time.time()
            if entry is not None and now < entry.refresh_at:
                return entry
            if entry is not None and now < entry.usable_until:
                # Refresh due, old token still good: one caller refreshes, the rest keep using
                # the old token rather than wait; a failed refresh keeps the old one too.
                if not lock.acquire(blocking=False):
                    return entry
                try:
                    current = ENTRIES.get(key)
                    if current is not None and time.time() < current.refresh_at:
                        return current
                    try:
                        fresh = self._fetch(scope, tenant, claims, cae)
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
                finally:
                    lock.release()
        waited_since = time.monotonic()
        with lock:
            if claims is None:
                current = _cache.fresh(key)
                if current is not None:
                    return current
                shared = _cache.failure_since(key, waited_since)
                if shared is not None:
                    raise shared
            try:
                fresh = self._fetch(scope, tenant, claims, cae)
            except ClientAuthenticationError as exc:
                _cache.record_failure(key, exc)
                raise
            _cache.store(key, fresh)
            return fresh


class HttpCredential(CachingCredential):
    """A caching credential that asks an HTTP token service; its `TokenFlow` builds the
    requests (the same flow serves the async credential of the same name)."""

    def __init__(self, flow: TokenFlow, *, request_hook: RequestHook | None = None) -> None:
        self._flow = flow
        self._cache_id = flow.cache_id
        self._tenant_id = flow.tenant_id
        self._request_hook = request_hook
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        return self._flow.resolve_tenant(tenant_id)

    def _http(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    client = new_client(
                        self._request_hook,
                        trust_env=self._flow.trust_env,
                        plain_http=self._flow.plain_http,
                    )
                    self._client = client
        return client

    def _exchange(self) -> Exchange:
        """A loopback endpoint gets the lean exchange, unless a request hook wants to see the
        httpx.Request; everything else an httpx client (kept for its connections)."""
        address = self._flow.loopback
        if address is not None and self._request_hook is None:
            return lambda request: loopback_exchange(address, request)
        return through(self._http())

    def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> CachedToken:
        who = type(self).__name__
        request = self._flow.request(scope, tenant_id, claims, enable_cae)
        sent_at = time.time()
        response = send(self._exchange(), request, who)
        try:
            token = parse_token_response(response, request, who, sent_at, self._flow.hint)
        finally:
            response.close()
        _LOG.info("%s: got a token for %s", who, scope)
        return token

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
