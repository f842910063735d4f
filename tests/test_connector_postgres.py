"""Service Connector to PostgreSQL, end to end, as a user types it (docs/design.md, "Service
Connector: what a connection writes").

One world for the module: a real Keyless server (with its token gateway), one PostgreSQL
cluster made by `keyless postgres server create` (always deleted), apps with a system-assigned
identity, a user-assigned identity and a service principal. Everything goes through the real
`keyless` command; apps run under `keyless app run` and log in with `keyless.identity.postgres`;
nothing is mocked.

Tokens and secrets are never printed by these tests: assertion messages name keys, roles and
check results. Every CLI output is kept and checked at the end for the tokens the test holds.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.support.connector import created_cluster, run_app, superuser
from tests.support.server import CliFailed, KeylessServer, running_server

GROUP = "conn-rg"
SERVER = "pgconn"
DB = "appdb"
HOST = "127.0.0.1"
SSLMODE = "require"  # `postgres server create` serves TLS from the Keyless CA (issue #13)
POSTGRES_SCOPE = "api://keyless/postgres/.default"
CLIENT_TYPES = (
    "python", "django", "nodejs", "go", "java", "springboot", "php", "ruby", "dotnet", "none",
)  # fmt: skip
CHECKS = (
    "configuration keys",
    "identity",
    "target reachable",
    "token",
    "login through the gateway",
    "role and grants",
)

# Runs under `keyless app run`: logs in with keyless.identity.postgres (DefaultCredential ->
# the app's managed identity endpoint), makes a table, writes and reads. Writes what it saw,
# never a token.
APP = """
import json, os, sys
from pathlib import Path
from keyless.identity import postgres

out, args = Path(sys.argv[1]), json.loads(sys.argv[2])
leaks = sorted(
    k for k, v in os.environ.items()
    if "password=" in v.lower() or k in ("PGPASSWORD", "PGPASSFILE")
)
keys = {k: v for k, v in os.environ.items() if k.startswith("AZURE_POSTGRESQL")}
table = args["table"]
with postgres.connect(connection=args.get("connection")) as conn:
    conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, note text NOT NULL)")
    conn.execute(f"INSERT INTO {table} (note) VALUES (%s), (%s)", ("one", "two"))
    rows = [r[0] for r in conn.execute(f"SELECT note FROM {table} ORDER BY id")]
    who = conn.execute("SELECT current_user, current_database()").fetchone()
    conn.commit()
out.write_text(json.dumps({"leaks": leaks, "keys": keys, "rows": rows, "user": who[0],
                           "database": who[1]}))
