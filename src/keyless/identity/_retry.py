"""Retry with exponential backoff on 429, 5xx and connection errors, honouring Retry-After.

Bounded two ways: at most MAX_RETRIES retries, and at most MAX_TOTAL_WAIT_S seconds of waiting
in all. A Retry-After longer than what is left of that budget ends the retries at once; the
caller's error then says when the server asked to be called again.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRIES = 3
MAX_TOTAL_WAIT_S = 6.0
BACKOFF_S = 0.25


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `x-ms-retry-after-ms`,
    `Retry-After` as seconds or an HTTP date), or None."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Retry:
    """Decides, after each failed attempt, whether and how long to wait before the next."""

    def __init__(
        self,
        max_retries: int = MAX_RETRIES,
        max_total_wait_s: float = MAX_TOTAL_WAIT_S,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.max_retries = max_retries
        self.max_total_wait_s = max_total_wait_s
        self.backoff_s = backoff_s
        self.attempts = 0
        self.waited_s = 0.0

    def next_delay(self, headers: Mapping[str, str] | None) -> float | None:
        """Seconds to wait before retrying, or None to give up. Call once per failed attempt."""
        if self.attempts > self.max_retries:
            return None
        asked = retry_after(headers) if headers is not None else None
        if asked is not None:
            delay = asked
        else:
            delay = self.backoff_s * 2 ** (self.attempts - 1) * random.uniform(0.8, 1.2)  # noqa: S311
        if self.waited_s + delay > self.max_total_wait_s:
            return None
        self.waited_s += delay
        return delay
