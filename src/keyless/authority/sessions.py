"""Developer sign-in on the authority: the RFC 8628 device authorization grant, refresh tokens
that rotate on every use, and the sign-in sessions they belong to.

A device code and its user code are random and kept only as SHA-256; the code is approved (or
denied) by a user who is already signed in, and that user becomes the identity signed in on the
device. A refresh token is 256 random bits, kept as SHA-256, and belongs to a session (its
family): each use returns a new one and retires the old; presenting a retired one again means
it was copied, so the whole session is revoked (RFC 6819 5.2.2.3, OAuth 2.1 BCP). Sessions end
on logout (RFC 7009 revocation), when an administrator revokes a user's sessions, after 14 days
without use, or 90 days after sign-in, whichever comes first.

Access tokens already issued are self-contained JWTs: a third-party resource accepts them until
they expire (at most the tenant's token lifetime), as in Entra ID without continuous access
evaluation. Keyless's own resources refuse them from the revocation on (each revocation bumps
the directory generation; see keyless.authority.principal_state).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyless.authority import errors
from keyless.authority.accounts import find_user
from keyless.authority.cache import ResourceInfo, Snapshot, TenantInfo
from keyless.authority.context import Authority
from keyless.authority.directory import DirectoryError
from keyless.authority.errors import OAuthError, invalid_request
from keyless.authority.tokens import Principal, mint
from keyless.store import audit
from keyless.store.generation import bump_generation
from keyless.store.models import DeviceCode, RefreshToken, SignInSession, User

if TYPE_CHECKING:
    from keyless.authority.token_endpoint import TokenRequest

# The well-known client ID of the Keyless CLI, a public client (as az's is in Entra ID).
CLI_APP_ID = "7d0c9d42-3b4a-4f83-9d0c-6b5e0c1f2a11"

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REFRESH_GRANT = "refresh_token"
USER_GRANTS = frozenset({DEVICE_CODE_GRANT, REFRESH_GRANT})

DEVICE_CODE_LIFETIME_S = 900
POLL_INTERVAL_S = 5
SLOW_DOWN_STEP_S = 5  # RFC 8628 3.5: the client adds 5 seconds after slow_down
POLL_TOLERANCE_S = 1.0  # network jitter: a poll this much early is not "too fast"
REFRESH_IDLE_S = 14 * 86400  # sliding: each use extends the session by this much...
SESSION_MAX_S = 90 * 86400  # ...up to this long after the sign-in itself
MAX_PENDING_PER_TENANT = 1000  # the device code endpoint is unauthenticated: bound its writes
PURGE_INTERVAL_S = 60.0

# RFC 8628 6.1: no vowels (no words), no look-alikes (0/O, 1/I); 20^8 is about 2^34.6.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
_OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
_MAX_SECRET = 512
_MAX_SCOPE = 2048

SIGN_IN_AGAIN = (
    "sign in again: `keyless login --use-device-code` (or `keyless login` on the server's machine)"
)
_REVOKED_BECAUSE = {
    "logout": "you signed out (`keyless logout`)",
    "admin": "an administrator revoked your sessions",
    "replay": "one of its refresh tokens was used twice, which means it was copied",
}


def digest(value: str) -> bytes:
    """SHA-256: enough for 256-bit random values, and a constant-time index lookup."""
    return hashlib.sha256(value.encode()).digest()


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalize_user_code(raw: object) -> str | None:
    """`bcdf-ghjk`, `BCDF GHJK`, `BCDFGHJK` -> `BCDFGHJK`; anything else -> None."""
    if not isinstance(raw, str) or len(raw) > 32:
        return None
    cleaned = "".join(ch for ch in raw.upper() if ch not in "- ")
    if len(cleaned) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in cleaned):
        return None
    return cleaned


def user_principal(user: User, auth_method: str, session_id: str | None) -> Principal:
    """A user's claims, as the Keyless CLI (a public client) receives them."""
    claims: dict[str, Any] = {
        "upn": user.user_principal_name,
        "preferred_username": user.user_principal_name,
        "name": user.display_name,
        "scp": "user_impersonation",
        "amr": [auth_method],
    }
    if session_id is not None:
        claims["sid"] = session_id
    return Principal(user.object_id, "user", CLI_APP_ID, claims)


