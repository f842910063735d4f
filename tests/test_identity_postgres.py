"""keyless.identity.postgres: PostgreSQL connections from Service Connector's keys, with a token.

One world for the module, all real: a Keyless server over HTTPS with its embedded token
gateway, a PostgreSQL 15 whose pg_hba.conf sends logins to that gateway, and
`keyless app serve-imds` serving an app's system- and user-assigned identities. Two roles:
`app_user` belongs to a service principal with a secret, `report_user` to a user-assigned
identity (so connecting as it proves `AZURE_POSTGRESQL_<CONNECTION>_CLIENTID` chose that
identity and not the app's system one).

Tokens are never printed: assertion messages name roles and results, not credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.authority.tokens import Principal, mint
from keyless.authority.validation import LEEWAY_S
from keyless.gateway.mappings import add_mapping
from keyless.gateway.names import hba_line
from keyless.identity import AccessToken, ClientSecretCredential, clear_token_cache, postgres
from keyless.identity import aio as identity_aio
from keyless.identity.aio import postgres as aio_postgres
from keyless.identity.postgres import ConnectionSettingsError
from keyless.store.engine import open_engine
from tests.support.postgres import PostgresServer
from tests.support.server import KEYLESS, KeylessServer, free_port, running_server

SERVER = "db1"
APP_ROLE = "app_user"
REPORT_ROLE = "report_user"
APP_DB = "appdb"
REPORT_DB = "reportdb"
VALID_FOR_S = 4  # how long a short-lived test token is accepted after it is minted


@dataclass(frozen=True)
class Identity:
    object_id: str
    app_id: str
    secret: str = ""


@dataclass
class World:
    server: KeylessServer
    pg: PostgresServer
    authority: Authority  # the test's own view of the server's store, to mint short tokens
    alice: Identity  # a service principal with a secret; owns APP_ROLE
    user_assigned_client_id: str  # the identity that owns REPORT_ROLE
    imds_base: str  # `keyless app serve-imds` for an app with [system] + that identity

    def keys(self, role: str = APP_ROLE, dbname: str = APP_DB) -> str:
        """Service Connector's python form (no password; sslmode=disable: this test server
        has no TLS, and the gateway's hba line is for loopback)."""
        return (
            f"dbname={dbname} host={self.pg.host} port={self.pg.port} sslmode=disable user={role}"
        )

    def secret_credential(self) -> ClientSecretCredential:
        return ClientSecretCredential(
            self.server.tenant_id, self.alice.app_id, self.alice.secret, self.server.endpoint
        )

    def service_principal_env(self) -> dict[str, str]:
        """What DefaultCredential's environment step reads (and the CA it must trust)."""
        return {
            "AZURE_TENANT_ID": self.server.tenant_id,
            "AZURE_CLIENT_ID": self.alice.app_id,
            "AZURE_CLIENT_SECRET": self.alice.secret,
            "AZURE_AUTHORITY_HOST": self.server.endpoint,
        }

    def short_token(self, who: Identity) -> tuple[str, float]:
        """A token signed with the tenant's real active key that the gateway accepts for
        about VALID_FOR_S more seconds (its `exp` is in the past by less than the validation
        leeway), and the time after which it is refused."""
        lifetime = 60
        now = time.time()
        snapshot = self.authority.cache.current()
        tenant_id = self.server.tenant_id
        api = next(r for r in snapshot.resources[tenant_id].values() if r.name == "postgres")
        issued = mint(
            signer=self.authority.cache.signer(snapshot, tenant_id),
            issuer=self.authority.issuer(tenant_id),
            tenant=snapshot.tenants[tenant_id],
            principal=Principal(who.object_id, "app", who.app_id, {}),
            resource=api,
            auth_method="client_secret",
            lifetime_s=lifetime,
            now=now - lifetime - LEEWAY_S + VALID_FOR_S,
        )
        return issued.access_token, issued.expires_on + LEEWAY_S + 1


