"""Workload identity federation on user-assigned identities: a workload outside Keyless (here,
a Kubernetes-style service-account token from a real OIDC issuer over HTTPS) exchanges its
platform token for the identity's token with the official WorkloadIdentityCredential."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.oidc_issuer import OidcIssuer, running_issuer
from tests.support.server import KeylessServer, running_server

SUBJECT = "system:serviceaccount:shop:orders"
SCOPE = "https://ossrdbms-aad.database.windows.net/.default"

_CHILD = """
import json, sys
from azure.identity import WorkloadIdentityCredential
try:
    token = WorkloadIdentityCredential().get_token(sys.argv[1])
    print(json.dumps({"token": token.token}))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
"""


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIssuer]:
    with running_issuer(tmp_path_factory.mktemp("issuer")) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, issuer: OidcIssuer) -> Iterator[KeylessServer]:
    data_dir = tmp_path_factory.mktemp("federation") / "data"
    with running_server(data_dir, extra_args=["--federation-ca", str(issuer.ca_file)]) as server:
        yield server


@pytest.fixture(scope="module")
def identity(server: KeylessServer, issuer: OidcIssuer) -> dict[str, Any]:
    group = f"wi-{uuid.uuid4().hex[:6]}"
    server.cli_json("group", "create", "-n", group)
    created = dict(server.cli_json("identity", "create", "-g", group, "-n", "orders"))
    server.cli_json(
        "identity",
        "federated-credential",
        "create",
        "-g",
        group,
        "--identity-name",
        "orders",
        "-n",
        "k8s-orders",
        "--issuer",
        issuer.issuer,
        "--subject",
        SUBJECT,
    )
    created["group"] = group
    return created


def exchange(server: KeylessServer, identity: dict[str, Any], token: str, tmp: Path) -> Any:
    token_file = tmp / f"token-{uuid.uuid4().hex[:6]}"
    token_file.write_text(token + "\n")  # as projected token files are written
    env = server.azure_env(
        AZURE_CLIENT_ID=identity["clientId"], AZURE_FEDERATED_TOKEN_FILE=str(token_file)
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, SCOPE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return json.loads(child.stdout)


def test_federated_credentials_are_listed_on_the_identity(
    server: KeylessServer, identity: dict[str, Any], issuer: OidcIssuer
) -> None:
    listed = server.cli_json(
        "identity",
        "federated-credential",
        "list",
        "-g",
        identity["group"],
        "--identity-name",
        "orders",
    )
    assert listed == [
        {
            "name": "k8s-orders",
            "issuer": issuer.issuer,
            "subject": SUBJECT,
            "audiences": ["api://AzureADTokenExchange"],
        }
    ]


def test_workload_identity_credential_gets_the_identity_token(
    server: KeylessServer, identity: dict[str, Any], issuer: OidcIssuer, tmp_path: Path
) -> None:
    result = exchange(server, identity, issuer.issue(SUBJECT), tmp_path)
    assert "token" in result, result
    claims = jwt.decode(result["token"], options={"verify_signature": False})
    assert claims["appid"] == identity["clientId"]
    assert claims["oid"] == identity["principalId"]
    assert claims["xms_mirid"] == identity["id"]
    assert claims["aud"] == "api://keyless/postgres"
    granted = [
        r
        for r in server.audit(action="token.issue")
        if r["actor"] == identity["clientId"] and r["result"] == "granted"
    ]
    assert granted and granted[0]["details"]["method"] == "federated"


def test_an_expired_federated_token_is_refused_clearly(
    server: KeylessServer, identity: dict[str, Any], issuer: OidcIssuer, tmp_path: Path
) -> None:
    expired = issuer.issue(SUBJECT, exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)
    result = exchange(server, identity, expired, tmp_path)
    assert "token" not in result
    assert "expired" in result["error"]


def test_another_subject_is_refused(
    server: KeylessServer, identity: dict[str, Any], issuer: OidcIssuer, tmp_path: Path
) -> None:
    result = exchange(server, identity, issuer.issue("system:serviceaccount:shop:other"), tmp_path)
    assert "federated identity credential" in result["error"]


def test_deleting_the_credential_stops_the_exchange(
    server: KeylessServer, identity: dict[str, Any], issuer: OidcIssuer, tmp_path: Path
) -> None:
    server.cli_json(
        "identity",
        "federated-credential",
        "create",
        "-g",
        identity["group"],
        "--identity-name",
        "orders",
        "-n",
        "short-lived",
        "--issuer",
        issuer.issuer,
        "--subject",
        "system:serviceaccount:shop:batch",
    )
    assert "token" in exchange(
        server, identity, issuer.issue("system:serviceaccount:shop:batch"), tmp_path
    )
    server.cli(
        "identity",
        "federated-credential",
        "delete",
        "-g",
        identity["group"],
        "--identity-name",
        "orders",
        "-n",
        "short-lived",
    )
    result = exchange(server, identity, issuer.issue("system:serviceaccount:shop:batch"), tmp_path)
    assert "federated identity credential" in result["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--issuer", "http://insecure.example", "--subject", "s"], "https"),
        (["--issuer", "https://ok.example", "--subject", ""], "subject"),
    ],
)
def test_bad_federated_credentials_are_refused(
    server: KeylessServer, identity: dict[str, Any], args: list[str], message: str
) -> None:
    result = server.cli(
        "identity",
        "federated-credential",
        "create",
        "-g",
        identity["group"],
        "--identity-name",
        "orders",
        "-n",
        "bad-one",
        *args,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    listed = server.cli_json(
        "identity",
        "federated-credential",
        "list",
        "-g",
        identity["group"],
        "--identity-name",
        "orders",
    )
    assert all(f["name"] != "bad-one" for f in listed)


def test_a_slow_issuer_holds_up_no_other_token_request(issuer: OidcIssuer, tmp_path: Path) -> None:
    """Fetching a federated issuer's keys waits on the network: while one is held back at the
    issuer, a client secret request to the same (single-worker) server still gets its token,
    and the federated request gets its own once the issuer answers."""
    data_dir = tmp_path / "data"
    with running_server(data_dir, extra_args=["--federation-ca", str(issuer.ca_file)]) as fresh:
        app = fresh.cli_json("ad", "sp", "create-for-rbac", "--name", "slow-fed", "--secret")
        fresh.cli_json(
            "ad", "app", "federated-credential", "create", "--id", app["appId"],
            "--name", "slow", "--issuer", issuer.issuer, "--subject", SUBJECT,
        )  # fmt: skip
        form = {
            "grant_type": "client_credentials",
            "client_id": app["appId"],
            "scope": SCOPE,
        }
        federated = {
            **form,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": issuer.issue(SUBJECT),
        }
        answers: list[httpx.Response] = []
        issuer.held.clear()
        issuer.gate.clear()
        try:
            with fresh.http() as http:
                waiting = threading.Thread(
                    target=lambda: answers.append(http.post(fresh.token_url(), data=federated))
                )
                waiting.start()
                assert issuer.held.wait(60), "Keyless never asked the issuer for its keys"
                with fresh.http() as other:
                    meanwhile = other.post(
                        fresh.token_url(), data={**form, "client_secret": app["password"]}
                    )
                assert meanwhile.status_code == 200, meanwhile.text
                assert not answers, "the federated request was answered before its issuer was"
                issuer.gate.set()
                waiting.join(60)
        finally:
            issuer.gate.set()
        assert len(answers) == 1 and answers[0].status_code == 200, answers
        assert "access_token" in answers[0].json()
