"""The I/O a credential's logic asks for, so that the logic is written once for sync and async.

A credential's slow path (a cache miss, a retry, a chain choosing its member) is a generator
that yields these steps and gets back what each produced, or has its exception thrown in. The
sync shell (`keyless.identity`) performs a step by blocking, the async shell
(`keyless.identity.aio`) by awaiting; that, and which lock guards a cache key, is all that
differs between them. Warm paths (a cached token, a chain's chosen member) stay plain calls in
the shells: a generator would cost more than the whole hit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from ._cache import CacheKey
    from ._http import TokenRequest

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take the cache key's lock; with `wait=False` only if it is free. Gives the lock (to
    `release()`, which is synchronous for threading and asyncio locks alike) or None."""

    key: CacheKey
    wait: bool


@dataclass(frozen=True, slots=True)
class Send:
    """Send one token request and read the whole answer, releasing the connection. Gives
    the `Answer`; raises httpx.TransportError."""

    request: TokenRequest


@dataclass(frozen=True, slots=True)
class RunProcess:
    """Run a command to completion. Gives a `Completed`; raises TimeoutError (killed after
    `timeout` seconds) or OSError (could not start)."""

    args: list[str]
    env: dict[str, str]
    timeout: float


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Call:
    """Call another credential's method (`get_token`, `get_token_info`, `close`); the async
    shell awaits what it returns."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait before the next try."""

    seconds: float


Step = Acquire | Send | Pause | RunProcess | Call
Steps = Generator[Step, Any, T]
# What `get_token` was given: its scopes, and the keywords beyond claims, tenant_id, enable_cae.
Scopes = tuple[str, ...]
Kwargs = dict[str, Any]


class Releasable(Protocol):
    def release(self) -> None: ...


class Drive(Generic[T]):
    """Walks a generator of steps for a shell: `next()` gives the step to perform (None when
    the logic has finished, its value in `result`); the shell then sets `outcome`, or
    `failure` to the exception the step raised (thrown into the logic where it asked)."""

    __slots__ = ("_steps", "failure", "outcome", "result")

    def __init__(self, steps: Steps[T]) -> None:
        self._steps = steps
        self.outcome: Any = None
        self.failure: BaseException | None = None

    def next(self) -> Step | None:
        failure, self.failure = self.failure, None
        try:
            if failure is None:
                return self._steps.send(self.outcome)
            return self._steps.throw(failure)
        except StopIteration as done:
            self.result: T = done.value
            return None
