"""The request log of `keyless serve`: one line per request on stderr, and the start banner.

A line is `TIME METHOD PATH STATUS DURATION`, e.g.
`2026-12-06T02:13:26Z POST /{tenant}/oauth2/v2.0/token 200 3.1ms`. It never holds a token or
secret: the query string is left out (OAuth errors and redirects can carry codes there), as are
every header (Authorization) and the body (client_secret, client_assertion, refresh_token). The
path is logged still percent-encoded, so a crafted path cannot forge a line.

The cost per request is kept to what the line needs (two clock reads, one formatted string, one
`write`): no logging.LogRecord, no handler chain, one os.write so lines from several workers
never interleave. Below `info` (`--log-level warning`) the middleware is not installed at all.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

LEVELS = ("debug", "info", "warning", "error", "critical")
_MAX_PATH = 300
_STDERR = 2


def logs_requests(level: str) -> bool:
    return LEVELS.index(level) <= LEVELS.index("info")


def say(line: str) -> None:
    """A line on stderr in one write (several workers share it)."""
    os.write(_STDERR, (line + "\n").encode("utf-8", "backslashreplace"))


_clock: list[Any] = [0, ""]  # the last second formatted, reused for every request in it


def _now() -> str:
    second = int(time.time())
    if second != _clock[0]:
        _clock[0], _clock[1] = second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return str(_clock[1])


class RequestLog:
    """ASGI middleware: logs each HTTP request when its handler is done."""

    def __init__(self, app: Asgi) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # the handler raised before it answered (ErrorBoundary answers 500)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            raw = scope.get("raw_path") or scope["path"].encode("utf-8")
            path = raw.split(b"?", 1)[0][:_MAX_PATH].decode("ascii", "backslashreplace")
            elapsed = (time.perf_counter() - start) * 1000
            os.write(
                _STDERR,
                f"{_now()} {scope['method']} {path} {status} {elapsed:.1f}ms\n".encode(),
            )


def banner(
    endpoint: str, listen: str, tenant: str | None, gateway: str | None, socket_path: str
) -> None:
    """What a user starting `keyless serve` needs to know, once."""
    lines = [f"keyless serve: listening on https://{listen} ({endpoint})"]
    if tenant:
        lines.append(f"  issuer:          {endpoint}/{tenant}/v2.0")
    lines.append(
        f"  token gateway:   {'ldap://' + gateway if gateway else 'off (--gateway-port 0)'}"
    )
    lines.append(f"  sign-in socket:  {socket_path}")
    lines.append("  Ctrl-C stops it")
    say("\n".join(lines))
    sys.stderr.flush()
