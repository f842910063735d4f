"""Every bad input to `POST /{tenant}/oauth2/v2.0/token` gets the right OAuth error.

Each case checks (a) the HTTP status and the RFC 6749 `error` name, (b) the Entra-shaped body
(`error`, `error_description`, `error_codes`, `timestamp`, `trace_id`), (c) that no token is
issued, (d) that the description names what is wrong without echoing the secret or assertion
sent, and (e) where the request reached the token service, that the refusal is in the audit log
under the response's trace ID.

Assertions are built here with PyJWT and cryptography (not with a Keyless helper), the way MSAL
builds them: `iss` = `sub` = client ID, `aud` = the token endpoint, `jti`, `exp`, and an `x5t`
header holding the base64url SHA-1 of the certificate's DER.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.server import KeylessServer, running_server

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "api://keyless/management/.default"
FED_ISSUER = "https://issuer.example"
FED_SUBJECT = "sub-1"
FED_AUDIENCE = "api://AzureADTokenExchange"
BODY_KEYS = ("error", "error_description", "error_codes", "timestamp", "trace_id")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z$")
DROP = object()  # a claim value meaning "leave this claim out"


# --- keys, certificates and assertions, built here ------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def x5t_of(cert: x509.Certificate) -> str:
    return b64url(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())


def self_signed(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class CertClient:
    app_id: str
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def x5t(self) -> str:
        return x5t_of(self.cert)


@dataclass(frozen=True)
class SecretClient:
    app_id: str
    password: str


@dataclass(frozen=True)
class Ctx:
    """What an assertion-building case needs."""

    server: KeylessServer
    client: CertClient
    other_key: rsa.RSAPrivateKey
    other_cert: x509.Certificate


def claims_for(app_id: str, audience: str, **overrides: Any) -> dict[str, Any]:
    now = time.time()
    claims: dict[str, Any] = {
        "iss": app_id,
        "sub": app_id,
        "aud": audience,
        "jti": str(uuid.uuid4()),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 600,
    }
    for name, value in overrides.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(
    claims: dict[str, Any], key: rsa.RSAPrivateKey, x5t: str | None, alg: str = "RS256"
) -> str:
    headers = {"x5t": x5t} if x5t is not None else {}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def unsigned_token(
    header: dict[str, Any], claims: dict[str, Any], signing_input_key: bytes | None
) -> str:
    """A JWT assembled by hand: alg none (no key) or HS256 with the given bytes as HMAC key.
    PyJWT refuses to HMAC with a PEM public key, which is exactly the attack tried here."""
    head = b64url(json.dumps(header, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    if signing_input_key is None:
        return f"{head}.{body}."
    mac = hmac.new(signing_input_key, signing_input, hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def good_assertion(ctx: Ctx, **overrides: Any) -> str:
    claims = claims_for(ctx.client.app_id, ctx.server.token_url(), **overrides)
    return sign(claims, ctx.client.key, ctx.client.x5t)


def assertion_form(app_id: str, assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": app_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": SCOPE,
        **extra,
    }


def secret_form(app_id: str, secret: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": app_id,
        "client_secret": secret,
        "scope": SCOPE,
        **extra,
    }


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


# --- checking responses and the audit log ---------------------------------------------------


def expect_error(
    response: httpx.Response,
    status: int,
    error: str,
    mentions: tuple[str, ...] = (),
    *,
    hidden: tuple[str, ...] = (),
    absent: tuple[str, ...] = (),
) -> dict[str, Any]:
    """(a)-(d): status and error name, the body's keys, no token, a description that names
    the fault (`mentions`, case-insensitive) and never echoes a credential (`hidden`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("cache-control") == "no-store"
    assert response.headers.get("pragma") == "no-cache"
    body = response.json()
    assert body["error"] == error, body
    for key in BODY_KEYS:
        assert key in body, f"{key} missing from {body}"
    assert "access_token" not in body
    assert "access_token" not in response.text
    codes = body["error_codes"]
    assert isinstance(codes, list) and codes and all(isinstance(c, int) for c in codes), codes
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    uuid.UUID(body["trace_id"])
    description = body["error_description"]
    assert isinstance(description, str) and description
    assert body["trace_id"] in description
    for word in mentions:
        assert word.lower() in description.lower(), f"{word!r} not in {description!r}"
    for word in absent:
        assert word.lower() not in description.lower(), f"{word!r} in {description!r}"
    for credential in hidden:
        assert credential, "a hidden value must be non-empty to mean anything"
        assert credential not in response.text, "the response echoes a credential"
    return body


class AuditLog:
    """The tenant's audit log, read over the admin API with one sign-in for the module (the
    `keyless audit list` CLI costs a process start per read)."""

    def __init__(self, server: KeylessServer, http: httpx.Client) -> None:
        self.server, self.http = server, http
        self._token = server.admin_token()

    def records(self, **filters: str) -> list[dict[str, Any]]:
        params = {"limit": "1000", **filters}
        for _ in range(2):
            response = self.http.get(
                "/admin/v1/audit",
                params=params,
                headers={"Authorization": f"Bearer {self._token}"},
            )
            if response.status_code != 401:
                break
            self._token = self.server.admin_token()  # another test shortened token lifetimes
        assert response.status_code == 200, response.text
        return list(response.json()["value"])

    def by_trace(self, trace_id: str, **filters: str) -> list[dict[str, Any]]:
        return [r for r in self.records(**filters) if r["traceId"] == trace_id]


def expect_audit(
    audit: AuditLog,
    body: dict[str, Any],
    *,
    actor: str | None = None,
    hidden: tuple[str, ...] = (),
) -> dict[str, Any]:
    """(e): exactly one `token.issue` record with the error as result, under this trace ID."""
    filters = {"action": "token.issue", "result": body["error"]}
    if actor is not None:
        filters["actor"] = actor
    records = audit.by_trace(body["trace_id"], **filters)
    assert len(records) == 1, f"no audit record for trace {body['trace_id']}"
    record = records[0]
    assert record["details"]["errorCode"] == body["error_codes"][0]
    assert record["tenantId"] == audit.server.tenant_id
    dumped = json.dumps(record)
    for credential in hidden:
        assert credential not in dumped, "the audit log holds a credential"
    return record


def expect_unattributed_audit(audit: AuditLog, body: dict[str, Any]) -> None:
    """Refused at the HTTP edge, before anyone could be named: audited all the same."""
    records = audit.by_trace(body["trace_id"], action="token.issue", result=body["error"])
    assert len(records) == 1, f"no audit record for trace {body['trace_id']}"
    assert records[0]["actor"] == "unknown"
    assert records[0]["details"]["errorCode"] == body["error_codes"][0]


def expect_token(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("cache-control") == "no-store"
    assert response.headers.get("pragma") == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["access_token"].count(".") == 2
    return body


# --- fixtures -------------------------------------------------------------------------------


def _load_pem_file(path: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    text = path.read_bytes()
    pems = re.findall(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", text, re.DOTALL)
    key = next(
        serialization.load_pem_private_key(p, password=None) for p in pems if b"PRIVATE KEY" in p
    )
    cert = next(x509.load_pem_x509_certificate(p) for p in pems if b"CERTIFICATE" in p)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, cert


@pytest.fixture(scope="module")
def server(keyless_server: KeylessServer) -> KeylessServer:
    return keyless_server


@pytest.fixture(scope="module")
def http(server: KeylessServer) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def audit(server: KeylessServer, http: httpx.Client) -> AuditLog:
    return AuditLog(server, http)


def _name(kind: str) -> str:
    return f"token-errors-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cert_client(server: KeylessServer, http: httpx.Client) -> CertClient:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", _name("cert"), "--create-cert"
    )
    key, cert = _load_pem_file(Path(created["fileWithCertAndPrivateKey"]))
    client = CertClient(created["appId"], key, cert)
    # Every negative case below starts from a client whose good assertion does work.
    claims = claims_for(client.app_id, server.token_url())
    expect_token(
        http.post(
            server.token_url(), data=assertion_form(client.app_id, sign(claims, key, client.x5t))
        )
    )
    return client


@pytest.fixture(scope="module")
def secret_client(server: KeylessServer, http: httpx.Client) -> SecretClient:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", _name("secret"), "--secret")
    client = SecretClient(created["appId"], created["password"])
    expect_token(http.post(server.token_url(), data=secret_form(client.app_id, client.password)))
    return client


@pytest.fixture(scope="module")
def federated_app(server: KeylessServer) -> str:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", _name("fed"))
    app_id = str(created["appId"])
    server.cli_json(
        "ad", "app", "federated-credential", "create", "--id", app_id,
        "--name", "ci-workload", "--issuer", FED_ISSUER, "--subject", FED_SUBJECT,
    )  # fmt: skip
    return app_id


@pytest.fixture(scope="module")
def other_pair() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    return self_signed("not-registered")


@pytest.fixture(scope="module")
def ctx(
    server: KeylessServer,
    cert_client: CertClient,
    other_pair: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> Ctx:
    return Ctx(server, cert_client, *other_pair)


# --- positive cases first: the negatives below are not vacuous --------------------------------


def test_good_certificate_assertion_gets_a_token(
    server: KeylessServer, http: httpx.Client, ctx: Ctx
) -> None:
    assertion = good_assertion(ctx)
    body = expect_token(
        http.post(server.token_url(), data=assertion_form(ctx.client.app_id, assertion))
    )
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["appid"] == ctx.client.app_id
    granted = [
        r
        for r in server.audit(action="token.issue", result="granted", actor=ctx.client.app_id)
        if r["details"].get("tokenId") == claims.get("uti", claims.get("jti"))
    ]
    assert len(granted) == 1
    assert granted[0]["details"]["method"] == "certificate"
    assert assertion not in json.dumps(granted[0])


def test_good_secret_in_form_gets_a_token(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient
) -> None:
    response = http.post(
        server.token_url(), data=secret_form(secret_client.app_id, secret_client.password)
    )
    expect_token(response)


def test_secret_via_http_basic_gets_a_token(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = {"grant_type": "client_credentials", "scope": SCOPE}
    headers = {"Authorization": basic(secret_client.app_id, secret_client.password)}
    expect_token(http.post(server.token_url(), data=form, headers=headers))
    # The form may repeat the client_id, as long as it is the same one.
    form["client_id"] = secret_client.app_id
    expect_token(http.post(server.token_url(), data=form, headers=headers))


def test_a_single_audience_may_be_a_one_element_list_or_the_issuer(
    server: KeylessServer, http: httpx.Client, ctx: Ctx
) -> None:
    """What RFC 7523bis allows besides MSAL's string `aud` (the token endpoint): the same in a
    list of one, and the issuer identifier; and a little clock skew on `iat`."""
    issuer = f"{server.endpoint}/{server.tenant_id}/v2.0"
    for aud in ([server.token_url()], issuer):
        assertion = good_assertion(ctx, aud=aud, iat=int(time.time()) + 60)
        expect_token(
            http.post(server.token_url(), data=assertion_form(ctx.client.app_id, assertion))
        )


def test_two_authorization_headers_are_refused(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    """Which of two credentials a server reads depends on its framework: refuse, never pick."""
    form = {"grant_type": "client_credentials", "scope": SCOPE}
    good = basic(secret_client.app_id, secret_client.password)
    for headers in (
        [("Authorization", good), ("Authorization", basic(secret_client.app_id, "wrong"))],
        [("Authorization", good), ("Authorization", good)],
    ):
        response = http.post(server.token_url(), data=form, headers=headers)
        body = expect_error(
            response,
            400,
            "invalid_request",
            ("more than one Authorization header", "exactly one"),
            hidden=(secret_client.password,),
        )
        assert body["error_codes"] == [90014]
        expect_unattributed_audit(audit, body)


def test_two_authorization_headers_are_refused_at_revocation(
    server: KeylessServer, http: httpx.Client
) -> None:
    url = f"{server.endpoint}/{server.tenant_id}/oauth2/v2.0/revoke"
    twice = [("Authorization", basic("a", "s3cr3t-value")), ("Authorization", basic("c", "d"))]
    response = http.post(url, data={"token": "x"}, headers=twice)
    body = expect_error(
        response,
        400,
        "invalid_request",
        ("more than one Authorization header",),
        hidden=("s3cr3t-value",),
    )
    assert body["error_codes"] == [90014]


# --- certificate assertions -----------------------------------------------------------------


@dataclass(frozen=True)
class AssertionCase:
    build: Callable[[Ctx], str]
    error: str
    mentions: tuple[str, ...]
    code: int  # Keyless's own error code (docs/errors.md): which check refused it
    status: int = 401
    absent: tuple[str, ...] = ()


def _wrong_signature(c: Ctx) -> str:
    claims = claims_for(c.client.app_id, c.server.token_url())
    return sign(claims, c.other_key, c.client.x5t)  # registered x5t, someone else's key


def _unknown_cert(c: Ctx) -> str:
    claims = claims_for(c.client.app_id, c.server.token_url())
    return sign(claims, c.other_key, x5t_of(c.other_cert))


def _alg_none(c: Ctx) -> str:
    claims = claims_for(c.client.app_id, c.server.token_url())
    return unsigned_token({"alg": "none", "typ": "JWT", "x5t": c.client.x5t}, claims, None)


def _hs256_with_public_key(c: Ctx) -> str:
    claims = claims_for(c.client.app_id, c.server.token_url())
    public_pem = c.client.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "x5t": c.client.x5t}
    return unsigned_token(header, claims, public_pem)


def _hs256_with_certificate(c: Ctx) -> str:
    claims = claims_for(c.client.app_id, c.server.token_url())
    header = {"alg": "HS256", "typ": "JWT", "x5t": c.client.x5t}
    return unsigned_token(header, claims, c.client.cert.public_bytes(serialization.Encoding.PEM))


def _overridden(**overrides: Any) -> Callable[[Ctx], str]:
    def build(c: Ctx) -> str:
        resolved = {k: v(c) if callable(v) else v for k, v in overrides.items()}
        return good_assertion(c, **resolved)

    return build


def _hour_ago() -> int:
    return int(time.time()) - 3600


ASSERTION_CASES = {
    "wrong-signature": AssertionCase(
        _wrong_signature, "invalid_client", ("signature", "does not verify"), code=700027
    ),
    "unknown-certificate": AssertionCase(
        _unknown_cert, "invalid_client", ("not registered",), code=700028
    ),
    "alg-none": AssertionCase(_alg_none, "invalid_client", ("'none'", "RS256"), code=700027),
    "hs256-public-key-as-hmac-secret": AssertionCase(
        _hs256_with_public_key, "invalid_client", ("'HS256'", "RS256"), code=700027
    ),
    "hs256-certificate-as-hmac-secret": AssertionCase(
        _hs256_with_certificate, "invalid_client", ("'HS256'", "RS256"), code=700027
    ),
    "expired": AssertionCase(
        _overridden(
            iat=lambda _c: _hour_ago() - 600,
            nbf=lambda _c: _hour_ago() - 600,
            exp=lambda _c: _hour_ago(),
        ),
        "invalid_client",
        ("expired",),
        code=700024,
    ),
    "not-yet-valid": AssertionCase(
        _overridden(
            nbf=lambda _c: int(time.time()) + 3600, exp=lambda _c: int(time.time()) + 3600 + 600
        ),
        "invalid_client",
        ("not valid yet", "nbf"),
        code=700025,
    ),
    "wrong-audience": AssertionCase(
        _overridden(aud="https://login.other.example/common/oauth2/v2.0/token"),
        "invalid_client",
        ("aud", "token_endpoint"),
        code=700212,
    ),
    "audience-of-another-tenant": AssertionCase(
        _overridden(aud=lambda c: c.server.token_url(str(uuid.uuid4()))),
        "invalid_client",
        ("aud",),
        code=700212,
    ),
    # RFC 7523bis audience injection: a list that also names another server is refused,
    # whichever comes first, though this token endpoint is in it.
    "several-audiences": AssertionCase(
        _overridden(aud=lambda c: [c.server.token_url(), "https://evil.example/token"]),
        "invalid_client",
        ("2 audiences", "exactly one"),
        code=700212,
    ),
    "several-audiences-other-first": AssertionCase(
        _overridden(aud=lambda c: ["https://evil.example/token", c.server.token_url()]),
        "invalid_client",
        ("2 audiences", "exactly one"),
        code=700212,
    ),
    "no-audience": AssertionCase(_overridden(aud=DROP), "invalid_client", ("no aud",), code=700212),
    "issued-in-the-future": AssertionCase(
        _overridden(iat=lambda _c: int(time.time()) + 3600),
        "invalid_client",
        ("issued in the future", "iat", "clock"),
        code=810008,
    ),
    "iat-not-a-number": AssertionCase(
        _overridden(iat="yesterday"), "invalid_client", ("iat",), code=50027
    ),
    "lifetime-over-an-hour": AssertionCase(
        _overridden(exp=lambda _c: int(time.time()) + 2 * 3600),
        "invalid_client",
        ("more than an hour",),
        code=50027,
    ),
    "missing-jti": AssertionCase(_overridden(jti=DROP), "invalid_client", ("jti",), code=50027),
    "missing-exp": AssertionCase(_overridden(exp=DROP), "invalid_client", ("exp",), code=50027),
    "iss-is-client-sub-is-not": AssertionCase(
        _overridden(sub=lambda _c: str(uuid.uuid4())),
        "invalid_client",
        ("iss", "sub", "client ID"),
        absent=("federated",),
        code=50027,
    ),
    "sub-is-client-iss-is-not": AssertionCase(
        _overridden(iss=lambda _c: str(uuid.uuid4())),
        "invalid_client",
        ("iss", "sub", "client ID"),
        absent=("federated",),
        code=50027,
    ),
    "not-a-jwt": AssertionCase(
        lambda _c: "not-a-jwt", "invalid_client", ("not a signed JWT",), code=50027
    ),
}


@pytest.mark.parametrize("case", ASSERTION_CASES.values(), ids=ASSERTION_CASES.keys())
def test_bad_certificate_assertion(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx, case: AssertionCase
) -> None:
    assertion = case.build(ctx)
    response = http.post(server.token_url(), data=assertion_form(ctx.client.app_id, assertion))
    hidden = (assertion, *[part for part in assertion.split(".")[1:] if len(part) > 8])
    body = expect_error(
        response, case.status, case.error, case.mentions, hidden=hidden, absent=case.absent
    )
    assert body["error_codes"] == [case.code], body["error_description"]
    expect_audit(audit, body, actor=ctx.client.app_id, hidden=hidden)


def test_wrong_assertion_type_is_refused(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    assertion = good_assertion(ctx)
    form = assertion_form(ctx.client.app_id, assertion, client_assertion_type="urn:example:saml")
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_request",
        ("client_assertion_type",),
        hidden=(assertion,),
    )
    expect_audit(audit, body, actor=ctx.client.app_id, hidden=(assertion,))


def test_replayed_assertion_is_refused(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    assertion = good_assertion(ctx)
    form = assertion_form(ctx.client.app_id, assertion)
    expect_token(http.post(server.token_url(), data=form))
    body = expect_error(
        http.post(server.token_url(), data=form),
        401,
        "invalid_client",
        ("already used", "jti"),
        hidden=(assertion,),
    )
    expect_audit(audit, body, actor=ctx.client.app_id, hidden=(assertion,))


def _race(server: KeylessServer, form: dict[str, str], n: int) -> list[httpx.Response]:
    """`n` threads post the same form at once, each on its own connection."""
    barrier = threading.Barrier(n)
    responses: list[httpx.Response] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            with server.http() as client:
                client.get("/healthz")  # connect before the barrier, so the posts really race
                barrier.wait(timeout=30)
                response = client.post(server.token_url(), data=form)
            with lock:
                responses.append(response)
        except BaseException as exc:  # reported below, not lost in the thread
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert not failures, failures
    return responses


def _expect_one_winner(
    responses: list[httpx.Response], assertion: str, audit: AuditLog | None
) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (len(responses) - 1), [r.text for r in responses]
    for response in responses:
        if response.status_code == 200:
            expect_token(response)
            continue
        body = expect_error(
            response, 401, "invalid_client", ("already used", "jti"), hidden=(assertion,)
        )
        assert body["error_codes"] == [700030]
        if audit is not None:
            expect_audit(audit, body, hidden=(assertion,))


def test_concurrent_replays_get_exactly_one_token(
    server: KeylessServer, audit: AuditLog, ctx: Ctx
) -> None:
    assertion = good_assertion(ctx)
    responses = _race(server, assertion_form(ctx.client.app_id, assertion), 8)
    _expect_one_winner(responses, assertion, audit)


def test_concurrent_replays_across_worker_processes(tmp_path: Path) -> None:
    """The jti is refused through the store, not a per-process memory: with several
    `keyless serve` workers sharing it, still exactly one of 8 racing requests succeeds."""
    with running_server(tmp_path / "data", workers=3) as own:
        created = own.cli_json("ad", "sp", "create-for-rbac", "--name", "racer", "--create-cert")
        key, cert = _load_pem_file(Path(created["fileWithCertAndPrivateKey"]))
        for _ in range(3):  # several rounds: the requests spread over the workers
            assertion = sign(claims_for(created["appId"], own.token_url()), key, x5t_of(cert))
            responses = _race(own, assertion_form(created["appId"], assertion), 8)
            _expect_one_winner(responses, assertion, None)


# --- unknown client, secrets ----------------------------------------------------------------


def test_unknown_client_id_with_secret(
    server: KeylessServer, audit: AuditLog, http: httpx.Client
) -> None:
    client_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(32)
    body = expect_error(
        http.post(server.token_url(), data=secret_form(client_id, secret)),
        400,
        "unauthorized_client",
        (client_id, "no application"),
        hidden=(secret,),
    )
    expect_audit(audit, body, actor=client_id, hidden=(secret,))


def test_unknown_client_id_with_assertion(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    client_id = str(uuid.uuid4())
    claims = claims_for(client_id, server.token_url())
    assertion = sign(claims, ctx.other_key, x5t_of(ctx.other_cert))
    body = expect_error(
        http.post(server.token_url(), data=assertion_form(client_id, assertion)),
        400,
        "unauthorized_client",
        (client_id,),
        hidden=(assertion,),
    )
    expect_audit(audit, body, actor=client_id, hidden=(assertion,))


def test_wrong_client_secret(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    wrong = secrets.token_urlsafe(32)
    body = expect_error(
        http.post(server.token_url(), data=secret_form(secret_client.app_id, wrong)),
        401,
        "invalid_client",
        ("client secret", "not valid"),
        hidden=(wrong, secret_client.password),
    )
    expect_audit(audit, body, actor=secret_client.app_id, hidden=(wrong, secret_client.password))


def test_secret_for_an_app_without_secrets(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    wrong = secrets.token_urlsafe(32)
    body = expect_error(
        http.post(server.token_url(), data=secret_form(ctx.client.app_id, wrong)),
        401,
        "invalid_client",
        ("no client secret",),
        hidden=(wrong,),
    )
    expect_audit(audit, body, actor=ctx.client.app_id, hidden=(wrong,))


def _expire_secret(server: KeylessServer, app_id: str) -> None:
    """Backdate the app's secret in the store and bump the directory generation in the same
    transaction, as any Keyless write does, so the server's caches see it."""
    assert server.store_url is None, "this edits the embedded SQLite store"
    with contextlib.closing(sqlite3.connect(server.data_dir / "keyless.db", timeout=30)) as db:
        with db:
            updated = db.execute(
                "UPDATE client_secrets SET expires_at = ? WHERE app_id = ?",
                (time.time() - 60, app_id),
            ).rowcount
            bumped = db.execute(
                "UPDATE store_state SET value = value + 1 WHERE name = 'directory_generation'"
            ).rowcount
        assert (updated, bumped) == (1, 1)


def test_expired_client_secret(server: KeylessServer, audit: AuditLog, http: httpx.Client) -> None:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", _name("expiring"), "--secret"
    )
    app_id, password = created["appId"], created["password"]
    expect_token(http.post(server.token_url(), data=secret_form(app_id, password)))
    _expire_secret(server, app_id)
    body = expect_error(
        http.post(server.token_url(), data=secret_form(app_id, password)),
        401,
        "invalid_client",
        ("expired", "create a new one"),
        hidden=(password,),
    )
    expect_audit(audit, body, actor=app_id, hidden=(password,))


# --- federated tokens -----------------------------------------------------------------------


FEDERATED_CASES = {
    # (iss, sub, aud, the description mentions, Keyless error code)
    "another-issuer": (
        "https://other-issuer.example",
        FED_SUBJECT,
        FED_AUDIENCE,
        ("issuer", "subject"),
        70021,
    ),
    "another-subject": (FED_ISSUER, "sub-2", FED_AUDIENCE, ("issuer", "subject"), 70021),
    "wrong-audience": (FED_ISSUER, FED_SUBJECT, "api://not-the-exchange", ("aud",), 700212),
}


@pytest.mark.parametrize(
    ("iss", "sub", "aud", "mentions", "code"),
    FEDERATED_CASES.values(),
    ids=FEDERATED_CASES.keys(),
)
def test_federated_token_matching_no_credential(
    server: KeylessServer,
    audit: AuditLog,
    http: httpx.Client,
    federated_app: str,
    other_pair: tuple[rsa.RSAPrivateKey, x509.Certificate],
    iss: str,
    sub: str,
    aud: str,
    mentions: tuple[str, ...],
    code: int,
) -> None:
    now = int(time.time())
    claims = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 600}
    token = jwt.encode(claims, other_pair[0], algorithm="RS256", headers={"kid": "k1"})
    response = http.post(server.token_url(), data=assertion_form(federated_app, token))
    body = expect_error(
        response,
        401,
        "invalid_client",
        ("federated identity credential", *mentions),
        hidden=(token,),
    )
    # Refused on the registered credentials alone: no fetch of the issuer's keys was tried
    # (that would fail with 700213, as issuer.example does not answer).
    assert body["error_codes"] == [code], body["error_description"]
    expect_audit(audit, body, actor=federated_app, hidden=(token,))


def test_a_federated_token_with_several_audiences_is_refused(
    server: KeylessServer,
    audit: AuditLog,
    http: httpx.Client,
    federated_app: str,
    other_pair: tuple[rsa.RSAPrivateKey, x509.Certificate],
) -> None:
    """The credential's audience and another: refused before the issuer's keys are fetched."""
    now = int(time.time())
    claims = {
        "iss": FED_ISSUER,
        "sub": FED_SUBJECT,
        "aud": [FED_AUDIENCE, "https://evil.example/token"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, other_pair[0], algorithm="RS256", headers={"kid": "k1"})
    response = http.post(server.token_url(), data=assertion_form(federated_app, token))
    body = expect_error(
        response, 401, "invalid_client", ("federated token", "exactly one"), hidden=(token,)
    )
    assert body["error_codes"] == [700212], body["error_description"]
    expect_audit(audit, body, actor=federated_app, hidden=(token,))


# --- scopes ---------------------------------------------------------------------------------


SCOPE_CASES = {
    "unknown-resource": ("api://does-not-exist/.default", ("'api://does-not-exist'", "registered")),
    "without-default": ("api://keyless/management/user_impersonation", ("/.default",)),
    "bare-resource": ("api://keyless/management", ("/.default",)),
    "two-scopes": (f"{SCOPE} https://vault.azure.net/.default", ("exactly one scope",)),
    "two-default-scopes-same-resource": (f"{SCOPE} {SCOPE}", ("exactly one scope",)),
    "empty": ("", ("no scope",)),
}


@pytest.mark.parametrize(("scope", "mentions"), SCOPE_CASES.values(), ids=SCOPE_CASES.keys())
def test_bad_scope(
    server: KeylessServer,
    audit: AuditLog,
    http: httpx.Client,
    secret_client: SecretClient,
    scope: str,
    mentions: tuple[str, ...],
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password, scope=scope)
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_scope",
        mentions,
        hidden=(secret_client.password,),
    )
    expect_audit(audit, body, actor=secret_client.app_id, hidden=(secret_client.password,))


def test_missing_scope(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    del form["scope"]
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_scope",
        ("no scope", "/.default"),
        hidden=(secret_client.password,),
    )
    expect_audit(audit, body, actor=secret_client.app_id)


# --- tenant ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant", [str(uuid.uuid4()), "not-a-tenant"], ids=["random-guid", "non-guid"]
)
def test_unknown_tenant(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient, tenant: str
) -> None:
    response = http.post(
        server.token_url(tenant), data=secret_form(secret_client.app_id, secret_client.password)
    )
    expect_error(
        response,
        400,
        "invalid_request",
        (tenant, "tenant", "not found"),
        hidden=(secret_client.password,),
    )
    # No audit check: the record belongs to no tenant, so no tenant admin can list it.


# --- the request itself ---------------------------------------------------------------------


FORM = "application/x-www-form-urlencoded"
# Each malformed body, and the reason its refusal must give (docs/errors.md, 90014): the one
# thing wrong, not a catch-all.
MALFORMED_BODIES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "non-utf8-bytes": (
        b"grant_type=client_credentials&client_id=\xff\xfe&scope=x",
        ("not UTF-8", "the value of the form field client_id"),
    ),
    "percent-encoded-non-utf8": (
        b"grant_type=client_credentials&client_id=%ff%fe&scope=x",
        ("percent-encodes bytes that are not UTF-8", "client_id"),
    ),
    "invalid-percent-escape": (
        b"grant_type=client_credentials&client_id=%zz&scope=x",
        ("'%' not followed by two hex digits", "client_id", "%25"),
    ),
    "truncated-percent-escape": (
        b"grant_type=client_credentials&scope=x&client_id=ab%4",
        ("'%' not followed by two hex digits", "client_id"),
    ),
    "bad-escape-in-a-name": (b"grant%zz_type=x", ("'%' not followed", "name of form field 1")),
    "field-without-equals": (
        b"grant_type=client_credentials&client_id",
        ("not name=value pairs", "client_id has no '='"),
    ),
    "unknown-field-without-equals-is-not-echoed": (
        b"grant_type=client_credentials&s3cr3t-value-sent-alone",
        ("not name=value pairs", "form field 2 has no '='"),
    ),
    "empty-field": (b"grant_type=client_credentials&&scope=x", ("empty field", "form field 2")),
    "trailing-ampersand": (b"grant_type=client_credentials&", ("empty field", "single '&'")),
    "field-without-a-name": (b"grant_type=client_credentials&=x", ("no name before '='",)),
    "too-many-fields": (
        "&".join(f"f{i}=v" for i in range(40)).encode(),
        ("40 fields", "at most 32"),
    ),
}


@pytest.mark.parametrize(
    ("content", "reason"), MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys()
)
def test_malformed_form_body(
    server: KeylessServer,
    audit: AuditLog,
    http: httpx.Client,
    content: bytes,
    reason: tuple[str, ...],
) -> None:
    response = http.post(server.token_url(), content=content, headers={"Content-Type": FORM})
    body = expect_error(
        response, 400, "invalid_request", ("form body", *reason), hidden=("s3cr3t-value",)
    )
    assert "URL-encoded UTF-8" not in body["error_description"], "the old catch-all reason"
    assert body["error_codes"] == [90014]
    expect_unattributed_audit(audit, body)


def test_unknown_field_over_16_kib_is_refused(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    """docs/errors.md: a field over 16 KiB is refused, whether Keyless reads it or not."""
    form = secret_form(secret_client.app_id, secret_client.password)
    filler = "q" * (16 * 1024 + 1)
    response = http.post(server.token_url(), data={**form, "x_padding": filler})
    body = expect_error(
        response,
        400,
        "invalid_request",
        ("form field 5", "longer than 16 KiB"),
        hidden=(secret_client.password, filler[:64], "x_padding"),
    )
    expect_unattributed_audit(audit, body)
    # Exactly 16 KiB is within the limit: the same request gets its token.
    fits = http.post(server.token_url(), data={**form, "x_padding": filler[:-1]})
    assert fits.status_code == 200, fits.text


def test_repeated_unknown_field_is_named_by_position(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    content = "&".join(f"{k}={quote_plus(v)}" for k, v in form.items()) + "&extra=1&extra=2"
    response = http.post(
        server.token_url(), content=content.encode(), headers={"Content-Type": FORM}
    )
    expect_error(
        response,
        400,
        "invalid_request",
        ("form field 6", "more than once"),
        hidden=(secret_client.password, "extra"),
    )


@pytest.mark.parametrize("field", ["grant_type", "client_id", "client_secret", "scope"])
def test_duplicate_form_field(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient, field: str
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    other = secrets.token_urlsafe(32)
    content = "&".join(f"{k}={quote_plus(v)}" for k, v in form.items())
    content += f"&{field}={quote_plus(other if field == 'client_secret' else form[field])}"
    response = http.post(
        server.token_url(), content=content.encode(), headers={"Content-Type": FORM}
    )
    expect_error(
        response,
        400,
        "invalid_request",
        (field, "more than once"),
        hidden=(secret_client.password, other),
    )


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", None], ids=["json", "text", "missing"]
)
def test_body_not_form_encoded(
    server: KeylessServer,
    http: httpx.Client,
    secret_client: SecretClient,
    content_type: str | None,
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    content = json.dumps(form).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    request = http.build_request("POST", server.token_url(), content=content, headers=headers)
    if content_type is None:
        request.headers.pop("Content-Type", None)
    response = http.send(request)
    expect_error(
        response,
        400,
        "invalid_request",
        ("application/x-www-form-urlencoded",),
        hidden=(secret_client.password,),
    )


def test_oversized_body_is_refused_with_413(server: KeylessServer, http: httpx.Client) -> None:
    filler = "a" * (65 * 1024)
    response = http.post(
        server.token_url(), data={"grant_type": "client_credentials", "client_secret": filler}
    )
    body = expect_error(
        response, 413, "invalid_request", ("larger than", "64 KiB"), hidden=(filler,)
    )
    assert body["error_codes"] == [90015]


def test_oversized_chunked_body_is_refused_with_413(
    server: KeylessServer, http: httpx.Client
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"grant_type=client_credentials&client_secret="
        for _ in range(80):
            yield b"b" * 1024

    response = http.post(server.token_url(), content=chunks(), headers={"Content-Type": FORM})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    expect_error(response, 413, "invalid_request", ("64 KiB",))


def test_field_over_16_kib(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    assertion = "x" * (17 * 1024)
    body = expect_error(
        http.post(server.token_url(), data=assertion_form(ctx.client.app_id, assertion)),
        400,
        "invalid_request",
        ("client_assertion", "16 KiB"),
        hidden=(assertion[:64],),
    )
    expect_audit(audit, body)


# --- credentials: none, too many, in two places ---------------------------------------------


def test_no_credential_at_all(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    form = {"grant_type": "client_credentials", "client_id": ctx.client.app_id, "scope": SCOPE}
    body = expect_error(
        http.post(server.token_url(), data=form),
        401,
        "invalid_client",
        ("no client credential", "client_secret", "client_assertion"),
    )
    expect_audit(audit, body, actor=ctx.client.app_id)


def test_no_client_id(server: KeylessServer, audit: AuditLog, http: httpx.Client) -> None:
    secret = secrets.token_urlsafe(32)
    form = {"grant_type": "client_credentials", "client_secret": secret, "scope": SCOPE}
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_request",
        ("client_id",),
        hidden=(secret,),
    )
    expect_audit(audit, body, hidden=(secret,))


def test_both_secret_and_assertion(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, ctx: Ctx
) -> None:
    assertion, secret = good_assertion(ctx), secrets.token_urlsafe(32)
    form = assertion_form(ctx.client.app_id, assertion, client_secret=secret)
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_request",
        ("client secret", "client_assertion", "not both"),
        hidden=(assertion, secret),
    )
    expect_audit(audit, body, actor=ctx.client.app_id, hidden=(assertion, secret))
    # Refused before the assertion was checked: its jti is still unused, so it works alone.
    expect_token(http.post(server.token_url(), data=assertion_form(ctx.client.app_id, assertion)))


def test_secret_in_basic_header_and_form(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    headers = {"Authorization": basic(secret_client.app_id, secret_client.password)}
    body = expect_error(
        http.post(server.token_url(), data=form, headers=headers),
        400,
        "invalid_request",
        ("both in the Authorization header and in the form",),
        hidden=(secret_client.password,),
    )
    expect_audit(audit, body, hidden=(secret_client.password,))


def test_basic_client_id_differs_from_form(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = {"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "scope": SCOPE}
    headers = {"Authorization": basic(secret_client.app_id, secret_client.password)}
    body = expect_error(
        http.post(server.token_url(), data=form, headers=headers),
        400,
        "invalid_request",
        ("client_id", "differs"),
        hidden=(secret_client.password,),
    )
    expect_audit(audit, body, hidden=(secret_client.password,))


def test_wrong_secret_via_basic(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    wrong = secrets.token_urlsafe(32)
    form = {"grant_type": "client_credentials", "scope": SCOPE}
    headers = {"Authorization": basic(secret_client.app_id, wrong)}
    response = http.post(server.token_url(), data=form, headers=headers)
    body = expect_error(
        response, 401, "invalid_client", ("not valid",), hidden=(wrong, secret_client.password)
    )
    # RFC 6749 5.2: a failed Basic authentication is answered in its own scheme.
    assert response.headers["www-authenticate"] == 'Basic realm="keyless"'
    expect_audit(audit, body, actor=secret_client.app_id, hidden=(wrong,))


def test_wrong_secret_in_form_gets_no_basic_challenge(
    server: KeylessServer, http: httpx.Client, secret_client: SecretClient
) -> None:
    wrong = secrets.token_urlsafe(32)
    response = http.post(server.token_url(), data=secret_form(secret_client.app_id, wrong))
    expect_error(response, 401, "invalid_client", ("not valid",), hidden=(wrong,))
    assert "www-authenticate" not in response.headers


BAD_AUTHORIZATION = {
    "bearer-scheme": ("Bearer abc.def.ghi", ("Basic",)),
    "not-base64": ("Basic !!!not-base64!!!", ("base64",)),
    "no-colon": (
        "Basic " + base64.b64encode(b"only-a-client-id").decode(),
        ("client_id:client_secret",),
    ),
}


@pytest.mark.parametrize(
    ("header", "mentions"), BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys()
)
def test_malformed_authorization_header(
    server: KeylessServer, http: httpx.Client, header: str, mentions: tuple[str, ...]
) -> None:
    form = {"grant_type": "client_credentials", "scope": SCOPE}
    response = http.post(server.token_url(), data=form, headers={"Authorization": header})
    expect_error(response, 400, "invalid_request", ("Authorization", *mentions))


# --- grant type -----------------------------------------------------------------------------


def test_missing_grant_type(
    server: KeylessServer, audit: AuditLog, http: httpx.Client, secret_client: SecretClient
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password)
    del form["grant_type"]
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "invalid_request",
        ("no grant_type", "client_credentials"),
        hidden=(secret_client.password,),
    )
    expect_audit(audit, body, hidden=(secret_client.password,))


@pytest.mark.parametrize(
    "grant",
    [
        "password",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ],
)
def test_unsupported_grant_type(
    server: KeylessServer,
    audit: AuditLog,
    http: httpx.Client,
    secret_client: SecretClient,
    grant: str,
) -> None:
    form = secret_form(secret_client.app_id, secret_client.password, grant_type=grant)
    if grant == "password":
        form |= {"username": "alice@example.com", "password": "hunter2-not-a-real-password"}
    body = expect_error(
        http.post(server.token_url(), data=form),
        400,
        "unsupported_grant_type",
        ("grant_type", "client_credentials"),
        hidden=(secret_client.password, "hunter2-not-a-real-password"),
    )
    expect_audit(audit, body, hidden=(secret_client.password, "hunter2-not-a-real-password"))
