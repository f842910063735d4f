"""Signing keys: published before they sign, retired keys kept until their tokens expire,
rotation on demand and on schedule without losing a request, and private keys encrypted at rest.

Every check goes through what a relying party or an operator sees (JWKS, tokens, `keyless keys`),
except the expiry of retired keys, whose five-minute grace period is driven through
`keyless.authority.keys.expire_retired` against the server's own store.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWKClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.authority import keys
from keyless.authority.masterkey import MasterKey
from keyless.store.engine import open_engine
from keyless.store.location import default_store_url
from keyless.store.models import SigningKey
from tests.support.server import KeylessServer, running_server

AUDIENCE = "api://keyless/postgres"
GRACE_S = keys.RETIREMENT_GRACE_S
# Servers that rotate every second or two, far more often than JWKS may be cached: with no
# JWKS caching a promoted key signs at once (the JWKS lifetime test sets its own).
NO_JWKS_CACHE = {"KEYLESS_JWKS_MAX_AGE": "0"}


# ------------------------------------------------------------------------------------- helpers


def _ssl(server: KeylessServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.ca_file))


def _discovery(server: KeylessServer) -> dict[str, Any]:
    with server.http() as http:
        response = http.get(f"/{server.tenant_id}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _jwks(server: KeylessServer) -> dict[str, Any]:
    with server.http() as http:
        response = http.get(_discovery(server)["jwks_uri"])
    assert response.status_code == 200, response.text
    return dict(response.json())


def _jwks_kids(server: KeylessServer) -> list[str]:
    return [k["kid"] for k in _jwks(server)["keys"]]


_KEY_TIMES = ("createdAt", "activatedAt", "retiredAt", "publishedUntil")


def _keys_by_status(server: KeylessServer) -> dict[str, list[dict[str, Any]]]:
    """`keyless keys list` by status, its times (ISO 8601, as az prints them) as epoch seconds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key in server.cli_json("keys", "list"):
        for name in _KEY_TIMES:
            if isinstance(key.get(name), str):
                key[name] = dt.datetime.fromisoformat(key[name]).timestamp()
        out.setdefault(key["status"], []).append(key)
    return out


def _active_and_next(server: KeylessServer) -> tuple[str, str]:
    by_status = _keys_by_status(server)
    assert len(by_status["active"]) == 1 and len(by_status["next"]) == 1, by_status
    return by_status["active"][0]["kid"], by_status["next"][0]["kid"]


def _new_sp(server: KeylessServer, prefix: str) -> dict[str, Any]:
    created = server.cli_json(
        "ad", "sp", "create-for-rbac", "--name", f"{prefix}-{uuid.uuid4().hex[:8]}", "--secret"
    )
    assert created["password"]
    return dict(created)


def _token(server: KeylessServer, sp: dict[str, Any], scope: str = f"{AUDIENCE}/.default") -> str:
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": sp["appId"],
                "client_secret": sp["password"],
                "scope": scope,
            },
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _validate(server: KeylessServer, token: str, client: PyJWKClient | None = None) -> None:
    """As a relying party does: keys from the discovery document's jwks_uri, nothing else."""
    discovery = _discovery(server)
    client = client or PyJWKClient(discovery["jwks_uri"], ssl_context=_ssl(server))
    key = client.get_signing_key_from_jwt(token)
    jwt.decode(token, key.key, algorithms=["RS256"], audience=AUDIENCE, issuer=discovery["issuer"])


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638, computed here independently of Keyless's own implementation."""
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll until `predicate()` returns something truthy; bounded, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _store(server: KeylessServer) -> Any:
    return open_engine(default_store_url(server.data_dir))


@pytest.fixture(scope="module")
def rotation_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeylessServer]:
    """A server of this module's own: its tests change the tenant's key settings."""
    with running_server(tmp_path_factory.mktemp("rotation") / "data", env=NO_JWKS_CACHE) as server:
        yield server


# ---------------------------------------------------------------------------------------- tests


