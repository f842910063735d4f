"""Refusals at the management API and the vault (issue #11, "Security defects"):

- every refused management request is audited (bad, forged, expired tokens: 401; a caller
  without the role: 403), and a flood of identical refusals leaves a bounded number of rows
  whose counts add up to the flood;
- a request with two `Authorization` headers is refused, never answered with one of them;
- a bearer token issued in the future (beyond the clock skew) is refused with its own code.

A real server over HTTPS; tokens crafted here are signed with the tenant's real key (read from
the server's store, as a second process would) so that only the claim under test is wrong.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.authority.validation import InvalidToken, validate_access_token
from keyless.store import audit
from keyless.store.audit import AuditRecord
from keyless.store.engine import open_engine
from keyless.store.grant_log import GrantLog, wait_for_commit
from keyless.store.migrate import upgrade
from keyless.store.models import AuditEvent
from keyless.store.refusal_audit import RefusalAudit
from tests.support.server import KeylessServer, running_server
from tests.test_vault import _loopback_vault_hosts

API = "api-version=2022-12-01"


@dataclass
class Site:
    server: KeylessServer
    http: httpx.Client
    authority: Authority
    vault_url: str
    admin_claims: dict[str, Any]

    def token(self, resource: str = "management", **claims: Any) -> str:
        """A token signed with the tenant's active key: the admin user's claims, for
        `resource`, with `claims` changed."""
        snapshot = self.authority.cache.current()
        tenant = self.server.tenant_id
        api = next(r for r in snapshot.resources[tenant].values() if r.name == resource)
        now = int(time.time())
        payload = {
            **self.admin_claims,
            "aud": api.audience,
            "iat": now,
            "nbf": now - 300,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        signer = self.authority.cache.signer(snapshot, tenant)
        return jwt.encode(payload, signer.key, algorithm="RS256", headers={"kid": signer.kid})

    def arm(self, token: str | None, path: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        path = path or f"/subscriptions/{self.server.subscription_id}/resourceGroups"
        return self.http.get(f"{path}?{API}", headers=headers)

    def admin_api(self, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.get("/admin/v1/groups", headers=headers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", _loopback_vault_hosts)
        with running_server(tmp_path_factory.mktemp("refusals") / "data") as server:
            paths = DataDir(server.data_dir)
            engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
            authority = Authority.create(
                engine, MasterKey.load(paths.master_key), server.endpoint, []
            )
            http = httpx.Client(
                base_url=server.endpoint,
                verify=ssl.create_default_context(cafile=str(server.ca_file)),
                timeout=30,
            )
            try:
                admin = {"Authorization": f"Bearer {server.admin_token()}"}
                rg = f"/subscriptions/{server.subscription_id}/resourceGroups/refusal-rg"
                assert http.put(f"{rg}?{API}", json={}, headers=admin).status_code == 201
                vault = http.put(
                    f"{rg}/providers/Keyless.Vault/vaults/refusal-vault?{API}",
                    json={},
                    headers=admin,
                )
                assert vault.status_code == 201, vault.text
                claims = jwt.decode(admin["Authorization"][7:], options={"verify_signature": False})
                yield Site(server, http, authority, vault.json()["properties"]["vaultUri"], claims)
            finally:
                http.close()
                authority.issuer_keys.close()
                engine.dispose()


def _other_key_token(site: Site) -> str:
    """Good claims, signed by a key nobody published, under the tenant's real kid."""
    good = site.token()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(good)["kid"]
    claims = jwt.decode(good, options={"verify_signature": False})
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def _unknown_kid(site: Site) -> str:
    """A real signature, under a kid the tenant does not publish."""
    _head, body, signature = site.token().split(".")
    header = jwt.utils.base64url_encode(b'{"alg":"RS256","kid":"nobody","typ":"JWT"}')
    return ".".join((header.decode(), body, signature))