@dataclass
class ShortLivedCredential:
    """A credential that mints a new short-lived token at every call (no cache, so every call
    is counted): what a real credential's refresh looks like to a pool, compressed to seconds."""

    world: World
    who: Identity
    issued: list[tuple[str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (postgres.DEFAULT_SCOPE,)
        token, refused_after = self.world.short_token(self.who)
        with self._lock:
            self.issued.append((token, refused_after))
        return AccessToken(token, int(refused_after))

    @property
    def calls(self) -> int:
        return len(self.issued)


@dataclass
class Counting:
    """Wraps a credential and counts `get_token` calls (sync or async)."""

    inner: Any
    calls: int = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.get_token(*scopes, **kwargs)


def _service_principal(server: KeylessServer, name: str) -> Identity:
    created = server.cli_json("ad", "sp", "create-for-rbac", "--name", name, "--secret")
    shown = server.cli_json("ad", "sp", "show", "--id", created["appId"])
    return Identity(shown["id"], created["appId"], created["password"])


@contextlib.contextmanager
def _serve_imds(server: KeylessServer, group: str, app: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*KEYLESS, "app", "serve-imds", "-g", group, "-n", app, "--port", str(port)],
        env=server.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "keyless app serve-imds exited"
            try:
                httpx.get(f"{base}/metadata/identity/oauth2/token", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "keyless app serve-imds did not listen"
                time.sleep(0.1)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


def _hba(gateway_port: int) -> str:
    """Logins over loopback TCP go to the gateway (plain LDAP: it is loopback too)."""
    return hba_line(SERVER, "127.0.0.1", gateway_port, tls=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("identity-postgres")
    with running_server(base / "data") as server:
        alice = _service_principal(server, "pg-helper-alice")
        group = f"rg-pg-{uuid.uuid4().hex[:6]}"
        server.cli_json("group", "create", "-n", group)
        reporter = server.cli_json("identity", "create", "-g", group, "-n", "reporter")
        server.cli_json(
            "app", "create", "-g", group, "-n", "web", "--assign-identity", "[system]", "reporter"
        )
        paths = DataDir(server.data_dir)
        engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
        authority = Authority.create(engine, MasterKey.load(paths.master_key), server.endpoint, [])
        try:
            with Session(engine) as session, session.begin():
                tenant = server.tenant_id
                add_mapping(session, tenant, SERVER, APP_ROLE, alice.object_id, "test")
                add_mapping(session, tenant, SERVER, REPORT_ROLE, reporter["principalId"], "test")
            with (
                _serve_imds(server, group, "web") as imds_base,
                PostgresServer(hba_lines=[_hba(server.gateway_port)]) as pg,
            ):
                with psycopg.connect(pg.admin_url(), autocommit=True) as admin:
                    for role, db in ((APP_ROLE, APP_DB), (REPORT_ROLE, REPORT_DB)):
                        role_id = sql.Identifier(role)
                        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role_id))
                        admin.execute(
                            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                                sql.Identifier(db), role_id
                            )
                        )
                yield World(server, pg, authority, alice, str(reporter["clientId"]), imds_base)
        finally:
            authority.issuer_keys.close()
            engine.dispose()


@pytest.fixture(autouse=True)
def environment(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only what a test sets decides which credential applies; no `keyless` on PATH (so the
    developer step cannot answer); the Keyless CA trusted; a fresh token cache."""
    for name in list(os.environ):
        if (
            name.startswith(("AZURE_", "IDENTITY_", "MSI_", "KEYLESS_", "PG"))
            or name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")
            or "proxy" in name.lower()
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,::1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(world.server.ca_file))
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", f"{empty_bin}:/usr/sbin:/usr/bin:/sbin:/bin")
    clear_token_cache()
    yield
    clear_token_cache()


def _setenv(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


# ------------------------------------------------------------------------------- psycopg 3


def test_connect_from_the_connection_string_with_the_default_credential(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What an app does after `connection create --client-type python`: nothing but
    `postgres.connect()`; DefaultCredential's environment step is the service principal."""
    _setenv(monkeypatch, world.service_principal_env())
    monkeypatch.setenv("AZURE_POSTGRESQL_CONNECTIONSTRING", world.keys())
    caplog.set_level(logging.DEBUG, logger="keyless.identity")
    with postgres.connect() as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes (body) VALUES (%s), (%s)", ("first", "second"))
        conn.commit()
        rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
        who = conn.execute("SELECT current_user, current_database()").fetchone()
    assert rows == [("first",), ("second",)]
    assert who == (APP_ROLE, APP_DB)
    # The same token, from the process-wide cache: it is in no log line.
    token = world.secret_credential().get_token(postgres.DEFAULT_SCOPE).token
    assert "connecting to PostgreSQL" in caplog.text
    assert token not in caplog.text
    # kwargs go to psycopg.connect and override the keys.
    with postgres.connect(world.secret_credential(), autocommit=True, dbname="postgres") as conn:
        assert conn.autocommit
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)


@pytest.mark.parametrize(
    "keys",
    [
        # nodejs: _DATABASE and a boolean _SSL
        {"HOST": "{host}", "USER": APP_ROLE, "DATABASE": APP_DB, "PORT": "{port}", "SSL": "false"},
        # django: _NAME, and _SSLMODE
        {
            "HOST": "{host}",
            "USER": APP_ROLE,
            "NAME": APP_DB,
            "PORT": "{port}",
            "SSLMODE": "disable",
        },
    ],
    ids=["nodejs", "django"],
)
def test_connect_from_the_split_keys(world: World, keys: dict[str, str]) -> None:
    environ = {
        f"AZURE_POSTGRESQL_{name}": value.format(host=world.pg.host, port=world.pg.port)
        for name, value in keys.items()
    }
    with postgres.connect(world.secret_credential(), environ=environ) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            APP_ROLE,
            APP_DB,
        )
        assert conn.info.port == world.pg.port


