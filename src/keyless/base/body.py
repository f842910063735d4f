"""Reading request bodies with a hard size limit, before any parsing happens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive

from keyless.base.errors import KeylessError


class BodyTooLarge(KeylessError):
    status = 413
    code = "RequestEntityTooLarge"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit // 1024} KiB")
        self.limit = limit


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def receive_limited(receive: Receive, declared: bytes | None, limit: int) -> bytes | None:
    """`read_limited` for a raw ASGI endpoint: the body from `receive`, given the request's
    Content-Length header; None when the client went away before sending all of it."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # http.disconnect
        chunk: bytes = message.get("body", b"")
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if not message.get("more_body", False):
            return body
