"""One HTTP/1.1 exchange with a managed identity endpoint on a loopback IP address.

`keyless app run` gives an app a plain-http endpoint on 127.0.0.1: nothing to resolve, no TLS,
no proxy, no cookies, no redirects, one request at start and one per refresh. Through an
httpx client that first request cost ~4 ms of a fresh process (client, URL and cookie layers,
and the idna codec that resolving a host name imports) on top of the exchange itself. Here
it is a socket connected to the literal address and h11, the HTTP/1.1 implementation that
httpx's own transport uses, to write the request and read the answer. Failures are httpx's
transport errors and the answer has what retries and parsing read of an httpx.Response, so
they are the same code as for every other token request.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import httpx

from ._http import TIMEOUT, USER_AGENT, TokenRequest

# A token answer is a few kilobytes; anything far larger is not one.
MAX_ANSWER_BYTES = 1 << 20
CONNECT_TIMEOUT_S = TIMEOUT.connect or 5.0
READ_TIMEOUT_S = TIMEOUT.read or 10.0


@dataclass(frozen=True, slots=True)
class LoopbackAnswer:
    """An answer read by h11 (an httpx.Response cost 0.16 ms of CPU in a fresh process)."""

    status_code: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        """Nothing to release: the connection is closed once the answer is read."""


def loopback_address(url: str) -> tuple[str, int] | None:
    """(address, port) when `url` is plain http on a loopback IP address, else None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        address = ipaddress.ip_address(parts.hostname)
        port = parts.port or 80
    except ValueError:  # a host name (even "localhost") or a bad port: the httpx path
        return None
    return (str(address), port) if address.is_loopback else None


def exchange(address: tuple[str, int], request: TokenRequest) -> LoopbackAnswer:
    """Send `request` (a GET without a body) to `address` and read the whole answer on a
    connection of its own."""
    if request.form is not None:
        raise ValueError("the loopback exchange sends only requests without a body")
    parts = urlsplit(request.url)
    target = parts.path or "/"
    if request.params:
        target += "?" + urlencode(request.params)
    headers = [
        ("Host", parts.netloc),
        ("User-Agent", USER_AGENT),
        ("Accept", "application/json"),
        *request.headers.items(),
        ("Connection", "close"),
    ]
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                sock.connect(address)
            except TimeoutError:
                raise httpx.ConnectTimeout("timed out connecting") from None
            except OSError as exc:
                raise httpx.ConnectError(str(exc)) from None
            sock.settimeout(READ_TIMEOUT_S)
            return _converse(sock, request.method, target, headers)
    except TimeoutError:
        raise httpx.ReadTimeout("timed out waiting for the answer") from None
    except h11.ProtocolError as exc:
        raise httpx.RemoteProtocolError(f"the answer is not valid HTTP/1.1 ({exc})") from None
    except OSError as exc:
        raise httpx.ReadError(str(exc)) from None


def _converse(
    sock: socket.socket, method: str, target: str, headers: list[tuple[str, str]]
) -> LoopbackAnswer:
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    sock.sendall(
        connection.send(h11.Request(method=method, target=target, headers=headers))
        + connection.send(h11.EndOfMessage())
    )
    head: h11.Response | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            if not data and head is None:
                raise httpx.RemoteProtocolError("the endpoint closed the connection unanswered")
            connection.receive_data(data)  # b"" tells h11 the peer closed (it checks the rest)
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_ANSWER_BYTES:
                raise httpx.RemoteProtocolError(
                    f"the answer is larger than {MAX_ANSWER_BYTES} bytes, not a token answer"
                )
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return _answer(head, bytes(body))
        # Otherwise h11.InformationalResponse (1xx): keep reading for the final answer. The
        # end of the connection comes after EndOfMessage, or h11 raises for a cut answer.


def _answer(head: h11.Response, body: bytes) -> LoopbackAnswer:
    # h11 gives names in lower case; a repeated header keeps its last value.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers}
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # none was asked for (no Accept-Encoding is sent)
        raise httpx.RemoteProtocolError(f"the answer is compressed ({encoding}), unasked")
    return LoopbackAnswer(head.status_code, headers, body)