def test_a_named_connection_with_a_user_assigned_identity(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's second connection (`AZURE_POSTGRESQL_REPORTS_*`) names a user-assigned
    identity with `_CLIENTID`; the app also has a system identity, which owns no role, so only
    the right identity's token logs in as report_user."""
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", world.imds_base)
    environ = {
        "AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys(),  # the first connection: not used
        "AZURE_POSTGRESQL_REPORTS_CONNECTIONSTRING": world.keys(REPORT_ROLE, REPORT_DB),
        "AZURE_POSTGRESQL_REPORTS_CLIENTID": world.user_assigned_client_id,
    }
    with postgres.connect(connection="reports", environ=environ) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            REPORT_ROLE,
            REPORT_DB,
        )
    # Without _CLIENTID the chain takes the app's system identity, which the gateway refuses.
    del environ["AZURE_POSTGRESQL_REPORTS_CLIENTID"]
    with pytest.raises(psycopg.OperationalError, match="LDAP authentication failed"):
        postgres.connect(connection="reports", environ=environ).close()


def test_connect_async(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _setenv(monkeypatch, world.service_principal_env())
    monkeypatch.setenv("AZURE_POSTGRESQL_CONNECTIONSTRING", world.keys())

    async def run() -> None:
        # The default: keyless.identity.aio.DefaultCredential.
        async with await postgres.connect_async() as conn:
            cursor = await conn.execute("SELECT current_user, current_database()")
            assert await cursor.fetchone() == (APP_ROLE, APP_DB)
        # An async credential given, under the aio module's name; and a sync one works too.
        async with (
            identity_aio.ClientSecretCredential(
                world.server.tenant_id,
                world.alice.app_id,
                world.alice.secret,
                world.server.endpoint,
            ) as credential,
            await aio_postgres.connect(credential) as conn,
        ):
            cursor = await conn.execute("SELECT current_user")
            assert await cursor.fetchone() == (APP_ROLE,)
        async with await postgres.connect_async(world.secret_credential()) as conn:
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)

    asyncio.run(run())


# ------------------------------------------------------------------------------- SQLAlchemy


def _backend_pid(connection: Any) -> int:
    return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _refused(world: World, token: str) -> bool:
    try:
        psycopg.connect(
            host=world.pg.host,
            port=world.pg.port,
            user=APP_ROLE,
            dbname=APP_DB,
            password=token,
            sslmode="disable",
            connect_timeout=10,
        ).close()
    except psycopg.OperationalError as exc:
        assert "LDAP authentication failed" in str(exc)
        assert token not in str(exc)
        return True
    return False


def test_a_pool_keeps_working_across_token_expiry(world: World) -> None:
    credential = ShortLivedCredential(world, world.alice)
    environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys()}
    engine: Engine = postgres.create_engine(credential=credential, environ=environ, pool_size=2)
    try:
        assert engine.url.password is None
        assert (engine.url.host, engine.url.username) == (world.pg.host, APP_ROLE)
        with engine.connect() as conn:
            first_pid = _backend_pid(conn)
            conn.execute(text("CREATE TABLE pooled (n int)"))
            conn.commit()
        assert credential.calls == 1
        first_token, refused_after = credential.issued[0]

        # (c) The first token really expires: a login with it is refused once its time is up.
        while time.time() < refused_after:
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not _refused(world, first_token):
            assert time.monotonic() < deadline, "the short-lived token was never refused"
            time.sleep(0.5)

        # (a) The connection made with it is still in the pool and still works.
        with engine.connect() as held:
            assert _backend_pid(held) == first_pid
            held.execute(text("INSERT INTO pooled VALUES (1)"))
            held.commit()
            assert credential.calls == 1

            # (b) A new pooled connection asks the credential again, and logs in.
            with engine.connect() as fresh:
                assert _backend_pid(fresh) != first_pid
                assert fresh.execute(text("SELECT count(*) FROM pooled")).scalar_one() == 1
            assert credential.calls == 2
            assert credential.issued[1][0] != first_token
    finally:
        engine.dispose()


