"""The error boundary: an unexpected failure is one logged event and one JSON 500.

Starlette's own error middleware answers 500 and then re-raises for the server to log, and
uvicorn answers a re-raised exception by closing the connection; under load a client may then
see the connection drop instead of the answer. Here the failure stops: the log gets the
traceback (store errors carry no parameter values, see `keyless.store.engine`) under a
correlation id, and the client gets that id in an ARM-shaped error it can quote.
"""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyless.base.errors import arm_error

logger = logging.getLogger("keyless.server")


class ErrorBoundary:
    """Pure ASGI middleware (not BaseHTTPMiddleware: that would buffer streamed bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            correlation_id = str(uuid.uuid4())
            logger.exception(
                "unexpected failure in %s %s (correlation id %s)",
                scope.get("method", "?"),
                scope.get("path", "?"),
                correlation_id,
            )
            if started:
                # Part of the answer is already out: nothing truthful can follow it.
                raise
            response = arm_error(
                500,
                "InternalServerError",
                "the Keyless server failed to handle this request; "
                f"its log has the details under correlation id {correlation_id}",
            )
            response.headers["x-ms-correlation-request-id"] = correlation_id
            await response(scope, receive, send)
