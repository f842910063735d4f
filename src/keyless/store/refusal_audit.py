"""Auditing refused requests without letting a flood of them fill the store.

Every refusal of the management API (a missing, malformed, forged, expired or revoked token, a
caller without the role) is audited, as the vault's are. A flood of identical refusals (the
same result and reason, from the same source, on the same kind of request) would otherwise write
one row each: an unauthenticated caller could fill the store. So, per process and per
interval, the first refusal of a kind is written at once, with its trace ID, and the identical
ones after it are only counted; when the interval is over, one more row says how many there
were (`details.count`, with the first one's trace ID). The counts of a kind's rows add up to the
number of refusals. The distinct kinds per interval are bounded too (`max_kinds`): beyond it,
refusals are folded into one "many kinds" row, so a flood from many sources is bounded as well.

Rows go through the grant log's group commit; the caller may wait for the first row's commit
(the refusal is answered once it is recorded, as the vault does) and never for the summaries.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

from keyless.store.audit import AuditRecord
from keyless.store.grant_log import GrantLog

INTERVAL_S = 60.0
MAX_KINDS = 200
# The kind every refusal beyond MAX_KINDS in an interval is folded into.
MANY = ("*", "*", "*", "*")


@dataclass
class _Fold:
    first: AuditRecord
    repeated: int = 0


class RefusalAudit:
    """One per process (it is in `Authority`); thread-safe."""

    def __init__(
        self,
        grant_log: GrantLog,
        interval_s: float = INTERVAL_S,
        max_kinds: int = MAX_KINDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grant_log = grant_log
        self._interval_s = interval_s
        self._max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._folds: dict[tuple[str, ...], _Fold] = {}

    def refused(self, record: AuditRecord, source: str, kind: str) -> Future[bool] | None:
        """Audit one refusal. `source` is who it came from (the client address, or the
        principal for a refusal of an authenticated caller), `kind` what was asked (the
        route's action), never the raw path. Returns the commit of the row written for it,
        or None when it was only counted."""
        key = (record.result, str(record.details.get("reason", "")), source[:64], kind)
        with self._lock:
            due = self._roll(self._clock())
            fold = self._folds.get(key)
            if fold is None and len(self._folds) >= self._max_kinds:
                key, fold = MANY, self._folds.get(MANY)
                if fold is None:
                    record = replace(
                        record, details={**record.details, "manyKinds": True}, actor="unknown"
                    )
            if fold is None:
                self._folds[key] = _Fold(record)
                written: AuditRecord | None = replace(
                    record, details={**record.details, "count": 1, "source": source[:64]}
                )
            else:
                fold.repeated += 1
                written = None
        for summary in due:
            self._grant_log.submit(summary)
        return None if written is None else self._grant_log.submit(written)

    def flush(self) -> None:
        """End the interval if it is over (maintenance calls this every second), so a flood
        that stopped still gets its count row."""
        with self._lock:
            due = self._roll(self._clock())
        for summary in due:
            self._grant_log.submit(summary)

    def _roll(self, now: float) -> list[AuditRecord]:
        """At the end of an interval: the count rows of the kinds that repeated, and a new
        interval. Called with the lock held."""
        if now - self._started < self._interval_s:
            return []
        ended, self._folds, self._started = self._folds, {}, now
        at = time.time()
        return [
            replace(
                fold.first,
                trace_id=str(uuid.uuid4()),
                at=at,
                details={
                    **fold.first.details,
                    "count": fold.repeated,
                    "repeatOf": fold.first.trace_id,
                    "intervalSeconds": self._interval_s,
                    "source": key[2],
                },
            )
            for key, fold in ended.items()
            if fold.repeated
        ]
