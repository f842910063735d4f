"""A PostgreSQL connection over its life, as an Azure user drives it (issue #13): az's
`postgres-flexible` and a server in another resource group, TLS on the servers Keyless
creates, `connection update` to another client type, `validate` naming a role dropped by hand
and `repair` making it again, and deleting an app or a whole group reverting its connections
exactly as `connection delete` does.

One real Keyless server and one `keyless postgres server create` cluster (always removed);
every step is the real `keyless` command; apps run under `keyless app run` and log in with
`keyless.identity.postgres`. The apps print no token.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tests.support.connector import created_cluster, run_app, superuser
from tests.support.server import CliFailed, KeylessServer, running_server

PG_GROUP = "data-rg"
APP_GROUP = "apps-rg"
SERVER = "pglife"
DB = "lifedb"

# Logs in with keyless.identity.postgres from the app's settings; says who it is and whether
# the session is encrypted (never the token).
APP = """
import json, sys
from pathlib import Path
from keyless.identity import postgres

out = Path(sys.argv[1])
with postgres.connect() as conn:
    row = conn.execute(
        "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    ).fetchone()
out.write_text(json.dumps({"user": row[0], "ssl": row[1]}))
"""


@dataclass
class World:
    server: KeylessServer
    tmp: Path
    pg: dict[str, Any]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.server.cli(*args, check=False, timeout=180, input="")
        if check and done.returncode != 0:
            raise CliFailed(f"keyless {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def connect(self, app: str, *args: str, group: str = APP_GROUP) -> Any:
        return self.json(
            "app", "connection", "create", "postgres", "-g", group, "-n", app,
            "--server", SERVER, "--target-resource-group", PG_GROUP, "--database", DB,
            "--system-identity", *args,
        )  # fmt: skip

    def settings(self, app: str, group: str = APP_GROUP) -> dict[str, str]:
        shown = self.json("app", "show", "-g", group, "-n", app)
        return dict(shown["properties"].get("appSettings") or {})

    def roles(self) -> set[str]:
        with superuser(self.pg) as conn:
            return {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}

    def mappings(self) -> set[str]:
        rows = self.json("postgres", "principal", "list", "-g", PG_GROUP, "-s", SERVER)
        return {str(row["role"]) for row in rows}

    def run(self, app: str) -> dict[str, Any]:
        done, result = run_app(self.server, self.tmp, APP_GROUP, app, APP)
        assert done.returncode == 0, done.stderr[-3000:]
        assert isinstance(result, dict)
        return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("connector-lifecycle")
    with running_server(base / "data") as server:
        server.cli("login")
        server.cli("group", "create", "-n", PG_GROUP)
        server.cli("group", "create", "-n", APP_GROUP)
        with created_cluster(server, PG_GROUP, SERVER, DB) as pg:
            yield World(server, base, pg)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_created_server_serves_tls_and_connections_require_it(world: World) -> None:
    assert world.pg["properties"]["sslMode"] == "require"
    world.cli("app", "create", "-g", APP_GROUP, "-n", "web", "--assign-identity")
    # A server in another resource group, named as in the app's: the error says what to add.
    missing = world.cli(
        "app", "connection", "create", "postgres-flexible", "-g", APP_GROUP, "-n", "web",
        "--server", SERVER, "--database", DB, "--system-identity", check=False,
    )  # fmt: skip
    assert missing.returncode != 0
    assert f"no PostgreSQL server '{SERVER}' in resource group '{APP_GROUP}'" in flat(
        missing.stderr
    )
    assert "--target-resource-group GROUP" in flat(missing.stderr)
    made = world.json(
        "app", "connection", "create", "postgres-flexible", "-g", APP_GROUP, "-n", "web",
        "--server", SERVER, "--target-resource-group", PG_GROUP, "--database", DB,
        "--system-identity", "--client-type", "php",
    )  # fmt: skip
    assert made["properties"]["targetService"]["id"] == world.pg["id"]
    port = world.pg["properties"]["port"]
    assert world.settings("web") == {
        "AZURE_POSTGRESQL_CONNECTIONSTRING": (
            f"host=127.0.0.1 port={port} dbname={DB} sslmode=require user=aad_postgres_web"
        )
    }
    # The app logs in with a token over TLS.
    assert world.run("web") == {"user": "aad_postgres_web", "ssl": True}


def test_update_rewrites_the_keys_for_another_client_type(world: World) -> None:
    port = world.pg["properties"]["port"]
    world.cli(
        "app", "connection", "update", "-g", APP_GROUP, "-n", "web",
        "--connection", "postgres_web", "--client-type", "springboot",
    )  # fmt: skip
    assert world.settings("web") == {
        "spring.datasource.url": f"jdbc:postgresql://127.0.0.1:{port}/{DB}?sslmode=require",
        "spring.datasource.username": "aad_postgres_web",
        "spring.datasource.passwordless-enabled": "true",
    }
    shown = world.json(
        "app", "connection", "show", "-g", APP_GROUP, "-n", "web", "--connection", "postgres_web"
    )
    assert shown["properties"]["clientType"] == "springboot"
    world.cli(
        "app", "connection", "update", "-g", APP_GROUP, "-n", "web",
        "--connection", "postgres_web", "--client-type", "python",
    )  # fmt: skip
    assert set(world.settings("web")) == {"AZURE_POSTGRESQL_CONNECTIONSTRING"}
    assert world.run("web")["user"] == "aad_postgres_web"


def test_validate_names_a_dropped_role_and_repair_makes_it_again(world: World) -> None:
    role = "aad_postgres_web"
    with superuser(world.pg, DB) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    done = world.cli(
        "app", "connection", "validate", "-g", APP_GROUP, "-n", "web",
        "--connection", "postgres_web", check=False,
    )  # fmt: skip
    assert done.returncode == 1
    text = flat(done.stdout)
    assert f"FAIL login through the gateway: role {role} does not exist on server {SERVER}" in text
    fix = next(line for line in done.stdout.splitlines() if "recreate it with:" in line)
    command = fix.split("recreate it with:", 1)[1].strip()
    assert command.startswith("keyless app connection repair ")
    # The printed command runs as printed.
    world.cli(*shlex.split(command)[1:])
    assert role in world.roles()
    again = world.json(
        "app", "connection", "validate", "-g", APP_GROUP, "-n", "web",
        "--connection", "postgres_web", "-o", "json",
    )  # fmt: skip
    assert again["valid"], again["checks"]
    assert world.run("web")["user"] == role


def test_deleting_an_app_or_a_group_reverts_its_connections(world: World) -> None:
    # An app on its own.
    world.cli("app", "create", "-g", APP_GROUP, "-n", "short", "--assign-identity")
    world.connect("short")
    assert "aad_postgres_short" in world.roles()
    deleted = world.json("app", "delete", "-g", APP_GROUP, "-n", "short")
    assert any("role 'aad_postgres_short' dropped" in line for line in deleted["reverted"])
    assert "aad_postgres_short" not in world.roles()
    assert "aad_postgres_short" not in world.mappings()

    # A whole group: the preview names the connection, the delete reverts it and counts every
    # role assignment it removed.
    group = "gone-rg"
    world.cli("group", "create", "-n", group)
    app = world.json("app", "create", "-g", group, "-n", "svc", "--assign-identity")
    world.connect("svc", group=group)
    principal = app["identity"]["principalId"]
    world.cli("role", "assignment", "create", "--assignee-object-id", principal,
              "--role", "Reader", "-g", group)  # fmt: skip
    preview = world.cli("group", "delete", "-n", group, check=False)
    assert preview.returncode != 0  # no terminal to confirm on: nothing deleted
    assert "connection svc/postgres_svc: reverted first" in flat(preview.stderr)
    assert "aad_postgres_svc" in world.roles()
    result = world.json("group", "delete", "-n", group, "--yes")
    assert result["deletedResources"] == 1  # the app (its connection record went with the revert)
    assert result["deletedRoleAssignments"] == 1
    assert any("role 'aad_postgres_svc' dropped" in line for line in result["reverted"])
    assert any("mapping of role 'aad_postgres_svc' removed" in line for line in result["reverted"])
    assert "aad_postgres_svc" not in world.roles()
    assert "aad_postgres_svc" not in world.mappings()
