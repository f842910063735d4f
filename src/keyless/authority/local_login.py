"""Password-less local sign-in: the OS already knows who is on the other end of a Unix socket.

The CLI connects to `login.sock` in the data directory; the kernel reports the peer's uid
(SO_PEERCRED), which maps to the directory user linked to that OS account. The protocol is one
JSON line each way: `{"op": "login"}` answered by a management API token in the `az` shape;
with `"offline": true` the answer also carries a refresh token of a new sign-in session
(`keyless.authority.sessions`), which gets tokens for other resources and `keyless logout` revokes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.authority.context import Authority
from keyless.authority.sessions import CLI_APP_ID, add_refresh_token, start_session, user_principal
from keyless.authority.tokens import mint
from keyless.store import audit
from keyless.store.models import Subscription, User

__all__ = ["CLI_APP_ID", "login_for_uid", "peer_uid", "serve_login_socket"]
_MAX_LINE = 4096


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def login_for_uid(
    authority: Authority, uid: int, tenant_id: str | None, offline: bool = False
) -> dict[str, Any]:
    trace_id = str(uuid.uuid4())
    with Session(authority.engine) as session:
        query = select(User).where(User.os_uid == uid)
        if tenant_id:
            query = query.where(User.tenant_id == tenant_id)
        user = session.scalars(query).first()
        subscription = None
        if user is not None:
            subscription = session.scalars(
                select(Subscription).where(
                    Subscription.tenant_id == user.tenant_id, Subscription.is_default
                )
            ).first()
    if user is None:
        with authority.engine.begin() as connection:
            audit.write(
                connection,
                audit.AuditRecord(
                    actor=f"uid:{uid}",
                    action="login.local",
                    target="management",
                    result="denied",
                    trace_id=trace_id,
                    tenant_id=tenant_id,
                ),
            )
        return {
            "error": "no_user",
            "message": f"OS user with uid {uid} is not linked to a directory user; ask a "
            "tenant administrator to add you",
        }
    if not user.account_enabled:
        with authority.engine.begin() as connection:
            audit.write(
                connection,
                audit.AuditRecord(
                    actor=user.object_id,
                    action="login.local",
                    target="management",
                    result="denied",
                    trace_id=trace_id,
                    tenant_id=user.tenant_id,
                    details={"reason": "user_disabled"},
                ),
            )
        return {
            "error": "user_disabled",
            "message": f"the directory user {user.user_principal_name} is disabled; ask a "
            "tenant administrator to enable it",
        }
    snapshot = authority.cache.current()
    tenant = snapshot.tenants[user.tenant_id]
    resource = next(r for r in snapshot.resources[tenant.id].values() if r.name == "management")
    now = time.time()
    session_id = str(uuid.uuid4()) if offline else None
    issued = mint(
        signer=authority.cache.signer(snapshot, tenant.id),
        issuer=authority.issuer(tenant.id),
        tenant=tenant,
        principal=user_principal(user, "local", session_id),
        resource=resource,
        auth_method="local",
        now=now,
    )
    refresh_token = None
    with Session(authority.engine) as session, session.begin():
        if session_id is not None:
            sign_in = start_session(session, tenant.id, user.object_id, "local", now, session_id)
            refresh_token = add_refresh_token(session, sign_in, now)
            session.flush()
        audit.write(
            session.connection(),
            audit.AuditRecord(
                actor=user.object_id,
                action="login.local",
                target=resource.audience,
                result="granted",
                trace_id=trace_id,
                tenant_id=tenant.id,
                details={
                    "uid": uid,
                    "tokenId": issued.jti,
                    "expiresOn": issued.expires_on,
                    "sessionId": session_id,
                },
                at=now,
            ),
        )
    reply: dict[str, Any] = {
        "accessToken": issued.access_token,
        "expiresOn": issued.expires_on,
        "expires_on": issued.expires_on,
        "tokenType": "Bearer",
        "tenant": tenant.id,
        "subscription": subscription.id if subscription else None,
        "user": {"name": user.user_principal_name, "type": "user", "id": user.object_id},
        "endpoint": authority.endpoint,
        "clientId": CLI_APP_ID,
    }
    if refresh_token is not None:
        reply["refreshToken"] = refresh_token
    return reply


async def serve_login_socket(authority: Authority, path: Path) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            if len(line) > _MAX_LINE:
                reply: dict[str, Any] = {"error": "bad_request", "message": "request too long"}
            else:
                try:
                    request = json.loads(line or b"{}")
                except ValueError:
                    request = None
                if not isinstance(request, dict) or request.get("op") != "login":
                    reply = {"error": "bad_request", "message": 'send {"op": "login"}'}
                else:
                    tenant = request.get("tenant")
                    reply = await asyncio.to_thread(
                        login_for_uid,
                        authority,
                        uid,
                        tenant if isinstance(tenant, str) else None,
                        request.get("offline") is True,
                    )
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    if path.exists() or path.is_symlink():
        path.unlink()
    server = await asyncio.start_unix_server(handle, path=str(path), limit=_MAX_LINE * 2)
    path.chmod(0o600)
    return server
