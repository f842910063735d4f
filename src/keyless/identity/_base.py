"""The sync shell: azure-core's credential protocols, performing by blocking the steps that
the shared logic (`_caching`, `_delegating`) asks for."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from . import _cache, _steps
from ._caching import CachingCore, HttpCore, token_options
from ._http import Exchange, RequestHook, new_client, through
from ._loopback import exchange as loopback_exchange
from ._steps import Drive, Kwargs, Scopes, Step, Steps
from ._tokens import AccessToken, AccessTokenInfo, TokenRequestOptions

T = TypeVar("T")


def run(steps: Steps[T], perform: Callable[[Step], Any]) -> T:
    """Perform the steps one after the other, blocking, until the logic has its answer."""
    drive = Drive(steps)
    while (step := drive.next()) is not None:
        try:
            drive.outcome = perform(step)
        except BaseException as exc:  # thrown back in where it was asked for, to clean up
            drive.failure = exc
    return drive.result


def perform(step: Step) -> Any:
    """One step, blocking (HttpCredential adds sending)."""
    match step:
        case _steps.Acquire(key, wait):
            lock = _cache.thread_lock(key)
            return lock if lock.acquire(blocking=wait) else None
        case _steps.Call(function, args, kwargs):
            return function(*args, **kwargs)
        case _steps.Pause(seconds):
            time.sleep(seconds)
            return None
        case _steps.RunProcess(args, env, timeout):
            try:
                done = subprocess.run(
                    args,
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    env=env,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise TimeoutError from None
            return _steps.Completed(done.returncode, done.stdout, done.stderr)
    raise TypeError(f"no sync way to perform {step!r}")


class Credential:
    """The azure-core credential protocols (`get_token`, `get_token_info`), `close()` and
    the context manager. Keyless's credentials answer through `_token` and `_token_info`; a
    subclass may instead override `get_token` and `get_token_info` themselves."""

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return self._token(scopes, claims, tenant_id, enable_cae, kwargs)

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return self._token_info(scopes, options)

    def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        raise NotImplementedError(f"{type(self).__name__} implements no get_token")

    def _token_info(self, scopes: Scopes, options: TokenRequestOptions | None) -> AccessTokenInfo:
        raise NotImplementedError(f"{type(self).__name__} implements no get_token_info")

    def close(self) -> None:
        """Release connections; the credential can still be used (it reconnects)."""

    def _perform(self, step: Step) -> Any:
        return perform(step)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.close()


class CachingCredential(CachingCore, Credential):
    """A credential whose tokens live in the process-wide cache (see `_caching`)."""

    def _token(
        self, scopes: Scopes, claims: str | None, tenant_id: str | None, cae: bool, extra: Kwargs
    ) -> AccessToken:
        entry = self._cached(scopes, claims, tenant_id, cae)
        if entry is None:
            entry = run(self._get(scopes, claims, tenant_id, cae), self._perform)
        return entry.access_token

    def _token_info(self, scopes: Scopes, options: TokenRequestOptions | None) -> AccessTokenInfo:
        entry = self._cached_info(scopes, options)
        if entry is None:
            entry = run(self._get(scopes, *token_options(options)), self._perform)
        return entry.info


class HttpCredential(HttpCore[RequestHook], CachingCredential):
    """A caching credential that sends its `TokenFlow`'s requests with httpx, or over the lean
    loopback exchange."""

    _client: httpx.Client | None = None

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

    def _perform(self, step: Step) -> Any:
        if isinstance(step, _steps.Send):
            answer = self._exchange()(step.request)
            answer.close()  # read whole: the connection can go back to the pool
            return answer
        return perform(step)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