def start_session(
    session: Session,
    tenant_id: str,
    user_id: str,
    auth_method: str,
    now: float,
    session_id: str | None = None,
) -> SignInSession:
    """A new sign-in session, flushed so that its refresh tokens can refer to it."""
    row = SignInSession(
        id=session_id or str(uuid.uuid4()),
        tenant_id=tenant_id,
        user_object_id=user_id,
        client_id=CLI_APP_ID,
        auth_method=auth_method,
        created_at=now,
        last_used_at=now,
        expires_at=now + SESSION_MAX_S,
    )
    session.add(row)
    session.flush()
    return row


def add_refresh_token(session: Session, sign_in: SignInSession, now: float) -> str:
    """A new refresh token for the session; only its hash is stored."""
    value = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            id=str(uuid.uuid4()),
            tenant_id=sign_in.tenant_id,
            session_id=sign_in.id,
            token_sha256=digest(value),
            status="active",
            created_at=now,
            expires_at=min(now + REFRESH_IDLE_S, sign_in.expires_at),
        )
    )
    return value


def _resolve_user_scope(resources: dict[str, ResourceInfo], scope: str | None) -> ResourceInfo:
    """`{resource}/.default` (or `/user_impersonation`), with any OpenID scopes; none means the
    management API, as `az login` signs in to ARM."""
    if scope is not None and len(scope) > _MAX_SCOPE:
        raise OAuthError("invalid_scope", "the scope is longer than 2048 characters", 70011)
    targets = [s for s in (scope or "").split() if s not in _OIDC_SCOPES]
    if not targets:
        name = "api://keyless/management"
    elif len(targets) > 1:
        raise OAuthError(
            "invalid_scope",
            "ask for one resource at a time: {resource}/.default, optionally with "
            "offline_access (a refresh token then gets tokens for the others)",
            errors.INVALID_SCOPE,
        )
    else:
        target = targets[0]
        suffix = next((s for s in ("/.default", "/user_impersonation") if target.endswith(s)), None)
        if suffix is None:
            raise OAuthError(
                "invalid_scope",
                "a scope has the form {resource}/.default, e.g. api://keyless/postgres/.default",
                errors.INVALID_SCOPE,
            )
        name = target[: -len(suffix)]
    resource = resources.get(name.rstrip("/").lower())
    if resource is None:
        raise OAuthError(
            "invalid_scope",
            f"no resource API named {name[:200]!r} is registered in this tenant; "
            "`keyless ad api list` shows the audiences tokens can be issued for",
            errors.RESOURCE_NOT_FOUND,
        )
    return resource


def _public_client(form: Mapping[str, str], basic_auth: object) -> str:
    """The Keyless CLI proves nothing by itself (RFC 8628 3.1): it names its client ID."""
    if basic_auth is not None or "client_secret" in form or "client_assertion" in form:
        raise invalid_request(
            "the Keyless CLI is a public client: send client_id only, with no client secret "
            "or assertion"
        )
    client_id = form.get("client_id")
    if not client_id:
        raise invalid_request(
            f"the request has no client_id; the Keyless CLI's client ID is {CLI_APP_ID}"
        )
    if client_id != CLI_APP_ID:
        raise OAuthError(
            "unauthorized_client",
            "the device code and refresh token grants are open to the Keyless CLI only "
            f"(client ID {CLI_APP_ID}); applications use client credentials",
            errors.PUBLIC_CLIENT_ONLY,
        )
    return client_id


def _tenant(snapshot: Snapshot, tenant_id: str) -> TenantInfo:
    tenant = snapshot.tenants.get(tenant_id)
    if tenant is None:
        raise invalid_request(
            f"tenant {tenant_id[:64]!r} was not found; check the tenant ID (`keyless env` "
            "prints it, `keyless account show` shows yours)",
            errors.TENANT_NOT_FOUND,
        )
    return tenant