def test_keys_at_init_and_manual_rotation(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", env=NO_JWKS_CACHE) as server:
        # At init: exactly one active and one next key, both in JWKS, public parts only.
        jwks = _jwks(server)
        assert len(jwks["keys"]) == 2
        for jwk in jwks["keys"]:
            assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
            assert jwk["kid"] == _thumbprint(jwk)
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk), "JWKS leaks a private part"
            modulus = base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4))
            assert len(modulus) * 8 == keys.KEY_BITS
        listed = server.cli_json("keys", "list")
        assert sorted(k["status"] for k in listed) == ["active", "next"]
        assert {k["kid"] for k in listed} == {k["kid"] for k in jwks["keys"]}
        table = server.cli("keys", "list", "--output", "table").stdout
        assert "active" in table and "next" in table

        active, upcoming = _active_and_next(server)
        sp = _new_sp(server, "rotation")
        before = _token(server, sp)
        assert _kid(before) == active
        # The next key is already published, before it has signed anything.
        assert upcoming in _jwks_kids(server)

        tenant = server.cli_json("tenant", "show")
        rotated = server.cli_json("keys", "rotate")
        assert rotated["activeKid"] == upcoming

        after = _token(server, sp)
        assert _kid(after) == upcoming
        by_status = _keys_by_status(server)
        assert [k["kid"] for k in by_status["active"]] == [upcoming]
        assert len(by_status["next"]) == 1
        new_next = by_status["next"][0]["kid"]
        assert new_next not in (active, upcoming)
        [retired] = by_status["retired"]
        assert retired["kid"] == active
        assert retired["retiredAt"] is not None
        expected_until = retired["retiredAt"] + tenant["tokenLifetimeSeconds"] + GRACE_S
        assert retired["publishedUntil"] == pytest.approx(expected_until, abs=2)
        # JWKS: the retired key (its tokens are still live), the new active, the new next.
        assert set(_jwks_kids(server)) == {active, upcoming, new_next}
        # A token signed by the retired key still validates, as does the new one.
        _validate(server, before)
        _validate(server, after)
        assert server.audit(action="authority.signingKeys.rotate", result="succeeded")


def test_rotation_under_load_loses_no_request(tmp_path: Path) -> None:
    """A key rotation under continuous token requests and validations loses no request."""
    threads_n, rotations, max_iterations = 4, 3, 20_000
    with running_server(tmp_path / "data", workers=2, env=NO_JWKS_CACHE) as server:
        sp = _new_sp(server, "load")
        discovery = _discovery(server)
        first_active, _ = _active_and_next(server)
        early_token = _token(server, sp)
        assert _kid(early_token) == first_active

        stop = threading.Event()
        lock = threading.Lock()
        request_failures: list[str] = []
        validation_failures: list[str] = []
        kids_seen: set[str] = set()
        counts = {"tokens": 0, "validated": 0}
        form = {
            "grant_type": "client_credentials",
            "client_id": sp["appId"],
            "client_secret": sp["password"],
            "scope": f"{AUDIENCE}/.default",
        }

        def worker() -> None:
            # A relying party of its own: it caches JWKS and refetches on an unknown kid. The
            # cooldown is off because this test rotates every second or two, far more often
            # than any deployment; with real intervals the next key is long cached.
            jwks_client = PyJWKClient(
                discovery["jwks_uri"], ssl_context=_ssl(server), cooldown_duration=0
            )
            with httpx.Client(verify=_ssl(server), timeout=30) as http:
                for _ in range(max_iterations):
                    if stop.is_set():
                        return
                    try:
                        response = http.post(server.token_url(), data=form)
                    except httpx.HTTPError as exc:
                        with lock:
                            request_failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    if response.status_code != 200:
                        with lock:
                            request_failures.append(f"{response.status_code}: {response.text}")
                        continue
                    token = response.json()["access_token"]
                    with lock:
                        counts["tokens"] += 1
                        kids_seen.add(_kid(token))
                    try:
                        key = jwks_client.get_signing_key_from_jwt(token)
                        jwt.decode(
                            token,
                            key.key,
                            algorithms=["RS256"],
                            audience=AUDIENCE,
                            issuer=discovery["issuer"],
                        )
                    except Exception as exc:
                        with lock:
                            validation_failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        counts["validated"] += 1

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads_n)]
        for thread in workers:
            thread.start()
        promoted: list[str] = []
        try:
            time.sleep(1.0)
            for _ in range(rotations):
                promoted.append(server.cli_json("keys", "rotate")["activeKid"])
                time.sleep(1.5)
        finally:
            stop.set()
            for thread in workers:
                thread.join(timeout=60)
        assert not any(t.is_alive() for t in workers), "a load thread did not stop"

        assert request_failures == [], request_failures[:5]
        assert validation_failures == [], validation_failures[:5]
        assert counts["tokens"] > 0 and counts["validated"] == counts["tokens"]
        assert len(promoted) == rotations and len(set(promoted)) == rotations
        assert len(kids_seen) >= 2, kids_seen
        # Only keys that were active at some point ever signed: never a `next` key early.
        assert kids_seen <= {first_active, *promoted}, kids_seen
        # A token issued before the rotations still validates after them.
        _validate(server, early_token)
        assert first_active in _jwks_kids(server)


