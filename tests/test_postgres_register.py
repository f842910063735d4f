"""`keyless postgres server register` on a PostgreSQL server Keyless did not create (issue #5):
one-time enablement with the operator's administrator connection, then every Keyless operation
on that server runs with the signed-in user's token and no PostgreSQL password.

Real parts: a Keyless server (its embedded token gateway), a PostgreSQL 15 cluster started by
the tests with SCRAM for its superuser, the `keyless` CLI as subprocesses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import KeylessServer, running_server

GROUP = "ext"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KeylessServer, PostgresServer]]:
    with running_server(tmp_path_factory.mktemp("register") / "data") as server:
        server.cli("login")
        server.cli("group", "create", "-n", GROUP)
        with PostgresServer() as pg:
            yield server, pg


def _hba(pg: PostgresServer) -> str:
    return (pg.data_dir / "pg_hba.conf").read_text()


def _register(
    server: KeylessServer, pg: PostgresServer, name: str, *extra: str, check: bool = True
):  # type: ignore[no-untyped-def]
    return server.cli(
        "postgres", "server", "register", "-g", GROUP, "-n", name, "--host", pg.host,
        "--port", str(pg.port), "--admin-connection", pg.admin_url(), *extra, check=check,
    )  # fmt: skip


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """stderr with the terminal's line wrapping undone."""
    return " ".join(result.stderr.split())


def _user_token(server: KeylessServer) -> str:
    out = server.cli_json("account", "get-access-token", "--resource", "api://keyless/postgres")
    return str(out["accessToken"])


def _upn(server: KeylessServer) -> str:
    return str(server.cli_json("account", "show")["user"]["name"])


def test_print_only_enables_roles_but_leaves_pg_hba_alone(
    world: tuple[KeylessServer, PostgresServer],
) -> None:
    server, pg = world
    before = _hba(pg)
    result = _register(server, pg, "ext-print", "--print-only")
    lines = [line for line in result.stdout.splitlines() if line.startswith("host ")]
    assert len(lines) == 2, result.stdout
    for line in lines:
        assert line.split()[2] == "+keyless_login"
        assert f"ldapport={server.gateway_port}" in line
        assert 'ldapsuffix=",ou=ext-print,dc=keyless"' in line
    assert _hba(pg) == before
    shown = server.cli_json("postgres", "server", "show", "-g", GROUP, "-n", "ext-print")
    assert shown["properties"]["administratorLogin"] == _upn(server)
    server.cli("postgres", "server", "delete", "-g", GROUP, "-n", "ext-print")