"""


# ------------------------------------------------------------------------------------- world


@dataclass
class World:
    server: KeylessServer
    tmp: Path
    pg: dict[str, Any]  # the server resource
    web: dict[str, Any]  # app, system-assigned identity
    api: dict[str, Any]  # app, user-assigned identity `api_id` (attached by the connection)
    api_id: dict[str, Any]
    worker: dict[str, Any]  # app, service principal `sp`
    sp: dict[str, str]  # appId, objectId, secret
    outputs: list[str] = field(default_factory=list)  # every CLI stdout and stderr
    secrets: list[str] = field(default_factory=list)  # tokens and secrets the test holds

    def __repr__(self) -> str:  # pytest prints fixtures: never the secret or the tokens
        return f"World(server={self.server.endpoint}, pg={SERVER}:{self.port})"

    # --- the CLI, every output kept

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.server.cli(*args, check=False, timeout=120)
        self.outputs += [done.stdout, done.stderr]
        if check and done.returncode != 0:
            raise CliFailed(f"keyless {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args).stdout)

    def connect(self, app: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli(
            "app", "connection", "create", "postgres", "-g", GROUP, "-n", app,
            "--server", SERVER, "--database", DB, *args, check=check,
        )  # fmt: skip

    def validate(self, app: str, connection: str) -> tuple[int, dict[str, Any]]:
        done = self.cli(
            "app", "connection", "validate", "-g", GROUP, "-n", app, "--connection", connection,
            "-o", "json", check=False,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    def configuration(self, app: str, connection: str) -> dict[str, str]:
        rows = self.json(
            "app", "connection", "list-configuration", "-g", GROUP, "-n", app,
            "--connection", connection,
        )["configurations"]  # fmt: skip
        return {row["name"]: row["value"] for row in rows}

    # --- what exists

    def app(self, name: str) -> dict[str, Any]:
        return dict(self.json("app", "show", "-g", GROUP, "-n", name))

    def settings(self, name: str) -> dict[str, str]:
        return dict(self.app(name)["properties"].get("appSettings") or {})

    def connections(self, app: str) -> list[str]:
        rows = self.json("app", "connection", "list", "-g", GROUP, "-n", app)
        return sorted(row["name"] for row in rows)

    def mappings(self) -> dict[str, str]:
        rows = self.json("postgres", "principal", "list", "-g", GROUP, "-s", SERVER)
        return {row["role"]: row["principalId"] for row in rows}

    def roles(self) -> set[str]:
        with superuser(self.pg) as conn:
            rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'")
            return {str(r[0]) for r in rows}

    def sql(self, query: str, *params: Any, dbname: str = DB) -> list[tuple[Any, ...]]:
        with superuser(self.pg, dbname) as conn:
            return list(conn.execute(query, params).fetchall())

    @property
    def port(self) -> int:
        return int(self.pg["properties"]["port"])

    def sp_token(self) -> str:
        """A postgres token for the service principal, from its secret (client credentials)."""
        with self.server.http() as http:
            response = http.post(
                self.server.token_url(),
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.sp["appId"],
                    "client_secret": self.sp["secret"],
                    "scope": POSTGRES_SCOPE,
                },
            )
        assert response.status_code == 200, response.json().get("error_description")
        token = str(response.json()["access_token"])
        self.secrets.append(token)
        return token


def flat(text: str) -> str:
    """CLI messages as one line (the console wraps them at its width)."""
    return " ".join(text.split())


def role_of(connection: str) -> str:
    return f"aad_{connection}"


def app_run(world: World, app: str, **args: Any) -> dict[str, Any]:
    done, result = run_app(world.server, world.tmp, GROUP, app, APP, args)
    world.outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, f"app {app} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("connector-postgres")
    with running_server(base / "data") as server:
        server.cli("login")
        server.cli("group", "create", "-n", GROUP)
        web = server.cli_json("app", "create", "-g", GROUP, "-n", "web", "--assign-identity")
        api = server.cli_json("app", "create", "-g", GROUP, "-n", "api")
        worker = server.cli_json("app", "create", "-g", GROUP, "-n", "worker")
        api_id = server.cli_json("identity", "create", "-g", GROUP, "-n", "api-id")
        created = server.cli_json("ad", "sp", "create-for-rbac", "--name", "worker-sp", "--secret")
        shown = server.cli_json("ad", "sp", "show", "--id", created["appId"])
        sp = {"appId": created["appId"], "objectId": shown["id"], "secret": created["password"]}
        with created_cluster(server, GROUP, SERVER, DB) as pg:
            world = World(server, base, pg, web, api, api_id, worker, sp)
            world.secrets += [sp["secret"], admin_token(server)]
            world.connect("web", "--system-identity", "--client-type", "python")
            world.connect(
                "api", "--user-identity", f"client-id={api_id['clientId']}",
                "--client-type", "django",
            )  # fmt: skip
            world.connect(
                "worker", "--service-principal", f"client-id={sp['appId']}",
                "--client-type", "python",
            )  # fmt: skip
            yield world


def admin_token(server: KeylessServer) -> str:
    """The signed-in user's cached token (what the CLI logs in to PostgreSQL with)."""
    return str(json.loads((server.data_dir / "cli" / "token.json").read_text())["accessToken"])


def python_string(role: str, port: int) -> str:
    return f"dbname={DB} host={HOST} port={port} sslmode={SSLMODE} user={role}"


# ------------------------------------------------------- 1. each identity logs in with a token


