"""`keyless serve` says where it listens (address, issuer, token gateway, sign-in socket) and
logs one line per request (method, path, status, duration), never a token or secret: not the
query string, not the Authorization header, not a client_secret, client_assertion or refresh
token from the body. `--log-level warning` keeps only the banner."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.server import running_server

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (GET|POST|PUT|PATCH|DELETE) /\S* \d{3} [\d.]+ms$"
)


def test_serve_prints_where_it_listens_and_logs_requests_without_secrets(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server:
        sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", "logged", "--secret")
        secret, app_id = sp["password"], sp["appId"]
        management = server.admin_token()
        assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJub3QtcmVhbCJ9.c2lnbmF0dXJlLW5vdC1yZWFs"
        with server.http() as http:
            granted = http.post(
                server.token_url(),
                data={
                    "grant_type": "client_credentials",
                    "client_id": app_id,
                    "client_secret": secret,
                    "scope": "api://keyless/postgres/.default",
                },
            )
            assert granted.status_code == 200
            issued = granted.json()["access_token"]
            refused = http.post(
                f"{server.token_url()}?client_secret=in-the-query-{secret[:6]}",
                data={
                    "grant_type": "client_credentials",
                    "client_id": app_id,
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    ),
                    "client_assertion": assertion,
                    "scope": "api://keyless/postgres/.default",
                },
            )
            assert refused.status_code in (400, 401)
            listed = http.get(
                f"/subscriptions?access_token={issued}",
                headers={"Authorization": f"Bearer {management}"},
            )
            assert listed.status_code == 200
    log = server.log_path.read_text()

    assert f"listening on https://127.0.0.1:{server.port}" in log
    assert f"issuer:          {server.endpoint}/{server.tenant_id}/v2.0" in log
    assert f"token gateway:   ldap://127.0.0.1:{server.gateway_port}" in log
    requests = [line for line in log.splitlines() if LINE.match(line)]
    token_path = f"/{server.tenant_id}/oauth2/v2.0/token"
    assert any(f"POST {token_path} 200 " in line for line in requests), log[-3000:]
    assert any(f"POST {token_path} 40" in line for line in requests), log[-3000:]
    assert any(" GET /subscriptions 200 " in line for line in requests), log[-3000:]
    for value in (secret, secret[:12], assertion, issued, management, "in-the-query", "Bearer"):
        assert value not in log


def test_log_level_warning_keeps_the_banner_and_drops_request_lines(tmp_path: Path) -> None:
    quiet = running_server(tmp_path / "data", extra_args=["--log-level", "warning"])
    with quiet as server, server.http() as http:
        assert http.get("/healthz").status_code == 200
    log = server.log_path.read_text()
    assert "listening on https://" in log
    assert not [line for line in log.splitlines() if LINE.match(line)]
