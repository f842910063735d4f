"""`POST /{tenant}/oauth2/v2.0/token`: the client credentials grant, as Entra ID answers it.

Runs synchronously (in a worker thread): it is store reads, one RSA signature and one write.
The write records the assertion's `jti` (refusing replays across every process) and the audit
record in one transaction, so a granted token is never missing from the audit log; the
transaction is shared with whatever other requests wait at that moment (`GrantLog`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import unquote_plus

from keyless.authority import errors
from keyless.authority.cache import ClientRecord, ResourceInfo, Snapshot, TenantInfo
from keyless.authority.client_auth import (
    ASSERTION_TYPE,
    Authenticated,
    check_certificate_assertion,
    check_federated_assertion,
    check_secret,
    unverified_parts,
)
from keyless.authority.context import Authority
from keyless.authority.errors import OAuthError, invalid_client, invalid_request
from keyless.authority.sessions import USER_GRANTS, DeveloperSignIn
from keyless.authority.tokens import IssuedToken, Principal, mint
from keyless.store import audit
from keyless.store.grant_log import RecordSink

_MAX_FIELD = 16 * 1024


@dataclass(frozen=True)
class TokenRequest:
    tenant_id: str
    form: Mapping[str, str]
    basic_auth: tuple[str, str] | None
    trace_id: str
    client_ip: str


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 2.3.1: `Basic base64(urlencode(id):urlencode(secret))`."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise invalid_request("the Authorization header must use the Basic scheme, or be left out")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_request("the Basic Authorization header is not valid base64") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_request("the Basic Authorization header must hold client_id:client_secret")
    try:
        return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except UnicodeDecodeError:
        raise invalid_request("the Basic Authorization header is not URL-encoded UTF-8") from None


def _resolve_scope(resources: dict[str, ResourceInfo], scope: str | None) -> ResourceInfo:
    if not scope:
        raise OAuthError(
            "invalid_scope",
            "the request has no scope; ask for {resource}/.default, e.g. "
            "api://keyless/management/.default",
            errors.INVALID_SCOPE,
        )
    scopes = [s for s in scope.split(" ") if s and s not in ("openid", "profile", "offline_access")]
    defaults = [s for s in scopes if s.endswith("/.default")]
    if len(scopes) != 1 or len(defaults) != 1:
        raise OAuthError(
            "invalid_scope",
            "the client credentials grant takes exactly one scope of the form {resource}/.default",
            errors.INVALID_SCOPE,
        )
    return resolve_resource(resources, defaults[0][: -len("/.default")])


def resolve_resource(resources: dict[str, ResourceInfo], name: str) -> ResourceInfo:
    """A resource API by any of its names (Keyless or Azure), ignoring case and a trailing /."""
    resource = resources.get(name.rstrip("/").lower())
    if resource is None:
        raise OAuthError(
            "invalid_scope",
            f"no resource API named {name[:200]!r} is registered in this tenant; "
            "`keyless ad api list` shows the audiences tokens can be issued for",
            errors.RESOURCE_NOT_FOUND,
        )
    return resource


def _field(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name)
    if value is not None and len(value) > _MAX_FIELD:
        raise invalid_request(f"the form field {name} is longer than 16 KiB")
    return value


def _authenticate(
    authority: Authority,
    client: ClientRecord | None,
    client_id: str,
    request: TokenRequest,
    secret: str | None,
    now: float,
    may_fetch: bool,
) -> Authenticated:
    assertion = _field(request.form, "client_assertion")
    assertion_type = request.form.get("client_assertion_type")
    if secret is not None and assertion is not None:
        raise invalid_request("send either a client secret or a client_assertion, not both")
    if assertion is not None:
        if assertion_type != ASSERTION_TYPE:
            raise invalid_request(
                f"client_assertion_type must be {ASSERTION_TYPE}", errors.BAD_ASSERTION
            )
        # Workload identity token files end in a newline that azure-identity sends as is.
        assertion = assertion.strip()
        parsed = unverified_parts(assertion)
        header, claims = parsed.header, parsed.claims
        if client is None:
            raise _unknown_client(client_id, request.tenant_id)
        iss, sub = claims.get("iss"), claims.get("sub")
        # iss or sub naming the client marks a certificate assertion (RFC 7523 wants both):
        # unless a federated credential matches, report its faults as one, not as federation.
        if client_id in (iss, sub) and not any(
            f.issuer == iss and f.subject == sub for f in client.federated
        ):
            return check_certificate_assertion(
                client, parsed, authority.assertion_audiences(request.tenant_id), now
            )
        return check_federated_assertion(
            client, assertion, header, claims, authority.issuer_keys, now, may_fetch
        )
    if secret is not None:
        if client is None:
            raise _unknown_client(client_id, request.tenant_id)
        return check_secret(client, secret, now)
    raise invalid_client(
        "the request has no client credential; send client_secret, or client_assertion with "
        f"client_assertion_type={ASSERTION_TYPE}",
        errors.NO_CREDENTIAL,
    )


def application_disabled(client_id: str) -> OAuthError:
    """Checked after the client proved who it is: nobody else learns that it is disabled."""
    return OAuthError(
        "unauthorized_client",
        f"the application {client_id} is disabled; a tenant administrator can enable it with "
        f"`keyless ad sp update --id {client_id} --set accountEnabled=true`",
        errors.APPLICATION_DISABLED,
    )


def _unknown_client(client_id: str, tenant_id: str) -> OAuthError:
    return OAuthError(
        "unauthorized_client",
        f"no application with client ID {client_id!r} exists in tenant {tenant_id}; check "
        "AZURE_CLIENT_ID and AZURE_TENANT_ID (`keyless ad sp list` shows the app IDs)",
        errors.UNKNOWN_CLIENT,
    )


def _client_id(request: TokenRequest) -> tuple[str, str | None]:
    form_id = _field(request.form, "client_id")
    secret = _field(request.form, "client_secret")
    if request.basic_auth is not None:
        basic_id, basic_secret = request.basic_auth
        if secret is not None:
            raise invalid_request(
                "the client secret was sent both in the Authorization header and in the "
                "form; send it one way only"
            )
        if form_id is not None and form_id != basic_id:
            raise invalid_request("client_id in the form differs from the Authorization header")
        return basic_id, basic_secret
    if not form_id:
        raise invalid_request("the request has no client_id")
    if len(form_id) > 128:
        raise invalid_request("client_id is longer than 128 characters")
    return form_id, secret


@dataclass
class PendingGrant:
    """A decided token request whose audit record (and assertion jti) is on its way to the
    store. Nothing is answered until `committed` is done: a token is never handed out before
    its audit record is durable, nor an assertion accepted before its jti is claimed."""

    committed: Future[bool]
    response: dict[str, object] | None = None  # None when refused
    error: OAuthError | None = None
    # Records the refusal of a replayed assertion (in the given sink) and returns it.
    on_replay: Callable[[RecordSink | None], OAuthError] | None = None


def _already_committed() -> Future[bool]:
    done: Future[bool] = Future()
    done.set_result(True)
    return done


class TokenEndpoint:
    def __init__(self, authority: Authority) -> None:
        self._authority = authority
        self._users = DeveloperSignIn(authority)

    def snapshot(self) -> Snapshot:
        """The directory as the store has it now (one indexed read when nothing moved)."""
        return self._authority.cache.current()

    def decide(
        self,
        request: TokenRequest,
        may_fetch: bool = True,
        snapshot: Snapshot | None = None,
        records: RecordSink | None = None,
    ) -> PendingGrant:
        """Everything but waiting for the store: authenticate, mint, and queue the records.

        With `may_fetch` false it never waits on the network: a federated assertion whose
        issuer's keys are not cached raises FetchNeeded before anything is recorded.
        `snapshot`: the directory as read after this request arrived (by default, read now);
        `records`: where its records go (by default, the grant log's writer)."""
        sink = records or self._authority.grant_log
        now = time.time()
        client_id = "unknown"
        audience = ""
        grant = request.form.get("grant_type", "")
        if grant in USER_GRANTS:  # developer sign-in: the device code and refresh token grants
            try:  # (audited by DeveloperSignIn itself, in its own transactions)
                return PendingGrant(_already_committed(), self._users.token(request))
            except OAuthError as exc:
                return PendingGrant(_already_committed(), error=exc)
        try:
            snapshot = snapshot or self._authority.cache.current()
            tenant = snapshot.tenants.get(request.tenant_id)
            if tenant is None:
                raise invalid_request(
                    f"tenant {request.tenant_id[:64]!r} was not found; check AZURE_TENANT_ID "
                    "(`keyless env` prints it)",
                    errors.TENANT_NOT_FOUND,
                )
            if not grant:  # a missing parameter is invalid_request (RFC 6749 5.2), as in Entra
                raise invalid_request("the request has no grant_type; use client_credentials")
            if grant != "client_credentials":
                raise OAuthError(
                    "unsupported_grant_type",
                    "this endpoint supports grant_type=client_credentials (applications), "
                    "urn:ietf:params:oauth:grant-type:device_code and refresh_token (the "
                    "Keyless CLI's developer sign-in)",
                    errors.UNSUPPORTED_GRANT,
                )
            client_id, secret = _client_id(request)
            resources = snapshot.resources.get(tenant.id, {})
            resource = _resolve_scope(resources, request.form.get("scope"))
            audience = resource.audience
            client = self._authority.cache.client(snapshot, tenant.id, client_id)
            authenticated = _authenticate(
                self._authority, client, client_id, request, secret, now, may_fetch
            )
            if not authenticated.client.enabled:
                raise application_disabled(client_id)
            issued = self._mint(snapshot, tenant, authenticated, resource, now)
        except OAuthError as exc:
            committed = self._audit(
                request, client_id, grant, audience, exc.error, now, exc.code, sink
            )
            return PendingGrant(committed, error=exc)
        return self._record_grant(request, authenticated, issued, audience, now, sink)

    @staticmethod
    def conclude(
        pending: PendingGrant, committed: bool, records: RecordSink | None = None
    ) -> dict[str, object]:
        """The response once the records are committed; raises the refusal's OAuthError.
        A replay's refusal record goes to `records` (by default, the grant log's writer)."""
        if pending.error is not None:
            raise pending.error
        if not committed and pending.on_replay is not None:
            raise pending.on_replay(records)
        assert pending.response is not None
        return pending.response

    def _mint(
        self,
        snapshot: Snapshot,
        tenant: TenantInfo,
        authenticated: Authenticated,
        resource: ResourceInfo,
        now: float,
    ) -> IssuedToken:
        client = authenticated.client
        extra: dict[str, object] = {}
        if client.resource_id:
            extra["xms_mirid"] = client.resource_id
        principal = Principal(client.object_id, "app", client.app_id, extra)
        signer = self._authority.cache.signer(snapshot, tenant.id)
        return mint(
            signer=signer,
            issuer=self._authority.issuer(tenant.id),
            tenant=tenant,
            principal=principal,
            resource=resource,
            auth_method=authenticated.method,
            now=now,
        )

    def _record_grant(
        self,
        request: TokenRequest,
        authenticated: Authenticated,
        issued: IssuedToken,
        audience: str,
        now: float,
        sink: RecordSink,
    ) -> PendingGrant:
        record = audit.AuditRecord(
            actor=authenticated.client.app_id,
            action="token.issue",
            target=audience,
            result="granted",
            trace_id=request.trace_id,
            tenant_id=request.tenant_id,
            details={
                "grant": "client_credentials",
                "method": authenticated.method,
                "credential": authenticated.credential_id,
                "objectId": authenticated.client.object_id,
                "tokenId": issued.jti,
                "expiresOn": issued.expires_on,
                "clientIp": request.client_ip,
            },
            at=now,
        )
        jti_row = None
        if authenticated.replay_key is not None:
            jti, keep_until = authenticated.replay_key
            jti_row = {
                "client_id": authenticated.client.app_id,
                "jti": jti,
                "expires_at": keep_until,
            }

        def replayed(records: RecordSink | None) -> OAuthError:
            # Nothing was recorded for the grant (its jti was taken): record the refusal.
            exc = invalid_client(
                "this client_assertion was already used (its jti was seen before); create a "
                "new assertion for every request",
                errors.ASSERTION_REPLAYED,
            )
            app_id = authenticated.client.app_id
            self._audit(
                request, app_id, "client_credentials", audience, exc.error, now, exc.code, records
            )
            return exc

        committed = sink.submit(record, jti_row)
        return PendingGrant(committed, issued.oauth_response(), on_replay=replayed)

    def record_refusal(
        self, tenant_id: str, trace_id: str, client_ip: str, error: OAuthError
    ) -> None:
        """Audit a request refused before it could be parsed: who sent it is not known."""
        known = tenant_id in self._authority.cache.current().tenants
        record = audit.AuditRecord(
            actor="unknown",
            action="token.issue",
            target="",
            result=error.error,
            trace_id=trace_id,
            tenant_id=tenant_id if known else None,
            details={"errorCode": error.code, "clientIp": client_ip, "tenantPath": tenant_id[:64]},
        )
        self._authority.grant_log.record(record)

    def _audit(
        self,
        request: TokenRequest,
        client_id: str,
        grant: str,
        audience: str,
        error: str,
        now: float,
        reason: int,
        sink: RecordSink | None = None,
    ) -> Future[bool]:
        record = audit.AuditRecord(
            actor=client_id[:128],
            action="token.issue",
            target=audience,
            result=error,
            trace_id=request.trace_id,
            tenant_id=request.tenant_id[:36],
            details={"grant": grant[:64], "errorCode": reason, "clientIp": request.client_ip},
            at=now,
        )
        return (sink or self._authority.grant_log).submit(record)