def test_scheduled_rotation(rotation_server: KeylessServer) -> None:
    server = rotation_server
    sp = _new_sp(server, "scheduled")
    start = _active_and_next(server)
    original = server.cli_json("tenant", "show")["keyRotationIntervalSeconds"]
    admin = {"Authorization": f"Bearer {server.admin_token()}"}
    states: list[tuple[str, str]] = [start]

    def observe() -> bool:
        """Record each (active, next) state the server goes through; done after two moves."""
        with server.http() as http:
            response = http.get("/admin/v1/signingKeys", headers=admin)
        assert response.status_code == 200, response.text
        by_status = {k["status"]: k["kid"] for k in response.json()["value"]}
        state = (by_status["active"], by_status["next"])
        if state != states[-1]:
            states.append(state)
        return len(states) >= 3

    try:
        updated = server.cli_json("tenant", "update", "--key-rotation-interval", "3s")
        assert updated["keyRotationIntervalSeconds"] == 3
        # The server rotates by itself, twice (bounded wait; polls what `keys list` reads).
        assert _wait_for(observe, timeout=20, interval=0.2), f"no scheduled rotation: {states}"
        token_kid = _kid(_token(server, sp))
    finally:
        server.cli("tenant", "update", "--key-rotation-interval", f"{original}s")
    assert server.cli_json("tenant", "show")["keyRotationIntervalSeconds"] == original

    # Each rotation promoted exactly the key that was published as next before it.
    for before, after in itertools.pairwise(states):
        assert after[0] == before[1], states
    by_status = _keys_by_status(server)
    retired = {k["kid"] for k in by_status["retired"]}
    assert {states[0][0], states[1][0]} <= retired
    assert {states[0][0], states[1][0]} <= set(_jwks_kids(server))
    # Tokens were signed by an active key, never by one still waiting as next.
    assert token_kid in retired | {by_status["active"][0]["kid"]}
    assert server.audit(action="authority.tenant.update", result="succeeded")


def test_retired_keys_expire_from_jwks(rotation_server: KeylessServer) -> None:
    server = rotation_server
    sp = _new_sp(server, "expiry")
    original = server.cli_json("tenant", "show")["tokenLifetimeSeconds"]
    try:
        # A key that signed tokens under the longer lifetime, before it was lowered.
        long_lived = _token(server, sp)
        long_kid = _kid(long_lived)
        long_exp = jwt.decode(long_lived, options={"verify_signature": False})["exp"]
        server.cli("tenant", "update", "--token-lifetime", "5s")
        assert server.cli_json("keys", "rotate")["activeKid"] != long_kid

        # A key that was active only under the 5 s lifetime.
        short_lived = _token(server, sp)
        short_kid = _kid(short_lived)
        short_claims = jwt.decode(short_lived, options={"verify_signature": False})
        assert short_claims["exp"] - short_claims["iat"] == 5
        server.cli("keys", "rotate")

        retired = {k["kid"]: k for k in _keys_by_status(server)["retired"]}
        short = retired[short_kid]
        assert short["publishedUntil"] == pytest.approx(short["retiredAt"] + 5 + GRACE_S, abs=2)
        # Lowering the lifetime must not drop a key before the longer tokens it signed expire.
        assert retired[long_kid]["publishedUntil"] >= long_exp + GRACE_S - 2

        # The grace period makes the real wait five minutes: drive the expiry directly.
        engine = _store(server)
        try:
            with Session(engine) as session:
                row = session.get(SigningKey, short_kid)
                assert row is not None and row.private_key_encrypted
            with Session(engine) as session, session.begin():
                assert keys.expire_retired(session, short["publishedUntil"] + 1) >= 1
            assert short_kid not in _jwks_kids(server)
            assert long_kid in _jwks_kids(server), "a key expired before its tokens did"

            with Session(engine) as session, session.begin():
                keys.expire_retired(session, time.time() + 10 * 365 * 86400)
            # Jumping ten years ahead also expired the key that signed the CLI's cached
            # sign-in token (something real time never does): sign in afresh.
            server.cli("login")
            kids = _jwks_kids(server)
            assert long_kid not in kids and short_kid not in kids
            assert not _keys_by_status(server).get("retired")

            master = MasterKey.load(server.data_dir / "master.key")
            with Session(engine) as session:
                for kid in (short_kid, long_kid):
                    row = session.get(SigningKey, kid)
                    assert row is not None and row.status == "expired"
                    assert row.private_key_encrypted is None, "private key not erased"
                    with pytest.raises(LookupError):
                        keys.load_signer(master, row)
                live = session.scalars(
                    select(SigningKey).where(SigningKey.status.in_(("active", "next")))
                ).all()
                assert len(live) == 2 and all(k.private_key_encrypted for k in live)
        finally:
            engine.dispose()
    finally:
        server.cli("tenant", "update", "--token-lifetime", f"{original}s")
    # Expiry removed nothing the server still needs: tokens are still issued and verify.
    _validate(server, _token(server, sp))