def test_register_writes_pg_hba_and_admin_work_uses_the_users_token(
    world: tuple[KeylessServer, PostgresServer],
) -> None:
    server, pg = world
    _register(server, pg, "ext1")
    hba = _hba(pg)
    assert hba.startswith("# BEGIN keyless server=ext1 ")
    assert hba.count("# BEGIN keyless server=ext1 ") == 1
    shown = server.cli_json("postgres", "server", "show", "-g", GROUP, "-n", "ext1")
    props = shown["properties"]
    assert props["state"] == "Enabled" and props["version"].startswith("15")
    assert props["gateway"] == {"host": "127.0.0.1", "port": server.gateway_port, "scheme": "ldap"}

    # The admin role logs in with the signed-in user's token: no PostgreSQL password.
    token = _user_token(server)
    with psycopg.connect(
        host=pg.host, port=pg.port, dbname="postgres", user=_upn(server), password=token,
        connect_timeout=10,
    ) as conn:  # fmt: skip
        row = conn.execute(
            "SELECT rolcreaterole, rolcreatedb, pg_has_role(current_user, 'keyless_login', "
            "'MEMBER') FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (True, True, True)
    # Every other role keeps its own authentication (the superuser's SCRAM password).
    with psycopg.connect(pg.admin_url(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # Admin work through Keyless: a database and a principal's role, with the user's token.
    server.cli("postgres", "db", "create", "-g", GROUP, "-s", "ext1", "-n", "shop")
    dbs = {d["name"] for d in server.cli_json("postgres", "db", "list", "-g", GROUP, "-s", "ext1")}
    assert "shop" in dbs
    sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", "ext-reporter", "--secret")
    object_id = server.cli_json("ad", "sp", "show", "--id", sp["appId"])["id"]
    server.cli(
        "postgres", "principal", "create", "-g", GROUP, "-s", "ext1", "-n", "reporter",
        "--object-id", object_id,
    )  # fmt: skip
    listed = server.cli_json("postgres", "principal", "list", "-g", GROUP, "-s", "ext1")
    by_role = {m["role"]: m for m in listed}
    assert by_role["reporter"]["principalId"] == object_id and by_role["reporter"]["roleExists"]
    assert by_role[_upn(server)]["roleExists"]

    # The principal logs in as its role with its own token (client credentials).
    with server.http() as http:
        response = http.post(
            server.token_url(),
            data={
                "grant_type": "client_credentials",
                "client_id": sp["appId"],
                "client_secret": sp["password"],
                "scope": "https://ossrdbms-aad.database.windows.net/.default",
            },
        )
    assert response.status_code == 200, response.text
    sp_token = response.json()["access_token"]
    with psycopg.connect(
        host=pg.host, port=pg.port, dbname="shop", user="reporter", password=sp_token,
        connect_timeout=10,
    ) as conn:  # fmt: skip
        assert conn.execute("SELECT current_user").fetchone() == ("reporter",)
    # ...and not as the admin role: the role belongs to someone else.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=pg.host, port=pg.port, dbname="postgres", user=_upn(server), password=sp_token,
            connect_timeout=10,
        )  # fmt: skip

    dropped = server.cli_json(
        "postgres", "principal", "drop", "-g", GROUP, "-s", "ext1", "-n", "reporter"
    )
    assert dropped["dropped"] is True
    with psycopg.connect(pg.admin_url(), connect_timeout=10) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'reporter'").fetchone()
    assert gone == (0,)
    roles = [
        m["role"]
        for m in server.cli_json("postgres", "principal", "list", "-g", GROUP, "-s", "ext1")
    ]
    assert "reporter" not in roles

    # Registering again replaces the block rather than adding a second one.
    _register(server, pg, "ext1")
    assert _hba(pg).count("# BEGIN keyless server=ext1 ") == 1
    assert token not in json.dumps(server.audit())


def test_a_connection_to_a_server_without_tls_warns_what_that_exposes(
    world: tuple[KeylessServer, PostgresServer],
) -> None:
    """Registered with the default sslMode prefer (this server serves no TLS): `connection
    create` still connects, and says the token may cross the network in clear (issue #13)."""
    server, pg = world
    _register(server, pg, "plain1")
    server.cli("postgres", "db", "create", "-g", GROUP, "-s", "plain1", "-n", "plaindb")
    server.cli("app", "create", "-g", GROUP, "-n", "plain-app", "--assign-identity")
    made = server.cli(
        "app", "connection", "create", "postgres", "-g", GROUP, "-n", "plain-app",
        "--server", "plain1", "--database", "plaindb", "--system-identity",
    )  # fmt: skip
    said = _said(made)
    assert "warning: server plain1 is registered with sslMode prefer" in said
    assert "may cross the network unencrypted" in said and "--ssl-mode require" in said
    server.cli(
        "app", "connection", "delete", "-g", GROUP, "-n", "plain-app",
        "--connection", "postgres_plain_app",
    )  # fmt: skip


def test_register_refuses_bad_input_and_changes_nothing(
    world: tuple[KeylessServer, PostgresServer],
) -> None:
    server, pg = world
    before = _hba(pg)
    wrong = pg.admin_url().replace(pg.password, "not-the-password")
    result = server.cli(
        "postgres", "server", "register", "-g", GROUP, "-n", "ext-bad", "--host", pg.host,
        "--port", str(pg.port), "--admin-connection", wrong, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "administrator connection" in _said(result)
    assert "not-the-password" not in result.stderr + result.stdout
    missing = server.cli("postgres", "server", "show", "-g", GROUP, "-n", "ext-bad", check=False)
    assert missing.returncode != 0  # the resource was removed again
    assert _hba(pg) == before

    for bad_name in ("-bad", "UPPER_and_underscore"):
        result = _register(server, pg, bad_name, check=False)
        assert result.returncode != 0 and "name" in _said(result).lower()
    result = server.cli(
        "postgres", "server", "register", "-g", GROUP, "-n", "ext-port", "--host", "not a host",
        "--admin-connection", pg.admin_url(), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "host" in _said(result)
    # A name already registered (names are bind DN parts, unique on this Keyless).
    server.cli("group", "create", "-n", "ext-other")
    result = server.cli(
        "postgres", "server", "register", "-g", "ext-other", "-n", "ext1", "--host", pg.host,
        "--port", str(pg.port), "--admin-connection", pg.admin_url(), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "already registered" in _said(result)
    assert _hba(pg) == before
