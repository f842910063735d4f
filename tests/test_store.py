"""The store works the same on embedded SQLite and on a real PostgreSQL server: migrations,
the directory generation, replay protection, rotation conflicts, and a whole server on it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyless.authority import keys
from keyless.authority.masterkey import MasterKey
from keyless.store.audit import AuditRecord, write
from keyless.store.engine import StoreUrlError, normalise_store_url, open_engine
from keyless.store.generation import (
    ACCESS_GENERATION,
    bump_generation,
    read_generation,
    read_generations,
)
from keyless.store.grant_log import GrantLog
from keyless.store.migrate import upgrade
from keyless.store.models import AuditEvent, SigningKey, Tenant, UsedAssertion
from tests.support.postgres import PostgresServer
from tests.support.server import running_server


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        name = f"store_{uuid.uuid4().hex[:12]}"
        postgres_server.create_database(name)
        url = postgres_server.sqlalchemy_url(name)
    engine = open_engine(url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _tenant(session: Session) -> Tenant:
    tenant = Tenant(
        id=str(uuid.uuid4()),
        display_name="t",
        domain=f"{uuid.uuid4().hex}.test",
        created_at=time.time(),
    )
    session.add(tenant)
    session.flush()
    return tenant


def test_migrations_create_every_table_and_are_idempotent(engine: Engine) -> None:
    upgrade(engine)  # a second run is a no-op
    tables = set(inspect(engine).get_table_names())
    assert {
        "tenants",
        "service_principals",
        "signing_keys",
        "audit_events",
        "used_assertions",
        "alembic_version",
    } <= tables


def test_generation_moves_with_each_write(engine: Engine) -> None:
    with engine.connect() as connection:
        before = read_generation(connection)
    with Session(engine) as session, session.begin():
        bump_generation(session)
    with Session(engine) as session, session.begin():
        bump_generation(session)
    with engine.connect() as connection:
        assert read_generation(connection) == before + 2


def test_both_generations_are_read_in_one_statement(engine: Engine) -> None:
    """The per-request read (plain SQL with the counters' names written out) sees exactly what
    the ORM read sees, for both counters, on both stores."""
    with Session(engine) as session, session.begin():
        bump_generation(session, ACCESS_GENERATION)
        bump_generation(session)
    with engine.connect() as connection:
        assert read_generations(connection) == (
            read_generation(connection),
            read_generation(connection, ACCESS_GENERATION),
        )
        assert min(read_generations(connection)) >= 1


def test_a_used_assertion_id_is_refused_twice(engine: Engine) -> None:
    row = {"client_id": str(uuid.uuid4()), "jti": "abc", "expires_at": time.time() + 60}
    with engine.begin() as connection:
        connection.execute(UsedAssertion.__table__.insert(), row)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(UsedAssertion.__table__.insert(), row)


def test_rotation_keeps_one_active_and_one_next_key(engine: Engine) -> None:
    master = MasterKey.generate()
    with Session(engine) as session, session.begin():
        tenant_id = _tenant(session).id
        keys.create_initial_keys(session, master, tenant_id)
    with Session(engine) as session, session.begin():
        upcoming = session.scalars(
            select(SigningKey.kid).where(
                SigningKey.status == "next", SigningKey.tenant_id == tenant_id
            )
        ).one()
        assert keys.rotate(session, master, tenant_id).active_kid == upcoming
    with Session(engine) as session:
        statuses = sorted(
            session.scalars(select(SigningKey.status).where(SigningKey.tenant_id == tenant_id))
        )
    assert statuses == ["active", "next", "retired"]


def test_two_quick_rotations_keep_the_signer_until_the_new_key_was_published_long_enough(
    engine: Engine,
) -> None:
    """The key a second quick rotation promotes was published by the first one: it signs only
    once it has been in JWKS for the JWKS lifetime; the key before it signs until then, and
    is not expired from JWKS while it does."""
    master = MasterKey.generate()
    with Session(engine) as session, session.begin():
        tenant_id = _tenant(session).id
        keys.create_initial_keys(session, master, tenant_id)
    start = time.time() + 1000  # the initial next key is long published by then
    with Session(engine) as session, session.begin():
        first = keys.rotate(session, master, tenant_id, start, jwks_max_age_s=300)
    with Session(engine) as session, session.begin():
        second = keys.rotate(session, master, tenant_id, start + 10, jwks_max_age_s=300)
    assert first.signs_from == start and second.signs_from == start + 300
    with Session(engine) as session, session.begin():
        signing = keys.signing_key(session, tenant_id, start + 10)
        assert signing is not None
        assert (signing[0].kid, signing[1]) == (first.active_kid, start + 300)
        assert keys.expire_retired(session, start + 299) == 0
        later = keys.signing_key(session, tenant_id, start + 300)
        assert later is not None and later[0].kid == second.active_kid


def test_two_scheduled_rotations_of_the_same_key_cannot_both_happen(engine: Engine) -> None:
    master = MasterKey.generate()
    with Session(engine) as session, session.begin():
        tenant = _tenant(session)
        tenant.key_rotation_interval_s = 1
        tenant_id = tenant.id
        keys.create_initial_keys(session, master, tenant_id)
    later = time.time() + 10
    # Two processes both find the same key due; the first rotates, the second must not.
    with Session(engine) as session:
        due_a = keys.due_for_rotation(session, tenant_id, later)
    with Session(engine) as session:
        due_b = keys.due_for_rotation(session, tenant_id, later)
    assert due_a is not None and due_a == due_b
    with Session(engine) as session, session.begin():
        keys.rotate(session, master, tenant_id, later, expected_active=due_a)
    with pytest.raises(keys.RotationConflict), Session(engine) as session, session.begin():
        keys.rotate(session, master, tenant_id, later, expected_active=due_b)
    with Session(engine) as session:
        statuses = sorted(
            session.scalars(select(SigningKey.status).where(SigningKey.tenant_id == tenant_id))
        )
    assert statuses == ["active", "next", "retired"]


@pytest.mark.parametrize(
    "url",
    ["mysql://x@y/z", "not a url", "oracle+cx://a@b/c"],
)
def test_unsupported_store_urls_are_refused_with_advice(url: str) -> None:
    with pytest.raises(StoreUrlError, match=r"sqlite|postgresql"):
        normalise_store_url(url)


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert normalise_store_url("postgresql://u@h/d").startswith("postgresql+psycopg://")


def test_a_whole_server_runs_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    name = f"server_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    url = postgres_server.admin_url().rsplit("/", 1)[0] + f"/{name}"
    with running_server(tmp_path / "data", store_url=url) as server:
        # The password in the URL is never written to the data directory.
        config = json.loads((server.data_dir / "config.json").read_text())
        assert config["storeUrl"] is None
        assert postgres_server.password not in (server.data_dir / "config.json").read_text()
        assert not (server.data_dir / "keyless.db").exists()
        sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", "pg-app", "--secret")
        with server.http() as http:
            response = http.post(
                server.token_url(),
                data={
                    "grant_type": "client_credentials",
                    "client_id": sp["appId"],
                    "client_secret": sp["password"],
                    "scope": "api://keyless/postgres/.default",
                },
            )
        assert response.status_code == 200, response.text
        assert any(r["result"] == "granted" for r in server.audit(action="token.issue"))


def test_grant_log_commits_concurrent_requests_and_refuses_each_replay_once(
    engine: Engine,
) -> None:
    """Many request threads at once share commits; every jti is claimed by exactly one of
    the two requests presenting it, and only claimed (or jti-less) records are written."""
    log = GrantLog(engine)
    client = str(uuid.uuid4())
    jtis = [f"jti-{i}" for i in range(40)]
    jobs = [(jti, f"trace-{jti}-{n}") for jti in jtis for n in range(2)]
    jobs += [(None, f"trace-none-{n}") for n in range(20)]

    def record(job: tuple[str | None, str]) -> tuple[str | None, bool]:
        jti, trace = job
        row = {"client_id": client, "jti": jti, "expires_at": time.time() + 60} if jti else None
        audit = AuditRecord("bench", "token.issue", "aud", "granted", trace)
        return jti, log.record(audit, row)

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(record, jobs))
    for jti in jtis:
        assert sorted(ok for j, ok in outcomes if j == jti) == [False, True]
    assert all(ok for j, ok in outcomes if j is None)
    with Session(engine) as session:
        written = session.scalars(
            select(AuditEvent.trace_id).where(AuditEvent.trace_id.like("trace-%"))
        ).all()
        used = session.scalars(select(UsedAssertion.jti).where(UsedAssertion.client_id == client))
        assert sorted(used) == sorted(jtis)
    assert len(written) == len(jtis) + 20


def test_grant_log_commits_an_event_loops_records_together_on_both_stores(
    engine: Engine,
) -> None:
    """`record_async` from many tasks of one loop: every record is written once, with its
    details as JSON, before its await returns; a thread's `record` shares the same writer."""
    log = GrantLog(engine)
    traces = [f"async-{uuid.uuid4().hex[:24]}" for _ in range(60)]
    committed: list[str] = []

    async def one(trace: str) -> None:
        details = {"appId": trace[-8:], "grantedBy": "role 'Vault Secrets User'", "n": 1}
        await log.record_async(
            AuditRecord("reader", "read", "/secret", "succeeded", trace, None, details)
        )
        committed.append(trace)

    async def many() -> None:
        await asyncio.gather(*(one(t) for t in traces))

    asyncio.run(many())
    log.record(AuditRecord("thread", "read", "/secret", "succeeded", "async-thread"))
    assert sorted(committed) == sorted(traces)
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEvent.trace_id, AuditEvent.details).where(
                AuditEvent.trace_id.like("async-%")
            )
        ).all()
    assert sorted(t for t, _ in rows) == sorted([*traces, "async-thread"])
    by_trace = dict(rows)
    assert by_trace[traces[0]] == {
        "appId": traces[0][-8:],
        "grantedBy": "role 'Vault Secrets User'",
        "n": 1,
    }
    assert by_trace["async-thread"] == {}


def test_prepared_select_converts_columns_as_sqlalchemy_does(engine: Engine) -> None:
    from keyless.store.prepared import PreparedSelect

    with engine.begin() as connection:
        write(connection, AuditRecord("a", "prep", "t", "ok", "prep-1", None, {"k": [1, "x"]}))
    statement = select(AuditEvent.details, AuditEvent.actor).where(
        AuditEvent.trace_id == bindparam("trace")
    )
    prepared = PreparedSelect(statement, engine.dialect)
    with engine.connect() as connection:
        dbapi = connection.connection.dbapi_connection
        assert prepared.first(dbapi, {"trace": "prep-1"}) == ({"k": [1, "x"]}, "a")
        assert prepared.first(dbapi, {"trace": "none"}) is None