def test_create_engine_with_a_url_and_the_default_credential(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setenv(monkeypatch, world.service_principal_env())
    # Given a URL, the engine reads no connection keys (a java connection's here is ignored).
    monkeypatch.setenv("AZURE_POSTGRESQL_CONNECTIONSTRING", "jdbc:postgresql://elsewhere/db")
    url = f"postgresql://{APP_ROLE}@{world.pg.host}:{world.pg.port}/{APP_DB}?sslmode=disable"
    engine = postgres.create_engine(url, pool_size=1)
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == APP_ROLE
    finally:
        engine.dispose()


def test_create_async_engine(world: World) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio extension needs greenlet")
    environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys()}

    async def run() -> None:
        async with identity_aio.ClientSecretCredential(
            world.server.tenant_id, world.alice.app_id, world.alice.secret, world.server.endpoint
        ) as inner:
            credential = Counting(inner)
            engine = postgres.create_async_engine(
                credential=credential, environ=environ, pool_size=2
            )
            try:
                async with engine.connect() as one, engine.connect() as two:
                    pids = set()
                    for conn in (one, two):
                        result = await conn.execute(text("SELECT current_user, pg_backend_pid()"))
                        role, pid = result.one()
                        assert role == APP_ROLE
                        pids.add(pid)
                    assert len(pids) == 2
                assert credential.calls == 2  # one per new connection (the cache answered)
                async with engine.connect() as again:  # from the pool: no new login
                    assert (await again.execute(text("SELECT 1"))).scalar_one() == 1
                assert credential.calls == 2
            finally:
                await engine.dispose()

    asyncio.run(run())


# ------------------------------------------------------------------------------- bad input


BAD_KEYS: dict[str, tuple[dict[str, str], str | None, str]] = {
    # name: (environment, connection=, what the message must say)
    "nothing": ({}, None, "AZURE_POSTGRESQL_CONNECTIONSTRING"),
    "nothing-named": ({}, "reports", "AZURE_POSTGRESQL_REPORTS_CONNECTIONSTRING"),
    "no-user": (
        {"AZURE_POSTGRESQL_HOST": "db.example", "AZURE_POSTGRESQL_NAME": "app"},
        None,
        "AZURE_POSTGRESQL_USER is not set",
    ),
    "string-without-user": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "dbname=app host=db.example sslmode=require"},
        None,
        "AZURE_POSTGRESQL_CONNECTIONSTRING has no user=",
    ),
    "unterminated-quote": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "dbname='app host=db.example user=u"},
        None,
        "AZURE_POSTGRESQL_CONNECTIONSTRING is not a libpq connection string",
    ),
    "unknown-keyword": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "dbname=app host=db.example user=u colour=red"},
        None,
        "'colour' is not a libpq keyword",
    ),
    "jdbc": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "jdbc:postgresql://db:5432/app?user=u"},
        None,
        "JDBC URL",
    ),
    "dotnet": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "Server=db;Database=app;Port=5432;User Id=u;"},
        None,
        "dotnet form",
    ),
    "bad-port": (
        {
            "AZURE_POSTGRESQL_HOST": "db.example",
            "AZURE_POSTGRESQL_USER": "u",
            "AZURE_POSTGRESQL_NAME": "app",
            "AZURE_POSTGRESQL_PORT": "54x2",
        },
        None,
        "AZURE_POSTGRESQL_PORT is '54x2', which is not a port number",
    ),
    "bad-sslmode": (
        {"AZURE_POSTGRESQL_CONNECTIONSTRING": "dbname=a host=h user=u sslmode=sometimes"},
        None,
        "not an sslmode",
    ),
    "name-and-database-differ": (
        {
            "AZURE_POSTGRESQL_HOST": "h",
            "AZURE_POSTGRESQL_USER": "u",
            "AZURE_POSTGRESQL_NAME": "one",
            "AZURE_POSTGRESQL_DATABASE": "two",
        },
        None,
        "AZURE_POSTGRESQL_NAME and AZURE_POSTGRESQL_DATABASE are both set",
    ),
    "bad-connection-name": ({}, "../x", "is not a connection name"),
}


