"""Concurrent first writes: every writer gets its answer, none a 500 (issue #11).

Many clients creating the same new thing at once all read "it does not exist" and all
insert; the store's unique constraint lets one win. Each test fires real concurrent requests
at a real server (SQLite and PostgreSQL stores) and checks that every one is answered as if
the requests had come one after another: Key Vault gives every writer of a secret its own
version, ARM answers one 201 and then 200s, a duplicate role assignment one 201 and 409s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import KeylessServer, running_server

WRITERS = 60


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeylessServer]:
    data = tmp_path_factory.mktemp(f"concurrent-{request.param}") / "data"
    url = None
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"concurrent_{uuid.uuid4().hex[:12]}"
        postgres.create_database(name)
        url = postgres.admin_url().rsplit("/", 1)[0] + f"/{name}"
    with running_server(data, store_url=url) as server:
        server.cli("group", "create", "-n", "race-rg")
        yield server


def _all_at_once(count: int, send: object) -> list[httpx.Response]:
    """`count` requests started together, each on its own connection."""
    assert callable(send)
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda i: send(i), range(count)))


def _client(server: KeylessServer) -> httpx.Client:
    return server.http()


def test_concurrent_first_writes_of_a_secret_each_get_their_own_version(
    server: KeylessServer,
) -> None:
    vault_name = f"race{uuid.uuid4().hex[:8]}"
    vault = server.cli_json("vault", "create", "-g", "race-rg", "-n", vault_name)
    me = server.cli_json("account", "show")["user"]["name"]
    server.cli(
        "role", "assignment", "create", "--assignee", me, "--role", "Vault Secrets Officer",
        "--scope", vault["id"],
    )  # fmt: skip
    token = server.cli_json(
        "account", "get-access-token", "--resource", f"https://vault.localhost:{server.port}"
    )["accessToken"]
    host = f"{vault_name}.vault.localhost"

    def put(i: int) -> httpx.Response:
        with _client(server) as http:
            return http.put(
                f"https://127.0.0.1:{server.port}/secrets/brand-new",
                params={"api-version": "7.5"},
                json={"value": f"value-{i}"},
                headers={"Host": f"{host}:{server.port}", "Authorization": f"Bearer {token}"},
                extensions={"sni_hostname": host},
            )

    answers = _all_at_once(WRITERS, put)
    assert [r.status_code for r in answers] == [200] * WRITERS, [
        r.text for r in answers if r.status_code != 200
    ][:3]
    versions = {r.json()["id"].rsplit("/", 1)[1] for r in answers}
    assert len(versions) == WRITERS, "two writers were given the same version"
    assert {r.json()["value"] for r in answers} == {f"value-{i}" for i in range(WRITERS)}
    listed = server.cli_json(
        "vault", "secret", "list-versions", "--vault-name", vault_name, "--name", "brand-new"
    )
    assert {v["id"].rsplit("/", 1)[1] for v in listed} == versions


def test_concurrent_puts_of_a_new_resource_make_it_once(server: KeylessServer) -> None:
    """ARM's PUT is create-or-replace: one writer creates (201), the others replace (200)."""
    token = server.admin_token()
    path = (
        f"/subscriptions/{server.subscription_id}/resourceGroups/race-rg/providers/"
        f"Keyless.ManagedIdentity/userAssignedIdentities/race-{uuid.uuid4().hex[:8]}"
    )

    def put(i: int) -> httpx.Response:
        with _client(server) as http:
            headers = {"Authorization": f"Bearer {token}"}
            return http.put(path, json={"tags": {"writer": str(i)}}, headers=headers)

    answers = _all_at_once(20, put)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * 19 + [201], [r.text for r in answers if r.status_code >= 300]
    # One identity, one principal: every answer names the same one.
    assert len({r.json()["properties"]["principalId"] for r in answers}) == 1


def test_concurrent_identical_role_assignments_make_one(server: KeylessServer) -> None:
    """The same assignment under different names at once: one is made, the rest are told it
    exists (409 RoleAssignmentExists), never a 500."""
    token = server.admin_token()
    sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", f"race-{uuid.uuid4().hex[:8]}")
    principal = server.cli_json("ad", "sp", "show", "--id", sp["appId"])["id"]
    scope = f"/subscriptions/{server.subscription_id}/resourceGroups/race-rg"
    role = server.cli_json("role", "definition", "list", "--name", "Reader")[0]["id"]

    def put(_i: int) -> httpx.Response:
        with _client(server) as http:
            return http.put(
                f"{scope}/providers/Keyless.Authorization/roleAssignments/{uuid.uuid4()}",
                json={"properties": {"roleDefinitionId": role, "principalId": principal}},
                headers={"Authorization": f"Bearer {token}"},
            )

    answers = _all_at_once(20, put)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * 19, [r.text for r in answers if r.status_code >= 500]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {
        "RoleAssignmentExists"
    }


def test_run_write_reports_conflicts_only_for_races(tmp_path: Path) -> None:
    """A row the store refuses for itself (a missing parent) is not retried as a race."""
    from sqlalchemy.exc import IntegrityError

    from keyless.store.engine import open_engine
    from keyless.store.models import Base, GroupMember
    from keyless.store.transaction import is_write_conflict, run_write

    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    runs: list[int] = []

    def add(session: object) -> None:
        runs.append(1)
        orphan = GroupMember(group_id="none", member_id="m", member_type="user", tenant_id="t")
        session.add(orphan)  # type: ignore[attr-defined]

    with pytest.raises(IntegrityError) as refused:
        run_write(engine, add)
    assert not is_write_conflict(refused.value) and len(runs) == 1
    engine.dispose()
