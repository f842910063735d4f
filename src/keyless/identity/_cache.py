"""The process-wide token cache shared by every credential, sync and async.

Keyed by (credential identity, tenant, scope, CAE): two credentials for the same identity share
tokens. The hit path is a dict lookup and a float compare. Each key has one lock (a
`threading.Lock`, or an `asyncio.Lock` per event loop) so concurrent misses cause one request;
a request that fails is reported to the callers that were waiting for it instead of being
repeated by each of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from dataclasses import dataclass

from ._errors import ClientAuthenticationError
from ._tokens import AccessToken, AccessTokenInfo

CacheKey = tuple[str, str, str, bool]

# Never serve a token this close to its expiry (capped at a tenth of its lifetime).
EXPIRY_MARGIN_S = 30.0
# After a failed proactive refresh, wait this long (at most) before trying again.
REFRESH_RETRY_S = 30.0
_PURGE_ABOVE = 256


@dataclass(slots=True, eq=False)
class CachedToken:
    access_token: AccessToken
    info: AccessTokenInfo
    refresh_at: float  # local epoch seconds: ask for a new token after this
    usable_until: float  # local epoch seconds: never serve the token after this

    @classmethod
    def build(
        cls,
        token: str,
        *,
        received_at: float,
        expires_on: int | None = None,
        expires_in: float | None = None,
        refresh_in: float | None = None,
        token_type: str = "Bearer",  # noqa: S107 - a token type, not a secret
    ) -> CachedToken:
        """Times relative to when the answer arrived, so a skewed server clock does not matter;
        `expires_on` on the token itself is the server's value."""
        if expires_in is None:
            if expires_on is None:
                raise ValueError("a token needs expires_in or expires_on")
            expires_in = expires_on - received_at
        if expires_on is None:
            expires_on = int(received_at + expires_in)
        lifetime = max(0.0, float(expires_in))
        if refresh_in is None or not 0 < refresh_in < lifetime:
            refresh_in = lifetime / 2
        usable_until = received_at + lifetime - min(EXPIRY_MARGIN_S, lifetime / 10)
        refresh_at = min(received_at + refresh_in, usable_until)
        return cls(
            AccessToken(token, int(expires_on)),
            AccessTokenInfo(token, int(expires_on), token_type, int(refresh_at)),
            refresh_at,
            usable_until,
        )

    def defer_refresh(self, now: float) -> None:
        """A refresh failed while the token is still good: keep serving it, try again later."""
        self.refresh_at = now + max(1.0, min(REFRESH_RETRY_S, (self.usable_until - now) / 4))


ENTRIES: dict[CacheKey, CachedToken] = {}
_LOCKS: dict[CacheKey, threading.Lock] = {}
_ASYNC_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[CacheKey, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_FAILURES: dict[CacheKey, tuple[float, ClientAuthenticationError]] = {}
_GUARD = threading.Lock()


def fresh(key: CacheKey) -> CachedToken | None:
    """The cached token if it need not be refreshed yet."""
    entry = ENTRIES.get(key)
    if entry is not None and time.time() < entry.refresh_at:
        return entry
    return None


def store(key: CacheKey, entry: CachedToken) -> None:
    _FAILURES.pop(key, None)
    ENTRIES[key] = entry
    if len(ENTRIES) > _PURGE_ABOVE:
        now = time.time()
        for stale in [k for k, v in list(ENTRIES.items()) if v.usable_until <= now]:
            ENTRIES.pop(stale, None)


def record_failure(key: CacheKey, error: ClientAuthenticationError) -> None:
    _FAILURES[key] = (time.monotonic(), error)


def failure_since(key: CacheKey, since: float) -> ClientAuthenticationError | None:
    """The error of a request that ended after `since` (a caller waited for it): share it."""
    failure = _FAILURES.get(key)
    if failure is not None and failure[0] >= since:
        return failure[1].copy()
    return None


def thread_lock(key: CacheKey) -> threading.Lock:
    lock = _LOCKS.get(key)
    if lock is None:
        with _GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
    return lock


def async_lock(key: CacheKey) -> asyncio.Lock:
    """The key's lock for the running event loop (an asyncio.Lock belongs to one loop)."""
    loop = asyncio.get_running_loop()
    with _GUARD:
        locks = _ASYNC_LOCKS.get(loop)
        if locks is None:
            locks = _ASYNC_LOCKS[loop] = {}
        lock = locks.get(key)
        if lock is None:
            lock = locks[key] = asyncio.Lock()
    return lock


def clear() -> None:
    """Forget every cached token in this process (e.g. after a role change, or in tests)."""
    with _GUARD:
        ENTRIES.clear()
        _FAILURES.clear()
