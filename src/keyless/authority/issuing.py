"""Client credentials requests decided, recorded and answered in batches.

A token costs one RSA signature and a little Python; what made it cost three times that was
the hand-offs around it, each paid per token: the event loop woke an issuing thread, that
thread woke the grant log's writer, the writer woke the loop, each through a
`concurrent.futures.Future` (a lock and a condition), and the loop waited with `wait_for`'s
task. Waking a thread is a system call made while holding the GIL; on a VM it is also an
inter-processor interrupt, and the woken thread often preempts the waker, GIL and all (py-spy
put 40-55 % of the GIL-holding time in these wake-ups). Here:

- the requests of one event loop iteration are taken together;
- the directory generation is read once for them, after every one of them arrived, so each is
  decided on a directory at least as new as when it came in (a credential removed before a
  request arrived is refused);
- each is decided and signed, and every record of the batch is committed in one transaction;
- then every answer is sent.

With the embedded SQLite store this all runs on the event loop, with no thread at all: the
store is a local file, and a worker process per CPU keeps every core busy while one signs.
With a store across the network (PostgreSQL) a read or commit must not stop the loop, so the
batch runs on one thread per process, which wakes the loop once per batch.

The guarantee is the grant log's: no answer leaves before its audit record (and an
assertion's jti) is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from dataclasses import dataclass

from keyless.authority.token_endpoint import PendingGrant, TokenEndpoint, TokenRequest
from keyless.store.grant_log import (
    COMMIT_TIMEOUT_S,
    MAX_BATCH,
    GrantLog,
    GrantLogError,
    RecordBatch,
)


@dataclass(eq=False)
class _Job:
    request: TokenRequest
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[dict[str, object]]
    pending: PendingGrant | None = None
    response: dict[str, object] | None = None
    failure: Exception | None = None


class BatchIssuer:
    """One per server process; a thread (started on first use, in the worker that serves: uvicorn
    spawns its workers) only when the store is not the embedded SQLite."""

    def __init__(self, endpoint: TokenEndpoint, grant_log: GrantLog, on_loop: bool) -> None:
        self._endpoint = endpoint
        self._grant_log = grant_log
        self._on_loop = on_loop
        self._from_loops: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        self._queue: queue.SimpleQueue[list[_Job]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def issue(self, request: TokenRequest) -> dict[str, object]:
        """The token response, once its records are committed. Raises the refusal's
        OAuthError, FetchNeeded (nothing decided or recorded: decide it where it may wait),
        or GrantLogError when the store did not commit."""
        loop = asyncio.get_running_loop()
        job = _Job(request, loop, loop.create_future())
        waiting = self._from_loops.get(loop)
        if waiting is None:
            waiting = self._from_loops[loop] = []
            loop.call_soon(self._batch, loop)
        waiting.append(job)
        if self._on_loop:
            return await job.answer  # settled by _batch, in this loop's next iteration
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                return await job.answer
        except TimeoutError:
            raise GrantLogError(
                f"the store did not commit within {COMMIT_TIMEOUT_S:.0f} s"
            ) from None

    def _batch(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs = self._from_loops.pop(loop)
        if self._on_loop:
            self._decide(jobs)
            _settle(jobs)
            return
        self._ensure_thread()
        self._queue.put(jobs)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="keyless-issue", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            jobs = self._queue.get()
            while len(jobs) < MAX_BATCH:
                try:
                    jobs += self._queue.get_nowait()
                except queue.Empty:
                    break
            self._decide(jobs)
            _answer(jobs)

    def _decide(self, jobs: list[_Job]) -> None:
        """Decide every job and commit their records; failures go to the jobs concerned."""
        try:
            snapshot = self._endpoint.snapshot()  # after every job arrived: see the docstring
        except Exception as exc:  # the store is gone: every waiter hears of it
            for job in jobs:
                job.failure = exc
            return
        records = RecordBatch()
        for job in jobs:
            try:
                job.pending = self._endpoint.decide(job.request, False, snapshot, records)
            except Exception as exc:  # FetchNeeded, or a bug (a 500 for that request)
                job.failure = exc
        if records.entries:
            self._grant_log.commit(records.entries)
        # The answers; a replayed assertion's refusal is recorded before it is answered too.
        replays = RecordBatch()
        for job in jobs:
            if job.pending is not None:
                try:
                    job.response = _conclude(job.pending, replays)
                except Exception as exc:  # OAuthError, GrantLogError
                    job.failure = exc
        if replays.entries:
            self._grant_log.commit(replays.entries)


def _answer(jobs: list[_Job]) -> None:
    """From the thread: wake each loop once, for all of its jobs."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, mine)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.answer.done():  # the request was cancelled meanwhile
            continue
        if job.failure is not None:  # OAuthError, FetchNeeded, GrantLogError; a bug: a 500
            job.answer.set_exception(job.failure)
        else:
            assert job.response is not None
            job.answer.set_result(job.response)


def _conclude(pending: PendingGrant, replays: RecordBatch) -> dict[str, object]:
    try:
        committed = pending.committed.result(0)  # settled by the commit, before this
    except Exception as exc:
        raise GrantLogError("the store refused the audit record") from exc
    return TokenEndpoint.conclude(pending, committed, replays)