def test_system_assigned_identity_app_writes_and_reads_with_a_token(world: World) -> None:
    seen = app_run(world, "web", table="web_notes")
    assert (seen["user"], seen["database"]) == (role_of("postgres_web"), DB)
    assert seen["rows"] == ["one", "two"]
    assert seen["keys"] == {
        "AZURE_POSTGRESQL_CONNECTIONSTRING": python_string(role_of("postgres_web"), world.port)
    }
    assert seen["leaks"] == []  # 3. no password anywhere in the app's environment
    # The gateway granted the login to the app's own identity.
    records = world.json(
        "audit", "list", "--action", "gateway.bind", "--result", "granted", "--limit", "1000"
    )
    actors = {r["actor"] for r in records if r["target"] == f"{SERVER}/aad_postgres_web"}
    assert world.web["identity"]["principalId"] in actors


def test_user_assigned_identity_app_writes_and_reads_with_a_token(world: World) -> None:
    # The connection attached the identity to the app (it had none).
    users = world.app("api")["identity"]["userAssignedIdentities"]
    assert [u["clientId"] for u in users.values()] == [world.api_id["clientId"]]
    seen = app_run(world, "api", table="api_items")
    assert (seen["user"], seen["rows"]) == (role_of("postgres_api"), ["one", "two"])
    assert seen["keys"]["AZURE_POSTGRESQL_CLIENTID"] == world.api_id["clientId"]
    assert seen["leaks"] == []


