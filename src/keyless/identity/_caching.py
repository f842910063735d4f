"""What a caching credential does, written once for its sync and async shells.

The warm path is a dict lookup and a float compare. A miss asks the token service once per
cache key (the others wait on the key's lock and take the answer, or the failure, it left);
a refresh that is due while the old token is still good is made by one caller while the rest
keep the old token, and if it fails the old token stays in use until it expires. The shells
(`_base.CachingCredential`, `aio._base.AsyncCachingCredential`) only perform the steps.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Generic, TypeVar

from . import _cache
from ._cache import ENTRIES, CachedToken, CacheKey
from ._config import single_scope
from ._errors import ClientAuthenticationError
from ._flow import TokenFlow
from ._http import fetch_steps
from ._steps import Acquire, Releasable, Steps
from ._tokens import TokenRequestOptions

_LOG = logging.getLogger("keyless.identity")
HookT = TypeVar("HookT")


def token_options(options: TokenRequestOptions | None) -> tuple[str | None, str | None, bool]:
    """`get_token_info`'s options as `get_token`'s (claims, tenant_id, enable_cae)."""
    options = options or {}
    return (
        options.get("claims") or None,
        options.get("tenant_id") or None,
        bool(options.get("enable_cae", False)),
    )


class CachingCore(abc.ABC):
    """Subclasses set `_cache_id` (the identity: same value = same tokens) and `_tenant_id`,
    and write `_fetch`, which asks the token service and never looks at the cache."""

    _cache_id: str
    _tenant_id: str = ""

    def _cached(
        self, scopes: tuple[str, ...], claims: str | None, tenant_id: str | None, cae: bool
    ) -> CachedToken | None:
        """The warm path: a token that need not be refreshed yet, or None."""
        if claims is None and len(scopes) == 1:
            entry = ENTRIES.get((self._cache_id, tenant_id or self._tenant_id, scopes[0], cae))
            if entry is not None and time.time() < entry.refresh_at:
                return entry
        return None

    def _cached_info(
        self, scopes: tuple[str, ...], options: TokenRequestOptions | None
    ) -> CachedToken | None:
        """`_cached` for `get_token_info`."""
        if not options and len(scopes) == 1:
            entry = ENTRIES.get((self._cache_id, self._tenant_id, scopes[0], False))
            if entry is not None and time.time() < entry.refresh_at:
                return entry
        return None

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        """The tenant of the cache key and the request. Default: the credential's own, and a
        requested one is part of the key (for credentials that cannot choose a tenant)."""
        return tenant_id or self._tenant_id

    @abc.abstractmethod
    def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> Steps[CachedToken]: ...

    def _get(
        self, scopes: tuple[str, ...], claims: str | None, tenant_id: str | None, cae: bool
    ) -> Steps[CachedToken]:
        """A token from the cache or the token service (see the module docstring)."""
        scope = single_scope(scopes)
        tenant = self._resolve_tenant(tenant_id)
        key: CacheKey = (self._cache_id, tenant, scope, cae)
        if claims is None:
            entry = ENTRIES.get(key)
            now = time.time()
            if entry is not None and now < entry.refresh_at:
                return entry
            if entry is not None and now < entry.usable_until:
                # Refresh due, old token still good: one caller refreshes, the rest keep using
                # the old token rather than wait; a failed refresh keeps the old one too.
                refreshing: Releasable | None = yield Acquire(key, wait=False)
                if refreshing is None:
                    return entry
                try:
                    return (yield from self._refresh(key, entry))
                finally:
                    refreshing.release()
        waited_since = time.monotonic()
        lock: Releasable = yield Acquire(key, wait=True)
        try:
            if claims is None:
                current = _cache.fresh(key)
                if current is not None:
                    return current
                shared = _cache.failure_since(key, waited_since)
                if shared is not None:
                    raise shared
            try:
                fresh = yield from self._fetch(scope, tenant, claims, cae)
            except ClientAuthenticationError as exc:
                _cache.record_failure(key, exc)
                raise
            _cache.store(key, fresh)
            return fresh
        finally:
            lock.release()

    def _refresh(self, key: CacheKey, entry: CachedToken) -> Steps[CachedToken]:
        """A due refresh, made holding the key's lock; on failure the old token stays."""
        current = _cache.fresh(key)
        if current is not None:
            return current
        _, tenant, scope, cae = key
        try:
            fresh = yield from self._fetch(scope, tenant, None, cae)
        except Exception as exc:
            _LOG.warning(
                "%s: refreshing the token for %s failed; the cached token stays in use until it "
                "expires: %s",
                type(self).__name__,
                scope,
                exc,
            )
            entry.defer_refresh(time.time())
            return entry
        _cache.store(key, fresh)
        return fresh


class HttpCore(CachingCore, Generic[HookT]):
    """A caching credential that asks an HTTP token service; its `TokenFlow` builds the
    requests. The arguments classes (e.g. `_certificate.CertificateArguments`) build the flow
    and pass it to `_use`; the shells send what it builds."""

    _flow: TokenFlow
    _request_hook: HookT | None

    def _use(self, flow: TokenFlow, request_hook: HookT | None) -> None:
        self._flow = flow
        self._cache_id = flow.cache_id
        self._tenant_id = flow.tenant_id
        self._request_hook = request_hook
        self._client_lock = threading.Lock()  # the sync shell's; harmless in the async one

    def _resolve_tenant(self, tenant_id: str | None) -> str:
        return self._flow.resolve_tenant(tenant_id)

    def _fetch(
        self, scope: str, tenant_id: str, claims: str | None, enable_cae: bool
    ) -> Steps[CachedToken]:
        request = self._flow.request(scope, tenant_id, claims, enable_cae)
        return fetch_steps(request, type(self).__name__, scope, self._flow.hint)
