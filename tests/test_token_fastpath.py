"""The token endpoint's dispatcher in front of Starlette (`keyless.server.fastpath`) takes only
`POST /{tenant}/oauth2/v2.0/token` on the server's own host name; everything else near it is
answered by the router exactly as before: other methods, a trailing slash, an empty tenant,
and a vault's host name.

Real parts: a `keyless serve` subprocess over HTTPS, tokens checked with PyJWT against the
server's JWKS, the audit log read with the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from keyless.server.fastpath import _token_path_tenant
from tests.support.server import KeylessServer, running_server

SCOPE = "api://keyless/management/.default"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeylessServer, Any]]:
    with running_server(tmp_path_factory.mktemp("fastpath") / "data") as server:
        sp = server.cli_json("ad", "sp", "create-for-rbac", "--name", "fastpath", "--secret")
        yield server, sp


def _form(sp: Any) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": sp["appId"],
        "client_secret": sp["password"],
        "scope": SCOPE,
    }


def test_token_path_parsing() -> None:
    assert _token_path_tenant("/contoso/oauth2/v2.0/token") == "contoso"
    for path in (
        "/contoso/oauth2/v2.0/token/",
        "//oauth2/v2.0/token",
        "/a/b/oauth2/v2.0/token",
        "/contoso/oauth2/token",
        "/contoso/oauth2/v2.0/tokens",
        "contoso/oauth2/v2.0/token",
    ):
        assert _token_path_tenant(path) is None, path


def test_token_is_issued_and_audited(world: tuple[KeylessServer, Any]) -> None:
    server, sp = world
    with server.http() as http:
        response = http.post(server.token_url(), data=_form(sp))
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        token = response.json()["access_token"]
        keys = http.get(f"/{server.tenant_id}/discovery/v2.0/keys").json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="api://keyless/management",
    )
    assert claims["appid"] == sp["appId"]
    issued = server.audit(action="token.issue")
    assert any((r.get("details") or {}).get("tokenId") == claims["jti"] for r in issued)


def test_other_methods_are_the_routers(world: tuple[KeylessServer, Any]) -> None:
    server, _ = world
    with server.http() as http:
        response = http.get(server.token_url())
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_a_trailing_slash_is_the_routers(world: tuple[KeylessServer, Any]) -> None:
    server, sp = world
    with server.http() as http:
        response = http.post(server.token_url() + "/", data=_form(sp))
    # Starlette redirects to the path without the slash (307 keeps the method and body).
    assert response.status_code == 307
    assert response.headers["location"].endswith(f"/{server.tenant_id}/oauth2/v2.0/token")
    assert "access_token" not in response.text


def test_an_empty_tenant_is_not_found(world: tuple[KeylessServer, Any]) -> None:
    server, sp = world
    with server.http() as http:
        response = http.post("//oauth2/v2.0/token", data=_form(sp))
    assert response.status_code == 404
    assert "access_token" not in response.text


def test_a_vault_host_goes_to_the_vault(world: tuple[KeylessServer, Any]) -> None:
    """On `{vault}.vault.{host}`, the token path is the vault's (which has no such route)."""
    server, sp = world
    with server.http() as http:
        response = http.post(
            f"/{server.tenant_id}/oauth2/v2.0/token",
            data=_form(sp),
            headers={"Host": f"somevault.vault.localhost:{server.port}"},
        )
    assert response.status_code != 200
    assert "access_token" not in response.text
    assert isinstance(response.json()["error"], dict)  # Key Vault's error shape, not OAuth's


def test_a_malformed_request_is_refused_as_before(world: tuple[KeylessServer, Any]) -> None:
    server, _ = world
    with server.http() as http:
        response = http.post(
            server.token_url(),
            content=b"grant_type=client_credentials",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
