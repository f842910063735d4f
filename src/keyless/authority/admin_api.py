"""The directory administration API (`/admin/v1/...`), used by the `keyless ad` and `keyless keys`
commands.

Every route takes a Keyless access token for the management API. Until role-based access
control arrives, only tenant administrators may call it (deny by default). Each write and each
refusal is audited.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.authority import accounts, directory, keys, refusals, sessions
from keyless.authority.caller_audit import audit_caller
from keyless.authority.context import Authority
from keyless.authority.credential_headers import RepeatedCredentialHeader, single_header
from keyless.authority.directory import DirectoryError
from keyless.authority.validation import InvalidToken, TokenClaims, validate_access_token
from keyless.base.body import BodyTooLarge, read_limited
from keyless.store import audit
from keyless.store.generation import bump_generation
from keyless.store.models import ResourceApi, ServicePrincipal, SigningKey, Tenant, User
from keyless.store.transaction import run_write

MAX_BODY = 64 * 1024
Handler = Callable[[Session, TokenClaims, Request, dict[str, Any]], Any]


def _fail(status: int, code: str, message: str) -> JSONResponse:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _bearer(request: Request) -> str:
    header = single_header(request.headers, "Authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise InvalidToken(
            "this API needs `Authorization: Bearer <token>` for api://keyless/management; "
            "sign in with `keyless login`",
            "no_token",
        )
    return value.strip()


def _is_admin(session: Session, claims: TokenClaims) -> bool:
    if claims.idtyp != "user":
        return False
    user = session.get(User, claims.object_id)
    return bool(user and user.tenant_id == claims.tenant_id and user.is_tenant_admin)


def _is_user(session: Session, claims: TokenClaims) -> bool:
    """Any signed-in user of the tenant (not an application)."""
    if claims.idtyp != "user":
        return False
    user = session.get(User, claims.object_id)
    return bool(user and user.tenant_id == claims.tenant_id)


# Who may call a route: the kind is declared on the route (see keyless.server.openapi).
_CALLERS = {
    "tenant-admin": (_is_admin, "only tenant administrators may change the directory"),
    "user": (_is_user, "only a signed-in user may do this, for themselves"),
}


class _Denied(Exception):
    pass


class AdminApi:
    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    def route(
        self, path: str, method: str, action: str, handler: Handler, who: str = "tenant-admin"
    ) -> Route:
        """Wrap `handler` with token checks, the caller check (`who`: tenant administrators,
        or any signed-in user), one transaction and auditing."""
        writes = method != "GET"

        async def endpoint(request: Request) -> Response:
            trace_id = str(uuid.uuid4())
            try:
                token = _bearer(request)
                raw = await read_limited(request, MAX_BODY) if writes else b""
            except InvalidToken as exc:
                await refusals.recorded_async(
                    self._refused(request, None, exc.code, 401, action, trace_id)
                )
                return _fail(401, "InvalidAuthenticationToken", str(exc))
            except RepeatedCredentialHeader as exc:
                reason = "repeated_authorization_header"
                await refusals.recorded_async(
                    self._refused(request, None, reason, 400, action, trace_id)
                )
                return _fail(400, "InvalidAuthenticationHeader", str(exc))
            except BodyTooLarge as exc:
                return _fail(413, "RequestTooLarge", str(exc))
            return await run_in_threadpool(
                self._run, request, token, raw, action, handler, writes, trace_id, who
            )

        route = Route(path, endpoint, methods=[method], name=action)
        route.keyless_authorization = who  # type: ignore[attr-defined]
        return route

    def _run(
        self,
        request: Request,
        token: str,
        raw: bytes,
        action: str,
        handler: Handler,
        writes: bool,
        trace_id: str,
        who: str = "tenant-admin",
    ) -> Response:
        try:
            claims = validate_access_token(self.authority, token, "management")
        except InvalidToken as exc:
            refusals.recorded(self._refused(request, token, exc.code, 401, action, trace_id))
            return _fail(401, "InvalidAuthenticationToken", str(exc))
        target = request.url.path
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _fail(400, "BadRequest", "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _fail(400, "BadRequest", "the request body must be a JSON object")
        allowed, rule = _CALLERS[who]
        request.state.trace_id = trace_id

        def transaction(session: Session) -> Any:
            if not allowed(session, claims):
                raise _Denied
            return handler(session, claims, request, body)

        try:
            # Run again if a concurrent writer wins a unique key (keyless.store.transaction).
            result = run_write(self.authority.engine, transaction)
        except _Denied:
            refusals.recorded(
                refusals.caller_refused(self.authority, claims, action, target, trace_id)
            )
            return _fail(
                403,
                "AuthorizationFailed",
                f"the caller {claims.object_id} may not perform {action}: {rule}",
            )
        except DirectoryError as exc:
            if writes:
                self._audit(claims, action, target, f"failed:{exc.code}", trace_id)
            return _fail(exc.status, exc.code, exc.message)
        if writes:
            self._audit(claims, action, target, "succeeded", trace_id)
        status = 201 if method_is_create(action) else 200
        return JSONResponse(result, status_code=status)

    def _refused(
        self,
        request: Request,
        token: str | None,
        reason: str,
        status: int,
        action: str,
        trace_id: str,
    ) -> Future[bool] | None:
        return refusals.token_refused(
            self.authority, request, token, reason, status, action, trace_id
        )

    def _audit(
        self, claims: TokenClaims, action: str, target: str, result: str, trace_id: str
    ) -> None:
        audit_caller(self.authority, claims, action, target, result, trace_id)


def method_is_create(action: str) -> bool:
    return action.endswith(".create")


# ------------------------------------------------------------------------------------ handlers


def _sp_create(s: Session, c: TokenClaims, _r: Request, body: dict[str, Any]) -> Any:
    name = body.get("displayName")
    cert_pem = body.get("certificate")
    want_secret = body.get("createSecret", False)
    if not isinstance(want_secret, bool):
        raise directory._bad("createSecret must be true or false")
    if cert_pem is not None and not isinstance(cert_pem, str):
        raise directory._bad("certificate must be a PEM string")
    if cert_pem and want_secret:
        raise directory._bad("choose a certificate or a secret, not both")
    cert = directory.parse_certificate(cert_pem) if cert_pem else None
    years = body.get("secretYears", 1)
    if not isinstance(years, int | float) or isinstance(years, bool):
        raise directory._bad("secretYears must be a number")
    update = body.get("updateExisting", False)
    if not isinstance(update, bool):
        raise directory._bad("updateExisting must be true or false")
    existing = _existing_application(s, c.tenant_id, name) if update else None
    if existing is not None:
        # As `az ad sp create-for-rbac` on a name that exists: the app is updated, not
        # duplicated, and a new credential replaces the old ones (a reset).
        sp = existing
        if cert is not None or want_secret:
            directory.remove_certificates_and_secrets(s, sp.app_id)
    else:
        sp = directory.create_service_principal(s, c.tenant_id, str(name) if name else "")
    out: dict[str, Any] = {
        **directory.sp_json(sp),
        "tenant": c.tenant_id,
        "existing": existing is not None,
    }
    if cert is not None:
        out["certificate"] = directory.add_certificate(s, c.tenant_id, sp.app_id, cert)
    if want_secret:
        secret = directory.add_secret(s, c.tenant_id, sp.app_id, float(years))
        out["password"] = secret.value
        out["passwordKeyId"] = secret.key_id
        out["passwordEndDateTime"] = secret.expires_at
    return out


def _existing_application(s: Session, tenant_id: str, name: object) -> Any:
    """The one application named `name`, or None; several are ambiguous (409)."""
    if not isinstance(name, str) or not name:
        return None
    found = s.scalars(
        select(ServicePrincipal).where(
            ServicePrincipal.tenant_id == tenant_id,
            ServicePrincipal.display_name == name,
            ServicePrincipal.kind == "Application",
        )
    ).all()
    if len(found) > 1:
        raise DirectoryError(
            409,
            "Ambiguous",
            f"{len(found)} applications are named {name[:100]!r}; update one by its appId "
            "(`keyless ad sp list` shows them; `keyless ad sp credential reset --id APPID`)",
        )
    return found[0] if found else None


def _sp_list(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    return {"value": directory.list_service_principals(s, c.tenant_id)}


def _sp_show(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    return directory.sp_json(directory.find_service_principal(s, c.tenant_id, r.path_params["id"]))


def _sp_delete(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    sp = directory.delete_service_principal(s, c.tenant_id, r.path_params["id"])
    return {"deleted": sp.app_id}


def _sp_add_credential(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    sp = directory.find_service_principal(s, c.tenant_id, r.path_params["id"])
    if sp.kind != "Application":
        raise directory._bad("managed identities take no certificates or secrets")
    append = body.get("append", False)
    if not isinstance(append, bool):
        raise directory._bad("append must be true or false")
    cert = None
    if "certificate" in body:
        cert_pem = body["certificate"]
        if not isinstance(cert_pem, str):
            raise directory._bad("certificate must be a PEM string")
        cert = directory.parse_certificate(cert_pem)
    years = body.get("secretYears", 1)
    if not isinstance(years, int | float) or isinstance(years, bool):
        raise directory._bad("secretYears must be a number")
    if not append:
        # As `az ad sp credential reset`: a reset replaces the certificates and secrets (a
        # leaked one must stop working); federated credentials are not secrets and stay.
        directory.remove_certificates_and_secrets(s, sp.app_id)
    if cert is not None:
        return directory.add_certificate(s, c.tenant_id, sp.app_id, cert)
    secret = directory.add_secret(s, c.tenant_id, sp.app_id, float(years))
    return {
        "appId": sp.app_id,
        "password": secret.value,
        "keyId": secret.key_id,
        "endDateTime": secret.expires_at,
        "tenant": c.tenant_id,
    }


def _fic_create(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    sp = directory.find_service_principal(s, c.tenant_id, r.path_params["id"])
    return directory.add_federated_credential(s, c.tenant_id, sp.app_id, body)


def _fic_list(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    sp = directory.find_service_principal(s, c.tenant_id, r.path_params["id"])
    return {"value": directory.list_federated_credentials(s, sp.app_id)}


def _fic_delete(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    sp = directory.find_service_principal(s, c.tenant_id, r.path_params["id"])
    directory.delete_federated_credential(s, sp.app_id, r.path_params["name"])
    return {"deleted": r.path_params["name"]}


def _users(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    return {"value": accounts.list_users(s, c.tenant_id)}


def _sp_update(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    enabled = accounts.account_enabled(body)
    return accounts.set_service_principal_enabled(s, c.tenant_id, r.path_params["id"], enabled)


def _user_update(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    enabled = accounts.account_enabled(body)
    return accounts.set_user_enabled(s, c.tenant_id, r.path_params["id"], enabled, c.object_id)


def _revoke_sessions(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    return sessions.revoke_user_sessions(
        s, c.tenant_id, r.path_params["id"], c.object_id, r.state.trace_id
    )


def _approve(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    return sessions.decide_device_code(s, c.tenant_id, c.object_id, body, r.state.trace_id)


def _group_create(s: Session, c: TokenClaims, _r: Request, body: dict[str, Any]) -> Any:
    return directory.group_json(directory.create_group(s, c.tenant_id, body.get("displayName")))


def _group_list(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    return {"value": directory.list_groups(s, c.tenant_id)}


def _member_add(s: Session, c: TokenClaims, r: Request, body: dict[str, Any]) -> Any:
    directory.add_member(s, c.tenant_id, r.path_params["id"], body.get("memberId"))
    return {"added": body.get("memberId")}


def _member_list(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
    return {"value": directory.list_members(s, c.tenant_id, r.path_params["id"])}


def _key_json(key: SigningKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "status": key.status,
        "createdAt": key.created_at,
        "activatedAt": key.activated_at,
        "retiredAt": key.retired_at,
        "publishedUntil": key.published_until,
    }


def _keys_list(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    tenant = s.get(Tenant, c.tenant_id)
    return {
        "value": [_key_json(k) for k in keys.published_keys(s, c.tenant_id)],
        "rotationIntervalSeconds": tenant.key_rotation_interval_s if tenant else None,
    }


def _apis(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    rows = s.scalars(
        select(ResourceApi).where(ResourceApi.tenant_id == c.tenant_id).order_by(ResourceApi.name)
    )
    return {
        "value": [
            {
                "id": api.id,
                "name": api.name,
                "audience": api.identifier_uris[0],
                "identifierUris": list(api.identifier_uris),
                "builtIn": api.built_in,
            }
            for api in rows
        ]
    }


def _tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "displayName": tenant.display_name,
        "domain": tenant.domain,
        "tokenLifetimeSeconds": tenant.token_lifetime_s,
        "keyRotationIntervalSeconds": tenant.key_rotation_interval_s,
    }


def _tenant_show(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
    tenant = s.get(Tenant, c.tenant_id)
    if tenant is None:
        raise directory._not_found("the tenant no longer exists")
    return _tenant_json(tenant)


def _bounded_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise directory._bad(f"{key} must be a whole number of seconds from {low} to {high}")
    return value


def _tenant_update(s: Session, c: TokenClaims, _r: Request, body: dict[str, Any]) -> Any:
    unknown = set(body) - {"tokenLifetimeSeconds", "keyRotationIntervalSeconds"}
    if unknown:
        raise directory._bad(f"unknown settings: {', '.join(sorted(unknown))}")
    lifetime = _bounded_int(body, "tokenLifetimeSeconds", 5, 86400)
    interval = _bounded_int(body, "keyRotationIntervalSeconds", 2, 365 * 86400)
    tenant = s.get(Tenant, c.tenant_id)
    if tenant is None:
        raise directory._not_found("the tenant no longer exists")
    if lifetime is not None:
        if lifetime < tenant.token_lifetime_s:
            # Tokens the active key already signed keep the longer lifetime: record how long
            # the key must stay in JWKS once it retires (keys.rotate honours it).
            now = time.time()
            keep = now + tenant.token_lifetime_s + keys.RETIREMENT_GRACE_S
            # The keys that sign or may still sign: the active one, and a retired one that
            # signs until a promoted key has been published long enough (keys.rotate).
            for key in s.scalars(
                select(SigningKey).where(
                    SigningKey.tenant_id == tenant.id,
                    (SigningKey.status == "active")
                    | ((SigningKey.status == "retired") & (SigningKey.retired_at > now)),
                )
            ):
                key.published_until = max(key.published_until or 0.0, keep)
        tenant.token_lifetime_s = lifetime
    if interval is not None:
        tenant.key_rotation_interval_s = interval
    bump_generation(s)
    return _tenant_json(tenant)


def build_routes(authority: Authority) -> list[Route]:
    api = AdminApi(authority)

    def _keys_rotate(s: Session, c: TokenClaims, _r: Request, _b: dict[str, Any]) -> Any:
        try:
            now = time.time()
            rotation = keys.rotate(
                s, authority.master, c.tenant_id, now, jwks_max_age_s=authority.jwks_max_age_s
            )
        except keys.RotationConflict as exc:
            raise DirectoryError(409, "Conflict", f"{exc}; try again") from None
        # signsFrom: later than rotatedAt when the key has not yet been in JWKS for as long
        # as relying parties cache it; the key it replaces signs until then.
        return {
            "activeKid": rotation.active_kid,
            "rotatedAt": now,
            "signsFrom": rotation.signs_from,
        }

    def _audit_list(s: Session, c: TokenClaims, r: Request, _b: dict[str, Any]) -> Any:
        q = r.query_params
        try:
            limit = min(int(q.get("limit", "100")), 1000)
            since = float(q["since"]) if "since" in q else None
        except ValueError:
            raise directory._bad("limit and since must be numbers") from None
        return {
            "value": audit.query(
                s,
                tenant_id=c.tenant_id,
                action=q.get("action"),
                actor=q.get("actor"),
                result=q.get("result"),
                since=since,
                limit=limit,
            )
        }

    p = "/admin/v1"
    return [
        api.route(
            f"{p}/servicePrincipals", "POST", "directory.servicePrincipals.create", _sp_create
        ),
        api.route(f"{p}/servicePrincipals", "GET", "directory.servicePrincipals.list", _sp_list),
        api.route(
            f"{p}/servicePrincipals/{{id}}", "GET", "directory.servicePrincipals.read", _sp_show
        ),
        api.route(
            f"{p}/servicePrincipals/{{id}}",
            "DELETE",
            "directory.servicePrincipals.delete",
            _sp_delete,
        ),
        api.route(
            f"{p}/servicePrincipals/{{id}}",
            "PATCH",
            "directory.servicePrincipals.update",
            _sp_update,
        ),
        api.route(f"{p}/users/{{id}}", "PATCH", "directory.users.update", _user_update),
        api.route(
            f"{p}/servicePrincipals/{{id}}/credentials",
            "POST",
            "directory.credentials.create",
            _sp_add_credential,
        ),
        api.route(
            f"{p}/servicePrincipals/{{id}}/federatedIdentityCredentials",
            "POST",
            "directory.federatedCredentials.create",
            _fic_create,
        ),
        api.route(
            f"{p}/servicePrincipals/{{id}}/federatedIdentityCredentials",
            "GET",
            "directory.federatedCredentials.list",
            _fic_list,
        ),
        api.route(
            f"{p}/servicePrincipals/{{id}}/federatedIdentityCredentials/{{name}}",
            "DELETE",
            "directory.federatedCredentials.delete",
            _fic_delete,
        ),
        api.route(f"{p}/resourceApis", "GET", "directory.resourceApis.list", _apis),
        api.route(f"{p}/users", "GET", "directory.users.list", _users),
        api.route(
            f"{p}/users/{{id}}/revokeSignInSessions",
            "POST",
            "directory.users.revokeSignInSessions",
            _revoke_sessions,
        ),
        # Any signed-in user approves (or denies) a device sign-in, for themselves only.
        api.route(
            f"{p}/deviceCodes/approve", "POST", "signIn.deviceCodes.approve", _approve, who="user"
        ),
        api.route(f"{p}/groups", "POST", "directory.groups.create", _group_create),
        api.route(f"{p}/groups", "GET", "directory.groups.list", _group_list),
        api.route(
            f"{p}/groups/{{id}}/members", "POST", "directory.groupMembers.create", _member_add
        ),
        api.route(f"{p}/groups/{{id}}/members", "GET", "directory.groupMembers.list", _member_list),
        api.route(f"{p}/signingKeys", "GET", "authority.signingKeys.list", _keys_list),
        api.route(f"{p}/signingKeys/rotate", "POST", "authority.signingKeys.rotate", _keys_rotate),
        api.route(f"{p}/tenant", "GET", "authority.tenant.read", _tenant_show),
        api.route(f"{p}/tenant", "PATCH", "authority.tenant.update", _tenant_update),
        api.route(f"{p}/audit", "GET", "audit.events.list", _audit_list),
    ]
