"""The server starts from the CLI, answers discovery over HTTPS, and signs in its admin."""

from __future__ import annotations

from tests.support.server import KeylessServer


def test_discovery_and_admin_login(keyless_server: KeylessServer) -> None:
    with keyless_server.http() as http:
        doc = http.get(f"/{keyless_server.tenant_id}/v2.0/.well-known/openid-configuration")
    assert doc.status_code == 200
    body = doc.json()
    assert body["issuer"] == f"{keyless_server.endpoint}/{keyless_server.tenant_id}/v2.0"
    assert body["token_endpoint"].startswith("https://")
    assert keyless_server.admin_token().count(".") == 2
