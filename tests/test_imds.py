"""`keyless app serve-imds`: a host's identity served to every local process at the IMDS path,
used by azure-identity's ManagedIdentityCredential through AZURE_POD_IDENTITY_AUTHORITY_HOST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import jwt

from tests.support.server import KEYLESS, KeylessServer, free_port

_CHILD = """
import json, sys
from azure.identity import ManagedIdentityCredential
token = ManagedIdentityCredential().get_token(sys.argv[1])
print(json.dumps({"token": token.token}))
"""


def test_imds_endpoint_serves_the_app_identity_to_local_processes(
    keyless_server: KeylessServer,
) -> None:
    server = keyless_server
    group = f"imds-{uuid.uuid4().hex[:6]}"
    server.cli_json("group", "create", "-n", group)
    app = server.cli_json("app", "create", "-g", group, "-n", "vm", "--assign-identity")
    port = free_port()
    host = subprocess.Popen(
        [*KEYLESS, "app", "serve-imds", "-g", group, "-n", "vm", "--port", str(port)],
        env=server.env(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/metadata/identity/oauth2/token"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                probe = httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert host.poll() is None, host.stderr.read() if host.stderr else ""
                time.sleep(0.1)
        # Without Metadata: true (an SSRF-style request) there is an answer but no token.
        assert probe.status_code == 400 and "Metadata: true" in probe.json()["message"]
        env = {**os.environ, "AZURE_POD_IDENTITY_AUTHORITY_HOST": base, "NO_PROXY": "127.0.0.1"}
        env.pop("IDENTITY_ENDPOINT", None)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, "api://keyless/vault/.default"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr[-2000:]
        claims = jwt.decode(json.loads(child.stdout)["token"], options={"verify_signature": False})
        assert claims["oid"] == app["identity"]["principalId"]
        assert claims["xms_mirid"].endswith(
            f"/resourceGroups/{group}/providers/Keyless.Web/apps/vm"
        )
        bad = httpx.get(
            url,
            params={"api-version": "2018-02-01", "resource": "api://nope"},
            headers={"Metadata": "true"},
        )
        assert bad.status_code == 400 and "nope" in bad.json()["message"]
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=20)