def test_service_principal_logs_in_with_a_token_from_its_secret(world: World) -> None:
    conninfo = world.configuration("worker", "postgres_worker")["AZURE_POSTGRESQL_CONNECTIONSTRING"]
    params = conninfo_to_dict(conninfo)
    token = world.sp_token()
    with psycopg.connect(**params, password=token, connect_timeout=10) as conn:
        conn.execute("CREATE TABLE worker_jobs (id serial PRIMARY KEY, job text)")
        conn.execute("INSERT INTO worker_jobs (job) VALUES ('a'), ('b')")
        rows = conn.execute("SELECT current_user, count(*) FROM worker_jobs").fetchall()
    assert rows == [(role_of("postgres_worker"), 2)]

    # psql, the way an operator tries it: the token as PGPASSWORD.
    psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql")) or [shutil.which("psql") or ""]
    if not psql[-1]:
        pytest.skip("no psql binary here (the psycopg login above passed)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=token, PGCONNECT_TIMEOUT="10")
    done = subprocess.run(
        [psql[-1], "-X", "-A", "-t", "-d", conninfo, "-c", "SELECT current_user"],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == role_of("postgres_worker")
    assert token not in done.stdout + done.stderr


def test_created_cluster_loads_no_sasl_plugin_on_token_logins(world: World) -> None:
    """The cluster's postmaster runs with SASL_PATH at an empty directory, so a backend that
    checks a token through libldap loads no Cyrus SASL plugin (~1 ms a login otherwise)."""
    from keyless.gateway.cluster import cluster_directory

    directory = cluster_directory(world.server.data_dir.resolve(), SERVER.lower())
    postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    environ = Path(f"/proc/{postmaster}/environ").read_bytes().split(b"\0")
    sasl_path = [v for v in environ if v.startswith(b"SASL_PATH=")]
    assert sasl_path == [b"SASL_PATH=" + str(directory / "sasl-none").encode()]
    assert list((directory / "sasl-none").iterdir()) == []

    conninfo = world.configuration("worker", "postgres_worker")["AZURE_POSTGRESQL_CONNECTIONSTRING"]
    with psycopg.connect(
        **conninfo_to_dict(conninfo), password=world.sp_token(), connect_timeout=10
    ) as conn:
        row = conn.execute("SELECT pg_backend_pid(), current_user").fetchone()
        assert row is not None and row[1] == role_of("postgres_worker")
        maps = Path(f"/proc/{row[0]}/maps").read_text()
    assert "libldap" in maps  # the login went through PostgreSQL's ldap method
    assert "/sasl2/" not in maps


# An app written for Azure with a service principal: ClientSecretCredential from the three
# settings (the secret's setting is a vault reference `keyless app run` resolved), then psycopg.
SP_APP = """
import hashlib, json, os, sys
from pathlib import Path
import psycopg
from azure.identity import ClientSecretCredential

out = Path(sys.argv[1])
secret = os.environ["AZURE_POSTGRESQL_CLIENTSECRET"]
credential = ClientSecretCredential(
    os.environ["AZURE_POSTGRESQL_TENANTID"], os.environ["AZURE_POSTGRESQL_CLIENTID"], secret,
    disable_instance_discovery=True,
)
token = credential.get_token("https://ossrdbms-aad.database.windows.net/.default").token
with psycopg.connect(os.environ["AZURE_POSTGRESQL_CONNECTIONSTRING"], password=token) as conn:
    user = conn.execute("SELECT current_user").fetchone()[0]
out.write_text(json.dumps({"user": user, "secret": hashlib.sha256(secret.encode()).hexdigest()}))
"""


def test_service_principal_with_its_secret_in_a_vault(world: World) -> None:
    """--secret keeps the secret in the vault --vault names; the app's settings hold a
    reference, `keyless app run` resolves it, and the app logs in with the secret's token."""
    vault = world.json("vault", "create", "-g", GROUP, "-n", "pg-secrets")
    me = world.json("account", "show")["user"]["name"]
    world.cli("role", "assignment", "create", "--assignee", me, "--role", "Vault Administrator",
              "--scope", vault["id"])  # fmt: skip
    world.cli("app", "create", "-g", GROUP, "-n", "sp-vaulted")
    world.cli("app", "config", "appsettings", "set", "-g", GROUP, "-n", "sp-vaulted",
              "--settings", f"AZURE_AUTHORITY_HOST={world.server.endpoint}",
              "--settings", f"REQUESTS_CA_BUNDLE={world.server.ca_file}")  # fmt: skip
    secret_file = world.tmp / "sp-secret"
    secret_file.write_text(world.sp["secret"] + "\n")
    world.connect(
        "sp-vaulted", "--service-principal", f"client-id={world.sp['appId']}",
        "--secret", f"@{secret_file}", "--vault", "pg-secrets", "--connection", "vaulted",
    )  # fmt: skip
    secret_file.unlink()
    name = "sp-vaulted-vaulted-client-secret"
    settings = world.settings("sp-vaulted")
    assert settings["AZURE_POSTGRESQL_CLIENTSECRET"] == (
        f"@Keyless.Vault(SecretUri={vault['properties']['vaultUri']}secrets/{name})"
    )
    assert settings["AZURE_POSTGRESQL_CLIENTID"] == world.sp["appId"]
    assert not any(world.sp["secret"] in v for v in settings.values())

    done, result = run_app(world.server, world.tmp, GROUP, "sp-vaulted", SP_APP)
    world.outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr[-3000:]
    assert result == {
        "user": role_of("vaulted"),
        "secret": hashlib.sha256(world.sp["secret"].encode()).hexdigest(),
    }
    code, checks = world.validate("sp-vaulted", "vaulted")
    assert code == 0 and checks["valid"], checks

    world.cli("app", "connection", "delete", "-g", GROUP, "-n", "sp-vaulted",
              "--connection", "vaulted")  # fmt: skip
    assert role_of("vaulted") not in world.roles()
    assert world.json("vault", "secret", "list", "--vault-name", "pg-secrets") == []
    assert set(world.settings("sp-vaulted")) == {"AZURE_AUTHORITY_HOST", "REQUESTS_CA_BUNDLE"}


# -------------------------------------------------------------------- 2. configuration keys


def test_configuration_keys_per_identity_kind(world: World) -> None:
    port = world.port
    assert world.configuration("web", "postgres_web") == {
        "AZURE_POSTGRESQL_CONNECTIONSTRING": python_string("aad_postgres_web", port)
    }
    assert world.configuration("api", "postgres_api") == {
        "AZURE_POSTGRESQL_NAME": DB,
        "AZURE_POSTGRESQL_HOST": HOST,
        "AZURE_POSTGRESQL_USER": "aad_postgres_api",
        "AZURE_POSTGRESQL_PORT": str(port),
        "AZURE_POSTGRESQL_CLIENTID": world.api_id["clientId"],
    }
    assert world.configuration("worker", "postgres_worker") == {
        "AZURE_POSTGRESQL_CONNECTIONSTRING": python_string("aad_postgres_worker", port),
        "AZURE_POSTGRESQL_CLIENTID": world.sp["appId"],
        "AZURE_POSTGRESQL_TENANTID": world.server.tenant_id,
    }
    # The keys are the app's settings, and nothing in them is a password.
    for app in ("web", "api", "worker"):
        settings = world.settings(app)
        assert all("password" not in v.lower() for v in settings.values()), app
    record = world.json(
        "app", "connection", "show", "-g", GROUP, "-n", "api", "--connection", "postgres_api"
    )
    props = record["properties"]
    assert props["authInfo"]["authType"] == "userAssignedIdentity"
    assert props["targetService"] == {
        "type": "postgres", "id": world.pg["id"], "database": DB, "role": "aad_postgres_api",
    }  # fmt: skip


def expected_values(client_type: str, role: str, port: int) -> dict[str, str]:
    """docs/design.md's table. Two deliberate details: go carries the port when it is not 5432 (a
    local server's never is; Azure's form omits it), and dotnet spells the mode as Npgsql does."""
    if client_type in ("python", "none"):
        return {"AZURE_POSTGRESQL_CONNECTIONSTRING": python_string(role, port)}
    return {
        "django": {
            "AZURE_POSTGRESQL_NAME": DB,
            "AZURE_POSTGRESQL_HOST": HOST,
            "AZURE_POSTGRESQL_USER": role,
            "AZURE_POSTGRESQL_PORT": str(port),
        },
        "nodejs": {
            "AZURE_POSTGRESQL_HOST": HOST,
            "AZURE_POSTGRESQL_USER": role,
            "AZURE_POSTGRESQL_DATABASE": DB,
            "AZURE_POSTGRESQL_PORT": str(port),
            "AZURE_POSTGRESQL_SSL": "true",  # sslmode require
        },
        "go": {
            "AZURE_POSTGRESQL_CONNECTIONSTRING": (
                f"host={HOST} port={port} dbname={DB} sslmode={SSLMODE} user={role}"
            )
        },
        "java": {
            "AZURE_POSTGRESQL_CONNECTIONSTRING": (
                f"jdbc:postgresql://{HOST}:{port}/{DB}?sslmode={SSLMODE}&user={role}"
            )
        },
        # Azure's Spring Boot properties, PHP (native) and Ruby (ruby-pg) strings (Service
        # Connector's "Integrate Azure Database for PostgreSQL" page).
        "springboot": {
            "spring.datasource.url": f"jdbc:postgresql://{HOST}:{port}/{DB}?sslmode={SSLMODE}",
            "spring.datasource.username": role,
            "spring.datasource.passwordless-enabled": "true",
        },
        "php": {
            "AZURE_POSTGRESQL_CONNECTIONSTRING": (
                f"host={HOST} port={port} dbname={DB} sslmode={SSLMODE} user={role}"
            )
        },
        "ruby": {
            "AZURE_POSTGRESQL_CONNECTIONSTRING": (
                f"host={HOST} port={port} dbname={DB} sslmode={SSLMODE} user={role}"
            )
        },
        "dotnet": {
            "AZURE_POSTGRESQL_CONNECTIONSTRING": (
                f"Server={HOST};Database={DB};Port={port};Ssl Mode=Require;User Id={role};"
            )
        },
    }[client_type]


@pytest.fixture(scope="module")
def types_app(world: World) -> str:
    world.cli("app", "create", "-g", GROUP, "-n", "types", "--assign-identity")
    return "types"


@pytest.mark.parametrize("client_type", CLIENT_TYPES)
def test_configuration_values_per_client_type(
    world: World, types_app: str, client_type: str
) -> None:
    world.connect(types_app, "--system-identity", "--client-type", client_type)
    try:
        expected = expected_values(client_type, "aad_postgres_types", world.port)
        assert world.configuration(types_app, "postgres_types") == expected
        assert world.settings(types_app) == expected
        assert not any("password" in v.lower() for v in expected.values())
    finally:
        world.cli(
            "app", "connection", "delete", "-g", GROUP, "-n", types_app,
            "--connection", "postgres_types",
        )  # fmt: skip
    assert world.settings(types_app) == {}


def test_a_second_connection_of_the_app_has_its_own_keys(world: World) -> None:
    # Made after other apps created tables in the same database (web_notes, api_items...).
    world.connect("web", "--system-identity", "--connection", "reports")
    assert world.configuration("web", "reports") == {
        "AZURE_POSTGRESQL_REPORTS_CONNECTIONSTRING": python_string("aad_reports", world.port)
    }
    settings = world.settings("web")
    assert set(settings) == {
        "AZURE_POSTGRESQL_CONNECTIONSTRING",
        "AZURE_POSTGRESQL_REPORTS_CONNECTIONSTRING",
    }
    seen = app_run(world, "web", table="reports_t", connection="reports")
    assert (seen["user"], seen["rows"]) == ("aad_reports", ["one", "two"])
    assert seen["leaks"] == []


def test_customized_keys_rename_the_settings(world: World, types_app: str) -> None:
    world.connect(
        types_app, "--system-identity", "--connection", "custom",
        "--customized-keys", "AZURE_POSTGRESQL_CONNECTIONSTRING=DATABASE_URL",
    )  # fmt: skip
    try:
        value = python_string("aad_custom", world.port)
        assert world.configuration(types_app, "custom") == {"DATABASE_URL": value}
        assert world.settings(types_app) == {"DATABASE_URL": value}
    finally:
        world.cli(
            "app", "connection", "delete", "-g", GROUP, "-n", types_app, "--connection", "custom"
        )
    assert world.settings(types_app) == {}


# ---------------------------------------------------------------------------- 4. validate


def test_validate_passes_on_good_connections(world: World) -> None:
    for app, connection in (
        ("web", "postgres_web"),
        ("web", "reports"),
        ("api", "postgres_api"),
        ("worker", "postgres_worker"),
    ):
        code, result = world.validate(app, connection)
        results = {c["name"]: c["result"] for c in result["checks"]}
        assert (code, result["valid"]) == (0, True), (connection, result["checks"])
        assert results == dict.fromkeys(CHECKS, "pass"), connection
    table = world.cli(
        "app", "connection", "validate", "-g", GROUP, "-n", "web", "--connection", "postgres_web"
    )
    lines = [line for line in table.stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["PASS"] * len(CHECKS)


def test_validate_pinpoints_a_role_dropped_by_hand(world: World) -> None:
    world.cli("app", "create", "-g", GROUP, "-n", "fragile", "--assign-identity")
    world.connect("fragile", "--system-identity")
    role = "aad_postgres_fragile"
    assert world.validate("fragile", "postgres_fragile")[1]["valid"] is True
    with superuser(world.pg, DB) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    code, result = world.validate("fragile", "postgres_fragile")
    checks = {c["name"]: c for c in result["checks"]}
    assert (code, result["valid"]) == (1, False)
    assert [checks[n]["result"] for n in CHECKS] == ["pass"] * 4 + ["fail", "skipped"]
    login = checks["login through the gateway"]
    # As the server's Keyless administrator, the CLI says why and how to fix it (issue #13).
    assert f"role {role} does not exist on server {SERVER}" in login["detail"]
    assert "refused" in login["detail"]
    assert login["fix"] == (
        f"recreate it with: keyless app connection repair -g {GROUP} -n fragile "
        "--connection postgres_fragile"
    )
    table = world.cli(
        "app", "connection", "validate", "-g", GROUP, "-n", "fragile",
        "--connection", "postgres_fragile", check=False,
    )  # fmt: skip
    assert table.returncode == 1
    assert "FAIL  login through the gateway" in table.stdout and "fix: " in table.stdout

    # delete tolerates what is already gone and removes the rest.
    done = world.json(
        "app", "connection", "delete", "-g", GROUP, "-n", "fragile",
        "--connection", "postgres_fragile",
    )  # fmt: skip
    assert any("already gone" in line for line in done["reverted"])
    assert role not in world.mappings()
    assert world.settings("fragile") == {}
    assert world.connections("fragile") == []


# ------------------------------------------------------------------- 8. refusals, audited


def test_another_identitys_token_cannot_log_in_as_the_connections_role(world: World) -> None:
    token = world.sp_token()  # valid, for the postgres API, but the worker's
    role = "aad_postgres_web"
    with pytest.raises(psycopg.OperationalError, match="LDAP authentication failed") as caught:
        psycopg.connect(
            host=HOST, port=world.port, dbname=DB, user=role, password=token,
            sslmode="disable", connect_timeout=10,
        ).close()  # fmt: skip
    assert token not in str(caught.value)
    records = world.json(
        "audit", "list", "--action", "gateway.bind", "--result", "principal_not_mapped",
        "--limit", "1000",
    )  # fmt: skip
    mine = [
        r for r in records
        if r["target"] == f"{SERVER}/{role}" and r["actor"] == world.sp["objectId"]
    ]  # fmt: skip
    assert mine, "no audited refusal for the worker's token as web's role"
    assert mine[0]["details"]["role"] == role and mine[0]["details"]["reason"]
    assert token not in json.dumps(records)


# ----------------------------------------------------------------------- 6. failure undo


@pytest.fixture(scope="module")
def blank_app(world: World) -> str:
    world.cli("app", "create", "-g", GROUP, "-n", "blank")
    with superuser(world.pg) as conn:
        conn.execute("CREATE ROLE legacy LOGIN")  # a role Keyless did not make
    return "blank"


FAILURES = {
    "no such database": (
        ["--database", "nosuchdb"],
        ["find database 'nosuchdb' failed", "does not exist"],
    ),
    "customized key the connection does not write": (
        ["--customized-keys", "NOPE=X"],
        ["NOPE", "does not write", "dropped role 'aad_postgres_blank'"],
    ),
    "role of another principal": (
        ["--role", "aad_postgres_web"],
        ["'aad_postgres_web'", "already belongs to another principal"],
    ),
    "role not made by Keyless": (
        ["--role", "legacy"],
        ["'legacy' already exists", "not managed by Keyless", "removed the mapping"],
    ),
}


def state(world: World, *apps: str) -> dict[str, Any]:
    return {
        "roles": world.roles(),
        "mappings": world.mappings(),
        "apps": {
            app: {
                "identity": (world.app(app).get("identity") or {}).get("type", "None"),
                "settings": world.settings(app),
                "connections": world.connections(app),
            }
            for app in apps
        },
    }


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failed_create_says_what_failed_and_undoes_everything(
    world: World, blank_app: str, case: str
) -> None:
    args, phrases = FAILURES[case]
    before = state(world, blank_app, "web")
    # connect() passes --database DB first; a later --database wins.
    done = world.connect(blank_app, "--system-identity", *args, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in flat(done.stderr), (phrase, done.stderr)
    # The app had no identity: the one the create enabled is disabled again.
    assert "disabled the system-assigned identity again" in flat(done.stderr)
    assert state(world, blank_app, "web") == before
    assert "legacy" in world.roles()


def test_a_failed_create_never_touches_a_role_it_did_not_make(world: World) -> None:
    """A second connection of the same identity naming its existing role (--role), failing
    after the grants: the undo must not DROP OWNED that role (web's table and grants)."""
    done = world.connect(
        "web", "--system-identity", "--connection", "again", "--role", "aad_postgres_web",
        "--customized-keys", "NOPE=X", check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "NOPE" in flat(done.stderr)
    assert world.sql("SELECT count(*) FROM web_notes") == [(2,)]
    assert world.mappings()["aad_postgres_web"] == world.web["identity"]["principalId"]
    assert world.validate("web", "postgres_web")[1]["valid"] is True
    assert world.connections("web") == ["postgres_web", "reports"]


# --------------------------------------------------------------------------- 7. bad input


BAD_INPUT = {
    "unknown server": (
        "web", ["--server", "nosuchserver", "--system-identity"], "nosuchserver",
    ),
    "unknown app": ("nosuchapp", ["--system-identity"], "nosuchapp"),
    "two identity options": (
        "web", ["--system-identity", "--service-principal", "client-id=x"], "choose one of",
    ),
    "no identity option": ("web", [], "choose one of"),
    "bad --user-identity": ("web", ["--user-identity", "clientid=abc"], "client-id=<client ID>"),
    "bare --user-identity": ("web", ["--user-identity", "abc"], "client-id=<client ID>"),
    "bad --service-principal": ("web", ["--service-principal", "abc"], "client-id=<client ID>"),
    "unknown user-assigned identity": (
        "web", ["--user-identity", "client-id=00000000-0000-0000-0000-000000000001"],
        "no user-assigned identity with client ID",
    ),
    "bad client type": ("web", ["--system-identity", "--client-type", "cobol"], "--client-type"),
    "bad connection name": (
        "web", ["--system-identity", "--connection", "bad-name!"], "is not valid",
    ),
    "bad customized key": (
        "web", ["--system-identity", "--customized-keys", "NOEQUALS"], "DEFAULT_KEY=NEW_KEY",
    ),
    "connection name taken": (
        "web", ["--system-identity", "--connection", "reports"], "already has a connection",
    ),
}  # fmt: skip


def test_bad_input_gets_a_clear_error_and_changes_nothing(world: World) -> None:
    before = state(world, "web", "blank")
    for case, (app, args, phrase) in BAD_INPUT.items():
        # A fresh connection name (a later --connection wins), so each case meets its own error.
        done = world.connect(app, "--connection", "probe", *args, check=False)
        assert done.returncode != 0, case
        assert phrase in flat(done.stderr), (case, done.stderr)
        assert "Traceback" not in done.stderr, case
    assert state(world, "web", "blank") == before


# ------------------------------------------------------------------------------ 5. delete


def test_delete_reverts_everything_and_reassigns_owned_tables(world: World) -> None:
    role = "aad_postgres_worker"
    keys = set(world.configuration("worker", "postgres_worker"))
    (db_owner,) = world.sql(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", DB
    )
    world.cli(
        "app", "connection", "delete", "-g", GROUP, "-n", "worker",
        "--connection", "postgres_worker", "--owned-objects", "reassign",
    )  # fmt: skip
    assert role not in world.roles()
    assert role not in world.mappings()
    assert not keys & set(world.settings("worker"))
    assert world.connections("worker") == []
    # The table the service principal made survives, now the database owner's.
    assert world.sql("SELECT tableowner FROM pg_tables WHERE tablename = 'worker_jobs'") == [
        db_owner
    ]
    assert world.sql("SELECT count(*) FROM worker_jobs") == [(2,)]


def test_delete_with_owned_objects_drop_drops_the_roles_tables(world: World) -> None:
    world.cli(
        "app", "connection", "delete", "-g", GROUP, "-n", "web", "--connection", "reports",
        "--owned-objects", "drop",
    )  # fmt: skip
    assert "aad_reports" not in world.roles()
    assert "aad_reports" not in world.mappings()
    assert world.sql("SELECT 1 FROM pg_tables WHERE tablename = 'reports_t'") == []
    assert set(world.settings("web")) == {"AZURE_POSTGRESQL_CONNECTIONSTRING"}
    assert world.connections("web") == ["postgres_web"]


# --------------------------------------------------------------- 4b. identity removed


@pytest.mark.parametrize(
    ("app", "remove", "problem"),
    [
        ("web", [], "no longer exists in the directory"),  # it was deleted
        ("api", ["--identities", "api-id"], "no longer assigned to the app"),
    ],
)
def test_validate_pinpoints_a_removed_identity(
    world: World, app: str, remove: list[str], problem: str
) -> None:
    connection = f"postgres_{app}"
    world.cli("app", "identity", "remove", "-g", GROUP, "-n", app, *remove)
    code, result = world.validate(app, connection)
    checks = {c["name"]: c for c in result["checks"]}
    assert (code, result["valid"]) == (1, False)
    assert [checks[n]["result"] for n in CHECKS] == ["pass", "fail"] + ["skipped"] * 4
    assert problem in checks["identity"]["detail"]
    assert checks["identity"]["fix"]
    # The connection can still be deleted, and leaves nothing behind.
    world.cli("app", "connection", "delete", "-g", GROUP, "-n", app, "--connection", connection)
    assert role_of(connection) not in world.roles()
    assert role_of(connection) not in world.mappings()
    assert world.settings(app) == {}
    assert world.connections(app) == []


# ------------------------------------------------------------- 7b. no token in any output


def test_no_token_or_secret_in_any_cli_output(world: World) -> None:
    held = [*world.secrets, admin_token(world.server)]
    assert len(world.outputs) > 100
    for secret in held:
        assert not any(secret in out for out in world.outputs), "a held credential was printed"