def test_private_keys_encrypted_at_rest(rotation_server: KeylessServer) -> None:
    server = rotation_server
    data = server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("master.key", "ca-key.pem", "server-key.pem", "keyless.db", "config.json"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    for name in ("ca-key.pem", "server-key.pem"):
        pem = (data / name).read_bytes()
        assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), name
        with pytest.raises(TypeError):  # a password is required to open it
            serialization.load_pem_private_key(pem, password=None)

    # Every file the store consists of, including the write-ahead log of the running server.
    stored = b"".join(
        p.read_bytes() for p in sorted(data.iterdir()) if p.name.startswith("keyless.db")
    )
    assert b"PRIVATE KEY" not in stored
    assert b"-----BEGIN" not in stored

    master = MasterKey.load(data / "master.key")
    engine = _store(server)
    try:
        with Session(engine) as session:
            live = session.scalars(
                select(SigningKey).where(SigningKey.status.in_(("active", "next")))
            ).all()
            assert len(live) == 2
            for row in live:
                assert row.private_key_encrypted  # sealed with the master key
                private = keys.load_signer(master, row).key
                assert isinstance(private, rsa.RSAPrivateKey)
                numbers = private.private_numbers()
                der = private.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                secret_parts = {
                    "PKCS#8 DER": der,
                    "d": numbers.d.to_bytes(256, "big"),
                    "p": numbers.p.to_bytes(128, "big"),
                    "q": numbers.q.to_bytes(128, "big"),
                }
                for what, value in secret_parts.items():
                    assert value not in stored, f"raw {what} of key {row.kid} is in the store"
                # The public half matches what JWKS publishes.
                jwk = row.public_jwk
                assert jwk["kid"] == row.kid == _thumbprint(jwk)
                n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)))
                assert n == numbers.public_numbers.n
    finally:
        engine.dispose()
    # The master key itself is not in the store either.
    raw_master = base64.b64decode((data / "master.key").read_text().strip())
    assert raw_master not in stored


def test_a_cached_jwks_verifies_every_token_after_two_quick_rotations(tmp_path: Path) -> None:
    """Issue #11: JWKS is cached for `max-age`; two rotations inside that time must not make a
    key sign that a client holding the JWKS from before them has never seen. A promoted key
    waits until it has been published for the JWKS lifetime (shortened here to a few
    seconds), and the key it replaces signs until then."""
    max_age = 8
    env = {"KEYLESS_JWKS_MAX_AGE": str(max_age)}
    with running_server(tmp_path / "data", env=env) as server:
        sp = _new_sp(server, "cached")
        discovery = _discovery(server)
        admin = {"Authorization": f"Bearer {server.admin_token()}"}
        with server.http() as http:
            response = http.get(discovery["jwks_uri"])
            fetched_at = time.time()
            cached = jwt.PyJWKSet.from_dict(response.json())  # what a relying party keeps
            # Two rotations at once, as `keyless keys rotate` twice makes them.
            first = http.post("/admin/v1/signingKeys/rotate", headers=admin, json={}).json()
            second = http.post("/admin/v1/signingKeys/rotate", headers=admin, json={}).json()
        assert response.headers["cache-control"] == f"public, max-age={max_age}"
        # The second promoted key was published by the first rotation: it waits the lifetime.
        assert second["signsFrom"] >= first["rotatedAt"] + max_age - 0.01
        assert _keys_by_status(server)["active"][0]["kid"] == second["activeKid"]

        # Every token issued while the cached JWKS is still fresh verifies with it alone.
        issued = 0
        while time.time() < fetched_at + max_age:
            token = _token(server, sp)
            kids = {k.key_id: k for k in cached.keys}
            assert _kid(token) in kids, "a token signed by a key the cached JWKS has never seen"
            jwt.decode(
                token,
                kids[_kid(token)].key,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=discovery["issuer"],
            )
            issued += 1
        assert issued > 0

        # Once published long enough, the promoted key signs (bounded wait), and a client
        # that refetched JWKS verifies it.
        def signed_by_second() -> str | None:
            token = _token(server, sp)
            return token if _kid(token) == second["activeKid"] else None

        token = _wait_for(signed_by_second, timeout=max_age * 3, interval=0.3)
        assert token, "the promoted key never started signing"
        _validate(server, token)
        assert time.time() >= second["signsFrom"] - 1


def test_a_bad_jwks_lifetime_setting_is_refused_at_start(tmp_path: Path) -> None:
    server = KeylessServer(tmp_path / "data", env={"KEYLESS_JWKS_MAX_AGE": "5 minutes"})
    server.init()
    result = server.cli("serve", "--port", str(server.port), check=False, timeout=30)
    assert result.returncode != 0
    assert "KEYLESS_JWKS_MAX_AGE must be a whole number of seconds" in result.stderr