# Where the keys are missing or in the wrong form, the message says what writes them.
MISSING_OR_UNREADABLE = {
    "nothing",
    "nothing-named",
    "no-user",
    "string-without-user",
    "unterminated-quote",
    "unknown-keyword",
    "jdbc",
    "dotnet",
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_bad_keys_get_a_clear_error_before_any_token(world: World, case: str) -> None:
    environ, connection, expected = BAD_KEYS[case]
    credential = Counting(world.secret_credential())
    for attempt in (
        lambda: postgres.connect(credential, environ=environ, connection=connection),
        lambda: postgres.create_engine(
            credential=credential, environ=environ, connection=connection
        ),
    ):
        with pytest.raises(ConnectionSettingsError) as caught:
            attempt()
        assert expected in str(caught.value)
        assert isinstance(caught.value, ValueError)
        if case in MISSING_OR_UNREADABLE:
            assert "keyless app connection create postgres" in str(caught.value)
    with pytest.raises(ConnectionSettingsError, match=expected.replace("(", r"\(")):
        asyncio.run(postgres.connect_async(credential, environ=environ, connection=connection))
    assert credential.calls == 0


def test_errors_never_contain_a_secret_or_a_token(world: World) -> None:
    token = world.secret_credential().get_token(postgres.DEFAULT_SCOPE).token
    secret = "s3cr3t-" + uuid.uuid4().hex
    cases = {
        # a password where none belongs
        f"dbname=a host=h user=u password={secret}": "contains password=",
        # a token pasted in place of the connection string
        token: "not a libpq connection string",
        # a token as a stray word inside it
        f"dbname=a host=h user=u {token}": "not a libpq connection string",
    }
    for value, expected in cases.items():
        environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": value}
        with pytest.raises(ConnectionSettingsError, match=expected) as caught:
            postgres.connect(world.secret_credential(), environ=environ)
        assert secret not in str(caught.value) and token not in str(caught.value)
    environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys()}
    with pytest.raises(ConnectionSettingsError, match="password=") as caught:
        postgres.connect(world.secret_credential(), environ=environ, password=secret)
    assert secret not in str(caught.value)
    url = f"postgresql://{APP_ROLE}:{secret}@{world.pg.host}/{APP_DB}"
    with pytest.raises(ConnectionSettingsError, match="url has a password") as caught:
        postgres.create_engine(url, world.secret_credential())
    assert secret not in str(caught.value)
    for bad_url, expected in (
        (f"not a URL {secret}", "not a SQLAlchemy URL"),
        (f"postgresql://{APP_ROLE}:{secret}@db:port/{APP_DB}", "not a SQLAlchemy URL"),
        (f"mysql://{APP_ROLE}:{secret}@db/{APP_DB}", "connect to PostgreSQL"),
    ):
        with pytest.raises(ConnectionSettingsError, match=expected) as caught:
            postgres.create_engine(bad_url, world.secret_credential())
        assert secret not in str(caught.value)
    # A real token the gateway refuses for this role: psycopg's error names the role, not it.
    environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys(REPORT_ROLE, REPORT_DB)}
    with pytest.raises(psycopg.OperationalError, match="LDAP authentication failed") as refused:
        postgres.connect(world.secret_credential(), environ=environ).close()
    assert token not in str(refused.value)


def test_an_async_credential_in_sync_code_is_a_clear_error(world: World) -> None:
    environ = {"AZURE_POSTGRESQL_CONNECTIONSTRING": world.keys()}
    credential = identity_aio.ClientSecretCredential(
        world.server.tenant_id, world.alice.app_id, world.alice.secret, world.server.endpoint
    )
    with pytest.raises(TypeError, match="connect_async"):
        postgres.connect(credential, environ=environ)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="create_async_engine"):
        postgres.create_engine(credential=credential, environ=environ)  # type: ignore[arg-type]


def test_importing_keyless_identity_loads_no_database_driver() -> None:
    code = (
        "import sys, keyless.identity, keyless.identity.postgres, keyless.identity.aio.postgres\n"
        "loaded = [m for m in ('psycopg', 'sqlalchemy') if m in sys.modules]\n"
        "server = [m for m in sys.modules if m.startswith(('keyless.authority', 'keyless.store',"
        " 'keyless.gateway', 'keyless.server'))]\n"
        "print(loaded, server)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[] []"