def _user_disabled() -> OAuthError:
    return _invalid_grant(
        "the signed-in user is disabled; ask a tenant administrator to enable it "
        "(`keyless ad user update --id UPN --account-enabled true`)",
        errors.USER_DISABLED,
    )


def _invalid_grant(description: str, code: int) -> OAuthError:
    return OAuthError("invalid_grant", description, code)


def _secret_field(form: Mapping[str, str], name: str, what: str) -> str | None:
    """A code or token from the form; None if it cannot be one of ours (never echoed)."""
    value = form.get(name)
    if value is None or value == "":
        raise invalid_request(f"the request has no {name}; send the {what}")
    if len(value) > _MAX_SECRET:
        return None
    return value


class _Attempt:
    """Who and what a token request turned out to be about, for its audit record."""

    def __init__(self, client_id: str) -> None:
        self.actor = client_id
        self.audience = ""
        self.details: dict[str, Any] = {}


class DeveloperSignIn:
    """The device authorization endpoint, the two user grants and revocation."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    # ------------------------------------------------------------------ device authorization

    def device_authorization(
        self, tenant_id: str, form: Mapping[str, str], trace_id: str, client_ip: str
    ) -> dict[str, Any]:
        """`POST /{tenant}/oauth2/v2.0/devicecode` (RFC 8628 3.1-3.2)."""
        now = time.time()
        attempt = _Attempt(str(form.get("client_id", "unknown"))[:128])
        try:
            snapshot = self.authority.cache.current()
            tenant = _tenant(snapshot, tenant_id)
            client_id = _public_client(form, None)
            resource = _resolve_user_scope(snapshot.resources.get(tenant.id, {}), form.get("scope"))
            attempt.audience = resource.audience
            return self._new_device_code(tenant, client_id, resource, trace_id, client_ip, now)
        except OAuthError as exc:
            self._audit(
                "deviceCode.create", tenant_id, attempt, exc.error, trace_id, client_ip, now, exc
            )
            raise

    def _new_device_code(
        self,
        tenant: TenantInfo,
        client_id: str,
        resource: ResourceInfo,
        trace_id: str,
        client_ip: str,
        now: float,
    ) -> dict[str, Any]:
        with Session(self.authority.engine) as session:
            pending = session.scalar(
                select(func.count())
                .select_from(DeviceCode)
                .where(
                    DeviceCode.tenant_id == tenant.id,
                    DeviceCode.status == "pending",
                    DeviceCode.expires_at > now,
                )
            )
        if (pending or 0) >= MAX_PENDING_PER_TENANT:
            raise OAuthError(
                "slow_down",
                "too many device sign-ins are waiting for approval in this tenant; try again "
                "in a few minutes",
                errors.TOO_MANY_PENDING,
                status=429,
            )
        for _attempt in range(5):
            device_code = secrets.token_urlsafe(32)
            user_code = new_user_code()
            code_id = str(uuid.uuid4())
            try:
                with Session(self.authority.engine) as session, session.begin():
                    session.add(
                        DeviceCode(
                            id=code_id,
                            tenant_id=tenant.id,
                            client_id=client_id,
                            device_code_sha256=digest(device_code),
                            user_code_sha256=digest(user_code),
                            resource_id=resource.id,
                            scope=f"{resource.audience}/.default offline_access",
                            status="pending",
                            interval_s=POLL_INTERVAL_S,
                            client_ip=client_ip[:64],
                            created_at=now,
                            expires_at=now + DEVICE_CODE_LIFETIME_S,
                        )
                    )
                    session.flush()
                    audit.write(
                        session.connection(),
                        audit.AuditRecord(
                            actor=client_id,
                            action="deviceCode.create",
                            target=resource.audience,
                            result="issued",
                            trace_id=trace_id,
                            tenant_id=tenant.id,
                            details={
                                "deviceCodeId": code_id,
                                "clientIp": client_ip,
                                "expiresOn": int(now + DEVICE_CODE_LIFETIME_S),
                            },
                            at=now,
                        ),
                    )
            except IntegrityError:
                continue  # a user code already in use (about 1 in 2^34 per live code): retry
            break
        else:
            raise RuntimeError("could not allocate a unique user code")
        shown = format_user_code(user_code)
        verification_uri = f"{self.authority.endpoint}/device"
        return {
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": verification_uri,
            "expires_in": DEVICE_CODE_LIFETIME_S,
            "interval": POLL_INTERVAL_S,
            "message": (
                f"To sign in, run `keyless login approve {shown}` where you are already signed "
                f"in to Keyless (instructions: {verification_uri}). The code expires in "
                f"{DEVICE_CODE_LIFETIME_S // 60} minutes; approve it only if you started this "
                "sign-in yourself."
            ),
        }

    # -------------------------------------------------------------------------- token grants

    def token(self, request: TokenRequest) -> dict[str, Any]:
        """The device code or refresh token grant at `POST /{tenant}/oauth2/v2.0/token`."""
        now = time.time()
        grant = request.form.get("grant_type", "")
        attempt = _Attempt(str(request.form.get("client_id", "unknown"))[:128])
        attempt.details["grant"] = grant
        try:
            snapshot = self.authority.cache.current()
            tenant = _tenant(snapshot, request.tenant_id)
            _public_client(request.form, request.basic_auth)
            resources = snapshot.resources.get(tenant.id, {})
            scope = request.form.get("scope")
            if grant == DEVICE_CODE_GRANT:
                # RFC 8628: the scope was given when the code was made; one here overrides it.
                asked = _resolve_user_scope(resources, scope) if scope else None
                if asked is not None:
                    attempt.audience = asked.audience
                return self._device_code_grant(request, snapshot, tenant, asked, attempt, now)
            resource = _resolve_user_scope(resources, scope)
            attempt.audience = resource.audience
            return self._refresh_grant(request, snapshot, tenant, resource, attempt, now)
        except OAuthError as exc:
            # A pending poll is not a refusal: the client is told to wait, as RFC 8628 expects,
            # and auditing every five seconds of waiting would drown the log.
            if exc.code != errors.AUTHORIZATION_PENDING:
                self._audit(
                    "token.issue",
                    request.tenant_id,
                    attempt,
                    exc.error,
                    request.trace_id,
                    request.client_ip,
                    now,
                    exc,
                )
            raise

    def _device_code_grant(
        self,
        request: TokenRequest,
        snapshot: Snapshot,
        tenant: TenantInfo,
        asked: ResourceInfo | None,
        attempt: _Attempt,
        now: float,
    ) -> dict[str, Any]:
        raw = _secret_field(request.form, "device_code", "device_code the devicecode endpoint gave")
        unknown = _invalid_grant(
            "the device code is not valid: it was never issued by this tenant, or was removed "
            "after it expired; start again with `keyless login --use-device-code`",
            errors.UNKNOWN_GRANT,
        )
        if raw is None:
            raise unknown
        failure: OAuthError | None = None
        result: dict[str, Any] = {}
        with Session(self.authority.engine) as session, session.begin():
            row = session.scalars(
                select(DeviceCode).where(
                    DeviceCode.device_code_sha256 == digest(raw),
                    DeviceCode.tenant_id == tenant.id,
                )
            ).first()
            resource = asked
            if row is not None:
                attempt.details["deviceCodeId"] = row.id
                if resource is None:
                    resource = snapshot.resources.get(tenant.id, {}).get(row.resource_id.lower())
                    attempt.audience = resource.audience if resource else ""
            if row is None or row.client_id != CLI_APP_ID:
                failure = unknown
            elif resource is None:
                failure = OAuthError(
                    "invalid_scope",
                    "the resource API this sign-in asked for no longer exists; start again",
                    errors.RESOURCE_NOT_FOUND,
                )
            elif row.status == "redeemed":
                failure = _invalid_grant(
                    "this device code was already used to sign in; a device code works once. "
                    "Start again with `keyless login --use-device-code`",
                    errors.DEVICE_CODE_REDEEMED,
                )
            elif row.status == "denied":
                attempt.actor = row.user_object_id or attempt.actor
                failure = OAuthError(
                    "access_denied",
                    "the sign-in was denied by the user asked to approve it "
                    "(`keyless login approve CODE --deny`)",
                    errors.DEVICE_CODE_DENIED,
                )
            elif row.expires_at <= now:
                failure = OAuthError(
                    "expired_token",
                    "the device code expired before the sign-in was approved (codes last "
                    f"{DEVICE_CODE_LIFETIME_S // 60} minutes); start again with "
                    "`keyless login --use-device-code`",
                    errors.DEVICE_CODE_EXPIRED,
                )
            elif row.status == "pending":
                early = (
                    row.last_poll_at is not None
                    and now - row.last_poll_at < row.interval_s - POLL_TOLERANCE_S
                )
                row.last_poll_at = now
                if early:
                    row.interval_s += SLOW_DOWN_STEP_S
                    failure = OAuthError(
                        "slow_down",
                        f"polling too fast: wait at least {row.interval_s} seconds between "
                        "requests",
                        errors.SLOW_DOWN,
                    )
                else:
                    failure = OAuthError(
                        "authorization_pending",
                        "the sign-in has not been approved yet; keep polling at the interval "
                        "the devicecode response gave",
                        errors.AUTHORIZATION_PENDING,
                    )
            else:  # approved: redeem it exactly once, even against a concurrent poll
                redeemed = session.execute(
                    update(DeviceCode)
                    .where(DeviceCode.id == row.id, DeviceCode.status == "approved")
                    .values(status="redeemed", last_poll_at=now)
                )
                user = session.get(User, row.user_object_id) if row.user_object_id else None
                if _rowcount(redeemed) != 1:
                    failure = _invalid_grant(
                        "this device code was already used to sign in; a device code works once",
                        errors.DEVICE_CODE_REDEEMED,
                    )
                elif user is None or user.tenant_id != tenant.id:
                    failure = _invalid_grant(
                        "the user who approved this sign-in no longer exists",
                        errors.USER_GONE,
                    )
                elif not user.account_enabled:
                    failure = _user_disabled()
                else:
                    attempt.actor = user.object_id
                    sign_in = start_session(session, tenant.id, user.object_id, "device_code", now)
                    session.flush()
                    result = self._issue(
                        session, snapshot, tenant, user, sign_in, resource, request, now
                    )
        if failure is not None:
            raise failure
        return result

    def _refresh_grant(
        self,
        request: TokenRequest,
        snapshot: Snapshot,
        tenant: TenantInfo,
        resource: ResourceInfo,
        attempt: _Attempt,
        now: float,
    ) -> dict[str, Any]:
        raw = _secret_field(request.form, "refresh_token", "refresh_token from your sign-in")
        unknown = _invalid_grant(
            "the refresh token is not valid: it was not issued by this tenant, or it expired "
            f"and was removed; {SIGN_IN_AGAIN}",
            errors.UNKNOWN_GRANT,
        )
        if raw is None:
            raise unknown
        failure: OAuthError | None = None
        result: dict[str, Any] = {}
        with Session(self.authority.engine) as session, session.begin():
            token = session.scalars(
                select(RefreshToken).where(
                    RefreshToken.token_sha256 == digest(raw),
                    RefreshToken.tenant_id == tenant.id,
                )
            ).first()
            sign_in = session.get(SignInSession, token.session_id) if token else None
            if token is None or sign_in is None:
                failure = unknown
            else:
                attempt.actor = sign_in.user_object_id
                attempt.details["sessionId"] = sign_in.id
                failure = self._check_refresh(session, token, sign_in, attempt, request, now)
            if failure is None and token is not None and sign_in is not None:
                rotated = session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.id == token.id, RefreshToken.status == "active")
                    .values(status="rotated", rotated_at=now)
                )
                user = session.get(User, sign_in.user_object_id)
                if _rowcount(rotated) != 1:  # another request rotated it a moment ago
                    failure = self._replayed(session, sign_in, request, now)
                elif user is None or user.tenant_id != tenant.id:
                    failure = _invalid_grant(
                        "the signed-in user no longer exists", errors.USER_GONE
                    )
                elif not user.account_enabled:
                    failure = _user_disabled()
                else:
                    sign_in.last_used_at = now
                    result = self._issue(
                        session, snapshot, tenant, user, sign_in, resource, request, now
                    )
        if failure is not None:
            raise failure
        return result

    def _check_refresh(
        self,
        session: Session,
        token: RefreshToken,
        sign_in: SignInSession,
        attempt: _Attempt,
        request: TokenRequest,
        now: float,
    ) -> OAuthError | None:
        if sign_in.client_id != CLI_APP_ID:
            return _invalid_grant(
                "the refresh token was issued to another client", errors.UNKNOWN_GRANT
            )
        if sign_in.revoked_at is not None:
            reason = _REVOKED_BECAUSE.get(sign_in.revoked_reason or "", "it was revoked")
            return _invalid_grant(
                f"this sign-in session was revoked: {reason}; {SIGN_IN_AGAIN}",
                errors.SESSION_REVOKED,
            )
        if token.status != "active":
            return self._replayed(session, sign_in, request, now)
        if token.expires_at <= now or sign_in.expires_at <= now:
            idle = token.expires_at <= now and sign_in.expires_at > now
            why = (
                f"it was not used for {REFRESH_IDLE_S // 86400} days"
                if idle
                else f"sign-ins last at most {SESSION_MAX_S // 86400} days"
            )
            return _invalid_grant(
                f"the refresh token has expired ({why}); {SIGN_IN_AGAIN}",
                errors.REFRESH_TOKEN_EXPIRED,
            )
        return None

    def _replayed(
        self, session: Session, sign_in: SignInSession, request: TokenRequest, now: float
    ) -> OAuthError:
        """A retired refresh token came back: whoever holds the family's tokens may be a thief,
        so every token of the session stops working, and the event is audited."""
        changed = session.execute(
            update(SignInSession)
            .where(SignInSession.id == sign_in.id, SignInSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason="replay")
        )
        if _rowcount(changed):
            bump_generation(session)  # the session's access tokens stop at Keyless's resources
        audit.write(
            session.connection(),
            audit.AuditRecord(
                actor=sign_in.user_object_id,
                action="session.revoke",
                target=sign_in.id,
                result="replay-detected",
                trace_id=request.trace_id,
                tenant_id=sign_in.tenant_id,
                details={"reason": "replay", "clientIp": request.client_ip},
                at=now,
            ),
        )
        return _invalid_grant(
            "this refresh token was already used once and replaced; presenting it again means "
            "it was copied, so every token of this sign-in session has been revoked; "
            f"{SIGN_IN_AGAIN}",
            errors.REFRESH_TOKEN_REPLAYED,
        )

    def _issue(
        self,
        session: Session,
        snapshot: Snapshot,
        tenant: TenantInfo,
        user: User,
        sign_in: SignInSession,
        resource: ResourceInfo,
        request: TokenRequest,
        now: float,
    ) -> dict[str, Any]:
        """An access token for `resource` and the session's next refresh token, with the grant
        audited in the same transaction."""
        refresh_token = add_refresh_token(session, sign_in, now)
        issued = mint(
            signer=self.authority.cache.signer(snapshot, tenant.id),
            issuer=self.authority.issuer(tenant.id),
            tenant=tenant,
            principal=user_principal(user, sign_in.auth_method, sign_in.id),
            resource=resource,
            auth_method="public_client",
            now=now,
        )
        session.flush()
        audit.write(
            session.connection(),
            audit.AuditRecord(
                actor=user.object_id,
                action="token.issue",
                target=resource.audience,
                result="granted",
                trace_id=request.trace_id,
                tenant_id=tenant.id,
                details={
                    "grant": request.form.get("grant_type", ""),
                    "clientId": CLI_APP_ID,
                    "sessionId": sign_in.id,
                    "tokenId": issued.jti,
                    "expiresOn": issued.expires_on,
                    "clientIp": request.client_ip,
                },
                at=now,
            ),
        )
        return {
            **issued.oauth_response(),
            "scope": f"{resource.audience}/.default offline_access",
            "refresh_token": refresh_token,
        }

    # ---------------------------------------------------------------------------- revocation

    def revoke(
        self,
        tenant_id: str,
        form: Mapping[str, str],
        basic_auth: object,
        trace_id: str,
        client_ip: str,
    ) -> None:
        """RFC 7009: revoking a refresh token ends its whole session. An unknown token is not
        an error (the client's goal, that it no longer works, holds)."""
        now = time.time()
        attempt = _Attempt(str(form.get("client_id", "unknown"))[:128])
        try:
            snapshot = self.authority.cache.current()
            tenant = _tenant(snapshot, tenant_id)
            _public_client(form, basic_auth)
            if form.get("token_type_hint") == "access_token":
                raise OAuthError(
                    "unsupported_token_type",
                    "access tokens are short-lived signed JWTs and cannot be revoked one by "
                    "one; revoke the refresh token, which ends the sign-in session",
                    errors.UNSUPPORTED_TOKEN_TYPE,
                )
            raw = _secret_field(form, "token", "refresh token to revoke as token")
            with Session(self.authority.engine) as session, session.begin():
                token = (
                    session.scalars(
                        select(RefreshToken).where(
                            RefreshToken.token_sha256 == digest(raw),
                            RefreshToken.tenant_id == tenant.id,
                        )
                    ).first()
                    if raw is not None
                    else None
                )
                sign_in = session.get(SignInSession, token.session_id) if token else None
                if sign_in is None:
                    result, target, actor = "unknown-token", "", attempt.actor
                else:
                    changed = session.execute(
                        update(SignInSession)
                        .where(SignInSession.id == sign_in.id, SignInSession.revoked_at.is_(None))
                        .values(revoked_at=now, revoked_reason="logout")
                    )
                    result = "revoked" if _rowcount(changed) else "already-revoked"
                    if _rowcount(changed):
                        # Its access tokens stop at Keyless's own resources too.
                        bump_generation(session)
                    target, actor = sign_in.id, sign_in.user_object_id
                audit.write(
                    session.connection(),
                    audit.AuditRecord(
                        actor=actor,
                        action="session.revoke",
                        target=target,
                        result=result,
                        trace_id=trace_id,
                        tenant_id=tenant.id,
                        details={"reason": "logout", "clientIp": client_ip},
                        at=now,
                    ),
                )
        except OAuthError as exc:
            self._audit(
                "session.revoke", tenant_id, attempt, exc.error, trace_id, client_ip, now, exc
            )
            raise

    def _audit(
        self,
        action: str,
        tenant_id: str,
        attempt: _Attempt,
        result: str,
        trace_id: str,
        client_ip: str,
        now: float,
        exc: OAuthError,
    ) -> None:
        known = tenant_id in self.authority.cache.current().tenants
        record = audit.AuditRecord(
            actor=attempt.actor,
            action=action,
            target=attempt.audience,
            result=result,
            trace_id=trace_id,
            tenant_id=tenant_id if known else None,
            details={
                **attempt.details,
                "errorCode": exc.code,
                "clientIp": client_ip,
                **({} if known else {"tenantPath": tenant_id[:64]}),
            },
            at=now,
        )
        with self.authority.engine.begin() as connection:
            audit.write(connection, record)


def _rowcount(result: Any) -> int:
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


# --------------------------------------------------------------- approval and administration


def decide_device_code(
    session: Session, tenant_id: str, approver_id: str, body: Mapping[str, Any], trace_id: str
) -> dict[str, Any]:
    """Approve (or deny) a waiting device sign-in; the approver becomes the signed-in user.

    There is deliberately no way to name another user: a code is approved for oneself only.
    """
    unknown = set(body) - {"userCode", "deny"}
    if unknown:
        raise DirectoryError(400, "BadRequest", f"unknown fields: {', '.join(sorted(unknown))}")
    deny = body.get("deny", False)
    if not isinstance(deny, bool):
        raise DirectoryError(400, "BadRequest", "deny must be true or false")
    code = normalize_user_code(body.get("userCode"))
    if code is None:
        raise DirectoryError(
            400,
            "BadRequest",
            "userCode must be the code `keyless login --use-device-code` printed: 8 letters "
            f"from {USER_CODE_ALPHABET}, as XXXX-XXXX",
        )
    now = time.time()
    row = session.scalars(
        select(DeviceCode).where(
            DeviceCode.user_code_sha256 == digest(code), DeviceCode.tenant_id == tenant_id
        )
    ).first()
    if row is None:
        raise DirectoryError(
            404,
            "DeviceCodeNotFound",
            "no sign-in is waiting for that code in this tenant; check the code (and the "
            "tenant), or start again with `keyless login --use-device-code`",
        )
    if row.status != "pending":
        done = {"approved": "approved", "denied": "denied", "redeemed": "used to sign in"}
        raise DirectoryError(
            409,
            "DeviceCodeAlreadyDecided",
            f"that code was already {done.get(row.status, row.status)}; a code can be approved "
            "or denied once",
        )
    if row.expires_at <= now:
        raise DirectoryError(
            410,
            "DeviceCodeExpired",
            "that code has expired; start again with `keyless login --use-device-code`",
        )
    status = "denied" if deny else "approved"
    changed = session.execute(
        update(DeviceCode)
        .where(DeviceCode.id == row.id, DeviceCode.status == "pending")
        .values(status=status, user_object_id=approver_id, decided_at=now)
    )
    if _rowcount(changed) != 1:
        raise DirectoryError(
            409, "DeviceCodeAlreadyDecided", "that code was decided by another request just now"
        )
    user = session.get(User, approver_id)
    audit.write(
        session.connection(),
        audit.AuditRecord(
            actor=approver_id,
            action="deviceCode.approve" if not deny else "deviceCode.deny",
            target=row.id,
            result=status,
            trace_id=trace_id,
            tenant_id=tenant_id,
            details={"deviceCodeId": row.id, "requestedFrom": row.client_ip, "scope": row.scope},
            at=now,
        ),
    )
    return {
        "status": status,
        "userCode": format_user_code(code),
        "clientId": row.client_id,
        "scope": row.scope,
        "requestedAt": row.created_at,
        "requestedFrom": row.client_ip,
        "user": user.user_principal_name if user else approver_id,
    }


def revoke_user_sessions(
    session: Session, tenant_id: str, ref: str, actor_id: str, trace_id: str
) -> dict[str, Any]:
    """An administrator ends every sign-in session of a user (object ID or UPN)."""
    user = find_user(session, tenant_id, ref)
    now = time.time()
    changed = session.execute(
        update(SignInSession)
        .where(SignInSession.user_object_id == user.object_id, SignInSession.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="admin")
    )
    # Access tokens already issued stop too, at Keyless's own resources: by session for those
    # of a sign-in session, by time for the others (keyless.authority.principal_state). The
    # generation bump drops every process's remembered tokens.
    user.tokens_valid_from = now
    bump_generation(session)
    audit.write(
        session.connection(),
        audit.AuditRecord(
            actor=actor_id,
            action="session.revoke",
            target=user.object_id,
            result="revoked",
            trace_id=trace_id,
            tenant_id=tenant_id,
            details={"reason": "admin", "sessions": _rowcount(changed)},
            at=now,
        ),
    )
    return {
        "value": True,
        "userId": user.object_id,
        "userPrincipalName": user.user_principal_name,
        "revokedSessions": _rowcount(changed),
        "revokedBy": actor_id,
    }


_last_purge = 0.0


def purge_expired(session: Session, now: float) -> None:
    """Drop what can no longer be used (at most once a minute; maintenance calls it often)."""
    global _last_purge
    if now - _last_purge < PURGE_INTERVAL_S:
        return
    _last_purge = now
    session.execute(delete(DeviceCode).where(DeviceCode.expires_at < now - 3600))
    session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))
    # A revoked session's tokens have all expired REFRESH_IDLE_S after the revocation. Until
    # then its row stays, even past the session's own end: it is how Keyless's resources know
    # that the access tokens it issued are revoked (keyless.authority.principal_state).
    done = or_(
        and_(SignInSession.expires_at < now, SignInSession.revoked_at.is_(None)),
        SignInSession.revoked_at < now - REFRESH_IDLE_S,
    )
    finished = select(SignInSession.id).where(done)
    session.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(finished)))
    session.execute(delete(SignInSession).where(done))
