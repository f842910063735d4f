"""The gateway's listener: an asyncio LDAP server for simple binds with Keyless tokens.

Each connection is a short session: PostgreSQL connects, binds once, unbinds. The server reads
one whole request at a time (bounded in size and time), answers it, and never lets one
connection's failure reach another: garbage gets a Notice of Disconnection, a crash in a
session is logged and ends only that session. Binds are decided on a few threads (a store read
and an RSA verification each) and answered only once their audit record is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from concurrent.futures import Future, ThreadPoolExecutor

from keyless.gateway import protocol
from keyless.gateway.decision import BindChecker, BindOutcome
from keyless.gateway.protocol import (
    AbandonRequest,
    BindRequest,
    MessageTooLarge,
    OtherRequest,
    ProtocolError,
    UnbindRequest,
)
from keyless.gateway.settings import GatewaySettings
from keyless.store.grant_log import GrantLog, GrantLogError, wait_for_commit_async

logger = logging.getLogger("keyless.gateway")
_READ_CHUNK = 64 * 1024
_NOT_OFFERED = (
    "this LDAP endpoint only checks Keyless access tokens with simple binds; {op} is not offered"
)


class Gateway:
    def __init__(
        self, settings: GatewaySettings, checker: BindChecker, grant_log: GrantLog
    ) -> None:
        settings.check()
        self.settings = settings
        self._checker = checker
        self._grant_log = grant_log
        self._limits = settings.limits
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=self._limits.bind_threads, thread_name_prefix="keyless-gateway"
        )

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the gateway is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.settings.scheme}://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection,
            self.settings.host,
            self.settings.port,
            ssl=self.settings.tls,
            ssl_handshake_timeout=(
                self._limits.tls_handshake_timeout_s if self.settings.tls is not None else None
            ),
            backlog=1024,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown"
        try:
            if len(self._writers) >= self._limits.max_connections:
                await self._send(
                    writer,
                    protocol.notice_of_disconnection(
                        protocol.BUSY, "too many connections to the gateway; try again"
                    ),
                )
                return
            self._writers.add(writer)
            await self._session(reader, writer, client)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:
            logger.exception("a gateway session from %s failed; the connection is closed", client)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self._limits.write_timeout_s)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        buffer = bytearray()
        for _ in range(self._limits.max_requests):
            try:
                async with asyncio.timeout(self._limits.message_timeout_s):
                    frame = await self._read_frame(reader, buffer)
                if frame is None:
                    return  # the client closed the connection
                request = protocol.decode_request(frame)
            except TimeoutError:
                return  # an idle or stalled client: close, as LDAP servers do
            except ProtocolError as exc:
                await self._send(
                    writer, protocol.notice_of_disconnection(protocol.PROTOCOL_ERROR, str(exc))
                )
                return
            if isinstance(request, UnbindRequest):
                return
            if isinstance(request, AbandonRequest):
                continue  # nothing is ever in progress to abandon; no response (RFC 4511 4.11)
            await self._send(writer, await self._answer(request, client))
        await self._send(
            writer,
            protocol.notice_of_disconnection(
                protocol.UNWILLING_TO_PERFORM,
                f"more than {self._limits.max_requests} requests on one connection; reconnect",
            ),
        )

    async def _read_frame(self, reader: asyncio.StreamReader, buffer: bytearray) -> bytes | None:
        """The next whole message: never buffers more than the size limit allows."""
        limit = self._limits.max_message_bytes
        while True:
            size = protocol.frame_size(buffer)
            if size is not None:
                if size > limit:
                    raise MessageTooLarge(
                        f"the message is {size} bytes; the gateway accepts at most {limit}"
                    )
                if len(buffer) >= size:
                    frame = bytes(buffer[:size])
                    del buffer[:size]
                    return frame
            chunk = await reader.read(min(_READ_CHUNK, max(1, limit + 1 - len(buffer))))
            if not chunk:
                if buffer:
                    raise ConnectionResetError("the client closed the connection mid-message")
                return None
            buffer += chunk

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self._limits.write_timeout_s)

    async def _answer(self, request: BindRequest | OtherRequest, client: str) -> bytes:
        if isinstance(request, OtherRequest):
            return self._refuse_operation(request)
        loop = asyncio.get_running_loop()
        try:
            outcome, committed = await loop.run_in_executor(
                self._executor, self._decide, request, client
            )
            await wait_for_commit_async(committed)
        except GrantLogError:
            logger.exception("the audit record of a bind could not be written")
            return self._unavailable(
                request, "the gateway could not write this bind's audit record, so it is refused"
            )
        except Exception:
            # The store is unreachable, or a bug: refuse this bind, keep serving the others.
            logger.exception("a bind could not be decided")
            return self._unavailable(request, "the gateway could not decide this bind")
        if not outcome.granted:
            logger.info(
                "bind refused (%s) for role %r on server %r from %s",
                outcome.result,
                outcome.role,
                outcome.server,
                client,
            )
        return protocol.encode_result(
            request.message_id, "bindResponse", outcome.ldap_code, outcome.message
        )

    @staticmethod
    def _unavailable(request: BindRequest, what: str) -> bytes:
        return protocol.encode_result(
            request.message_id,
            "bindResponse",
            protocol.UNAVAILABLE,
            f"{what}; the gateway's log says why (check that the Keyless store is reachable)",
        )

    def _decide(self, request: BindRequest, client: str) -> tuple[BindOutcome, Future[bool]]:
        """On a worker thread: decide the bind and queue its audit record."""
        outcome = self._protocol_refusal(request) or self._checker.check(
            request.name or "", request.password
        )
        record = outcome.audit_record(client, self.settings.scheme)
        return outcome, self._grant_log.submit(record)

    def _protocol_refusal(self, request: BindRequest) -> BindOutcome | None:
        """A bind refused for its form, before any token is looked at (still audited)."""
        dn = request.name or ""
        if request.critical_controls:
            return self._checker.refusal(
                dn,
                "unsupported_control",
                f"the gateway supports no request controls; {request.critical_controls[0]} "
                "was marked critical",
                protocol.UNAVAILABLE_CRITICAL_EXTENSION,
            )
        if request.version != 3:
            return self._checker.refusal(
                dn,
                "unsupported_version",
                f"LDAP version {request.version} is not supported; use LDAPv3",
                protocol.PROTOCOL_ERROR,
            )
        if request.method != "simple":
            return self._checker.refusal(
                dn,
                "unsupported_method",
                f"{request.method} authentication is not supported; use a simple bind with a "
                "Keyless access token as the password",
                protocol.AUTH_METHOD_NOT_SUPPORTED,
            )
        if request.name is None:
            return self._checker.refusal(
                "",
                "invalid_dn",
                "the bind DN is not UTF-8",
                protocol.INVALID_DN_SYNTAX,
            )
        if not request.name and not request.password:
            return self._checker.refusal(
                "",
                "anonymous",
                "anonymous binds are not allowed; bind as cn=<role>,ou=<server>,dc=keyless "
                "with a Keyless access token as the password",
                protocol.INAPPROPRIATE_AUTHENTICATION,
            )
        return None

    def _refuse_operation(self, request: OtherRequest) -> bytes:
        if request.critical_controls:
            code = protocol.UNAVAILABLE_CRITICAL_EXTENSION
            message = (
                f"the gateway supports no request controls; {request.critical_controls[0]} "
                "was marked critical"
            )
        elif request.operation == "extendedReq":
            # RFC 4511 4.12: an extended operation the server does not recognise gets
            # protocolError. StartTLS is one: the gateway offers LDAPS instead.
            code = protocol.PROTOCOL_ERROR
            message = (
                "StartTLS is not offered; connect with LDAPS (pg_hba.conf ldapscheme=ldaps) to a "
                "gateway started with --tls"
                if request.request_name == protocol.START_TLS
                else f"extended operation {request.request_name!r} is not supported"
            )
        else:
            code = protocol.UNWILLING_TO_PERFORM
            message = _NOT_OFFERED.format(op=request.operation)
        return protocol.encode_result(request.message_id, request.response, code, message)