# Ten kinds of bad token, each refused by a different check.
BAD_TOKENS = {
    "no_token": lambda s: None,
    "not_a_jwt": lambda s: "not-a-token",
    "bad_signature": _other_key_token,
    "unknown_key": lambda s: _unknown_kid(s),
    "unknown_tenant": lambda s: s.token(tid=str(uuid.uuid4())),
    "wrong_issuer": lambda s: s.token(iss="https://elsewhere.example/t/v2.0"),
    "wrong_audience": lambda s: s.token("postgres"),
    "expired": lambda s: s.token(exp=int(time.time()) - 7200),
    "not_yet_valid": lambda s: s.token(nbf=int(time.time()) + 3600),
    "issued_in_future": lambda s: s.token(iat=int(time.time()) + 3600),
}


def _max_id(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


def _denied_since(engine: Engine, after: int) -> list[dict[str, Any]]:
    """Refusals recorded after audit id `after`, oldest first, without the count rows that end
    an interval (written whenever the server's interval rolls over)."""
    with Session(engine) as session:
        rows = audit.query(session, result="denied", limit=1000)
    fresh = (r for r in rows if r["id"] > after and "repeatOf" not in r["details"])
    return sorted(fresh, key=lambda r: r["id"])


def test_twenty_bad_tokens_leave_twenty_audit_rows(site: Site) -> None:
    engine = site.authority.engine
    before = _max_id(engine)
    sent: list[str] = []
    for reason, build in BAD_TOKENS.items():
        token = build(site)
        sent += [token] if token else []
        for response in (site.arm(token), site.admin_api(token)):
            assert response.status_code == 401, (reason, response.text[:200])
            assert "WWW-Authenticate" in response.headers
    rows = _denied_since(engine, before)
    assert len(rows) == 20
    seen = {(r["details"]["reason"], r["action"]) for r in rows}
    assert {reason for reason, _ in seen} == set(BAD_TOKENS)
    assert {action for _, action in seen} == {
        "Keyless.Resources/subscriptions/resourceGroups/read",
        "directory.groups.list",
    }
    for row in rows:
        assert row["actor"] == "unknown" and row["details"]["status"] == 401
        assert row["details"]["clientIp"] == "127.0.0.1" and row["details"]["count"] == 1
        # Recorded under the server's tenant, so its administrators see them.
        assert row["tenantId"] == site.server.tenant_id
    dumped = json.dumps(rows)
    for token in sent:
        assert token not in dumped and token.split(".")[-1] not in dumped
    # ... and `keyless audit list` shows them.
    listed = site.server.audit(result="denied")
    assert {r["traceId"] for r in rows} <= {r["traceId"] for r in listed}


def test_a_flood_of_identical_refusals_leaves_a_bounded_number_of_rows(site: Site) -> None:
    engine = site.authority.engine
    token = site.token(exp=int(time.time()) - 7200)
    site.arm(token, f"/subscriptions/{site.server.subscription_id}")  # the kind's first row
    before = _max_id(engine)
    for _ in range(100):
        response = site.arm(token, f"/subscriptions/{site.server.subscription_id}")
        assert response.status_code == 401
    # Counted, not written one by one: at most one more row, if the server's interval (a
    # minute) happened to end during the flood.
    assert len(_denied_since(engine, before)) <= 1
    # A different refusal is still recorded at once.
    after_flood = _max_id(engine)
    assert site.arm("not-a-token", f"/subscriptions/{site.server.subscription_id}").status_code
    assert [r["details"]["reason"] for r in _denied_since(engine, after_flood)] == ["not_a_jwt"]


def test_a_caller_without_the_role_is_audited_once_per_identical_refusal(site: Site) -> None:
    created = site.server.cli_json("ad", "sp", "create-for-rbac", "--name", "no-role", "--secret")
    response = site.http.post(
        site.server.token_url(),
        data={
            "grant_type": "client_credentials",
            "client_id": created["appId"],
            "client_secret": created["password"],
            "scope": "api://keyless/management/.default",
        },
    )
    token = response.json()["access_token"]
    before = _max_id(site.authority.engine)
    group = f"/subscriptions/{site.server.subscription_id}/resourceGroups/refusal-rg"
    for _ in range(5):
        assert site.arm(token, group).status_code == 403
    rows = _denied_since(site.authority.engine, before)
    assert 1 <= len(rows) <= 2 and rows[0]["details"]["status"] == 403  # 2: interval ended
    assert rows[0]["details"]["appId"] == created["appId"]


def _store(tmp_path: Any) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    return engine


def _refusal(reason: str = "expired") -> AuditRecord:
    return AuditRecord(
        actor="unknown",
        action="x/read",
        target="/x",
        result="denied",
        trace_id=str(uuid.uuid4()),
        details={"reason": reason},
    )


def test_folded_refusals_are_counted_when_their_interval_ends(tmp_path: Any) -> None:
    """The limiter against a real store, on a clock this test moves."""
    engine = _store(tmp_path)
    now = [1000.0]
    refusals = RefusalAudit(GrantLog(engine), interval_s=60, max_kinds=5, clock=lambda: now[0])
    first = refusals.refused(_refusal(), "10.0.0.1", "x/read")
    assert first is not None and wait_for_commit(first)
    assert all(refusals.refused(_refusal(), "10.0.0.1", "x/read") is None for _ in range(499))
    # Another source is another kind; many kinds fold into one once max_kinds is reached.
    for i in range(20):
        committed = refusals.refused(_refusal(), f"10.0.1.{i}", "x/read")
        if committed is not None:
            wait_for_commit(committed)
    now[0] += 61
    refusals.flush()
    refusals.flush()  # nothing more to say
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with Session(engine) as session:
            rows = audit.query(session, result="denied", limit=1000)
        if sum(r["details"]["count"] for r in rows) == 520:
            break
        time.sleep(0.05)
    counts = sorted((r["details"]["source"], r["details"]["count"]) for r in rows)
    assert sum(count for _, count in counts) == 520
    assert ("10.0.0.1", 1) in counts and ("10.0.0.1", 499) in counts
    assert len(rows) <= 2 * (5 + 1)  # bounded whatever the number of sources
    engine.dispose()


def test_two_authorization_headers_are_refused_everywhere(site: Site) -> None:
    good = site.server.admin_token()
    twice = [("Authorization", f"Bearer {good}"), ("Authorization", "Bearer other")]
    before = _max_id(site.authority.engine)
    arm = site.http.get(f"/subscriptions/{site.server.subscription_id}?{API}", headers=twice)
    admin = site.http.get("/admin/v1/groups", headers=twice)
    vault = site.http.get(f"{site.vault_url}secrets/x?api-version=7.4", headers=twice)
    for response in (arm, admin, vault):
        assert response.status_code == 400, response.text[:300]
        message = response.json()["error"]["message"]
        assert "more than one Authorization header" in message and good not in response.text
    rows = _denied_since(site.authority.engine, before)
    assert {r["details"]["reason"] for r in rows} == {"repeated_authorization_header"}
    assert len(rows) == 2  # the management API's two routes; the vault answers 400 unaudited
    # The same token alone is accepted: the refusal is for the repetition.
    assert site.arm(good).status_code == 200


def test_a_bearer_token_issued_in_the_future_is_refused_with_its_own_code(site: Site) -> None:
    future = site.token(iat=int(time.time()) + 3600)
    message = site.arm(future).json()["error"]["message"]
    assert "issued in the future" in message
    vault_token = site.token("vault", iat=int(time.time()) + 3600)
    refused = site.http.get(
        f"{site.vault_url}secrets/x?api-version=7.4",
        headers={"Authorization": f"Bearer {vault_token}"},
    )
    assert refused.status_code == 401 and "issued in the future" in refused.text
    with pytest.raises(InvalidToken) as caught:
        postgres = site.token("postgres", iat=int(time.time()) + 3600)
        validate_access_token(site.authority, postgres, "postgres")
    assert caught.value.code == "issued_in_future"
    # Within the skew allowance (a minute) it is accepted.
    assert site.arm(site.token(iat=int(time.time()) + 30)).status_code == 200
