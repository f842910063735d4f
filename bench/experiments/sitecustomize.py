"""Prototypes of proposed token-endpoint changes, for measuring them before anyone edits src/.

`bench/token_endpoint.py --experiment NAME[,NAME]` starts `keyless serve` with this directory
on PYTHONPATH and KEYLESS_BENCH_EXPERIMENT set, so Python imports this module at start-up in
the server and in every worker uvicorn spawns, and patches the running code there only.
Without KEYLESS_BENCH_EXPERIMENT it does nothing. Nothing here is production code.

  inline        decide and mint on the event loop thread itself (no thread handoff; the
                commit is still awaited): what the handoff costs.
  commit_in_thread  the issuing thread waits for the grant's commit (as before the route
                awaited it on the event loop), holding its thread meanwhile.
  one_write     send each response's head and body in one write (one TLS record, one send)
                instead of uvicorn's two: what the second write costs.
  issuing_threads  KEYLESS_BENCH_ISSUING_THREADS (default 4) threads per worker issue
                client credentials tokens instead of one.
  generation_ttl  re-read the directory generation at most every KEYLESS_BENCH_GENERATION_TTL_MS
                (default 250) per process instead of on every request. This changes a
                guarantee (a removed credential would work for up to that long in other
                processes), so it is a design decision, measured here only to size it.
"""

from __future__ import annotations

import os

_EXPERIMENTS = {x for x in os.environ.get("KEYLESS_BENCH_EXPERIMENT", "").split(",") if x}


def _generation_ttl() -> None:
    import time
    from typing import Any

    from keyless.authority.cache import AuthorityCache

    ttl = float(os.environ.get("KEYLESS_BENCH_GENERATION_TTL_MS", "250")) / 1000
    original = AuthorityCache.current
    checked: dict[int, float] = {}

    def current(self: AuthorityCache) -> Any:
        now = time.monotonic()
        if now - checked.get(id(self), -1e9) < ttl and self._snapshot.generation >= 0:
            return self._snapshot
        snapshot = original(self)
        checked[id(self)] = now
        return snapshot

    AuthorityCache.current = current  # type: ignore[method-assign]


def _inline() -> None:
    from concurrent.futures import Executor, Future
    from typing import Any

    from keyless.authority.token_route import TokenRoute

    class _Here(Executor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            done: Future[Any] = Future()
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)
            return done

    here = _Here()
    TokenRoute._executors = lambda self: (here, here)  # type: ignore[method-assign,assignment,return-value]


def _commit_in_thread() -> None:
    import contextlib
    from typing import Any

    from keyless.authority.token_endpoint import TokenEndpoint
    from keyless.store.grant_log import GrantLogError, wait_for_commit

    original = TokenEndpoint.decide

    def decide(self: TokenEndpoint, request: Any) -> Any:
        pending = original(self, request)
        with contextlib.suppress(GrantLogError):  # the route's own wait reports it
            wait_for_commit(pending.committed)
        return pending

    TokenEndpoint.decide = decide  # type: ignore[method-assign]


def _one_write() -> None:
    from typing import Any

    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    original = RequestResponseCycle.send

    class _Held:
        def __init__(self, real: Any) -> None:
            self.real = real
            self.head = b""

        def write(self, data: bytes) -> None:
            self.head += data

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    class _Joined:
        def __init__(self, real: Any, head: bytes) -> None:
            self.real = real
            self.head = head

        def write(self, data: bytes) -> None:
            self.real.write(self.head + data)
            self.head = b""

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    async def send(self: Any, message: Any) -> None:
        if message["type"] == "http.response.start":
            held = _Held(self.transport)
            self.transport = held
            try:
                await original(self, message)
            finally:
                self.transport = held.real
            self._keyless_head = held.head
            return
        head = getattr(self, "_keyless_head", b"")
        if head and message["type"] == "http.response.body":
            self._keyless_head = b""
            real = self.transport
            self.transport = _Joined(real, head)
            try:
                await original(self, message)
            finally:
                self.transport = real
            return
        await original(self, message)

    RequestResponseCycle.send = send  # type: ignore[method-assign]


def _issuing_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from keyless.authority.token_route import TokenRoute

    count = int(os.environ.get("KEYLESS_BENCH_ISSUING_THREADS", "4"))
    original = TokenRoute._executors

    def executors(self: TokenRoute) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._threads is None:
            original(self)
            assert self._threads is not None
            self._threads = (ThreadPoolExecutor(count), self._threads[1])
        return self._threads

    TokenRoute._executors = executors  # type: ignore[method-assign]


if _EXPERIMENTS:
    known = {
        "issuing_threads": _issuing_threads,
        "one_write": _one_write,
        "commit_in_thread": _commit_in_thread,
        "inline": _inline,
        "generation_ttl": _generation_ttl,
    }
    for _name in sorted(_EXPERIMENTS):
        if _name not in known:
            raise SystemExit(f"unknown KEYLESS_BENCH_EXPERIMENT {_name!r}; know {sorted(known)}")
        known[_name]()
