"""Developer sign-in from the CLI: `keyless login` (over the local socket, or with a device code
from another machine), `keyless login approve`, `keyless logout`,
`keyless account get-access-token` and `keyless ad user revoke-sessions`."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import jwt
import typer

from keyless.cli import ad
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, note
from keyless.cli.resources import account_app
from keyless.cli.session import (
    CLI_APP_ID,
    DEVICE_CODE_GRANT,
    MANAGEMENT,
    CliError,
    endpoint_for,
    forget_token,
    http_client,
    local_login,
    oauth_error,
    read_record,
    resource_token,
    revoke_sign_in,
    save_token,
    signed_in,
    state_dir,
)

login_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$")
_MAX_WAIT_S = 3600  # never poll longer than this, whatever expires_in says


def _say(message: str) -> None:
    """To stderr, unwrapped and unstyled: scripts (and tests) read the code from it."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _account(token: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "cloudName": "Keyless",
            "homeTenantId": token["tenant"],
            "tenantId": token["tenant"],
            "id": token.get("subscription"),
            "isDefault": True,
            "state": "Enabled",
            "user": token["user"],
            "endpoint": token.get("endpoint"),
        }
    ]


@login_app.callback()
def login(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant to sign in to.")] = None,
    use_device_code: Annotated[
        bool,
        typer.Option(
            "--use-device-code",
            help="Sign in from another machine: print a code for a signed-in user to approve "
            "with `keyless login approve CODE`.",
        ),
    ] = False,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="With --use-device-code: the Keyless server's URL \\[default: $KEYLESS_ENDPOINT].",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="With --use-device-code: the Keyless CA certificate to trust "
            "\\[default: $KEYLESS_CA_FILE, else the system's trusted CAs].",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = "json",
) -> None:
    """Sign in: as your OS user (no password), or from any machine with --use-device-code.

    Without --use-device-code, the server's local socket tells it which OS user you are.
    """
    if ctx.invoked_subcommand is not None:
        if use_device_code or endpoint or ca_file or tenant:
            fail("give sign-in options after `keyless login`, not before a subcommand")
        return
    paths = paths_for(data_dir)
    if use_device_code:
        token = _device_code_login(paths, endpoint, tenant, ca_file)
    else:
        if endpoint or ca_file:
            fail("--endpoint and --ca-file go with --use-device-code")
        try:
            token = local_login(paths, tenant)
        except CliError as exc:
            fail(str(exc))
        save_token(paths, token)
    emit(_account(token), output)


# --------------------------------------------------------------------------- device code


def _device_code_login(
    paths: Any, endpoint: str | None, tenant: str | None, ca_file: Path | None
) -> dict[str, Any]:
    endpoint = endpoint or os.environ.get("KEYLESS_ENDPOINT")
    if not endpoint and paths.config.exists():
        endpoint = endpoint_for(paths)
    if not endpoint:
        fail(
            "--endpoint is required: the Keyless server's URL, e.g. https://keyless.example:8443 "
            "(or set KEYLESS_ENDPOINT)"
        )
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        fail(
            f"--endpoint {endpoint[:200]!r} is not an https:// URL; device sign-in sends codes "
            "and tokens over TLS only"
        )
    endpoint = endpoint.rstrip("/")
    tenant = tenant or os.environ.get("AZURE_TENANT_ID")
    if not tenant:
        fail(
            "--tenant is required: your tenant's ID (`keyless tenant show` or `keyless env` "
            "prints it on the server; or set AZURE_TENANT_ID)"
        )
    if not _TENANT.match(tenant):
        fail(f"--tenant {tenant[:100]!r} is not a tenant ID (a GUID)")
    ca = str(ca_file) if ca_file else os.environ.get("KEYLESS_CA_FILE")
    if ca and not Path(ca).is_file():
        fail(f"the CA file {ca} does not exist")
    try:
        with http_client(endpoint, ca) as http:
            grant = _poll(http, tenant, _start(http, tenant))
            claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
            subscription = _default_subscription(http, grant["access_token"])
    except CliError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("sign-in cancelled", code=130)
    kept_ca = None
    if ca:  # keep a copy: the sign-in must not break when the original file moves
        kept_ca = state_dir(paths) / "ca.pem"
        kept_ca.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(ca, kept_ca)
        kept_ca.chmod(0o600)
    expires_on = int(grant.get("expires_on") or time.time() + int(grant["expires_in"]))
    token = {
        "accessToken": grant["access_token"],
        "expiresOn": expires_on,
        "expires_on": expires_on,
        "tokenType": "Bearer",
        "tenant": claims.get("tid", tenant),
        "subscription": subscription,
        "user": {"name": claims.get("upn"), "type": "user", "id": claims.get("oid")},
        "endpoint": endpoint,
        "clientId": CLI_APP_ID,
        "refreshToken": grant["refresh_token"],
        "signIn": "deviceCode",
        "caFile": str(kept_ca) if kept_ca else None,
        "resourceTokens": {},
    }
    save_token(paths, token)
    _say(f"Signed in as {claims.get('upn')}.")
    return token


def _post(http: httpx.Client, path: str, form: dict[str, str]) -> httpx.Response:
    try:
        return http.post(path, data=form)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the Keyless server at {http.base_url} ({type(exc).__name__}: {exc}); "
            "check --endpoint and --ca-file"
        ) from None


def _start(http: httpx.Client, tenant: str) -> dict[str, Any]:
    response = _post(
        http,
        f"/{tenant}/oauth2/v2.0/devicecode",
        {"client_id": CLI_APP_ID, "scope": f"{MANAGEMENT}/.default offline_access"},
    )
    if response.status_code != 200:
        raise CliError(f"the server refused to start a device sign-in: {oauth_error(response)[1]}")
    started: dict[str, Any] = response.json()
    _say(str(started["message"]))
    _say(f"Waiting for approval of code {started['user_code']} (Ctrl-C cancels)...")
    return started


def _poll(http: httpx.Client, tenant: str, started: dict[str, Any]) -> dict[str, Any]:
    """RFC 8628 3.4-3.5: poll at `interval`, slower after slow_down, until a final answer."""
    interval = max(1, int(started.get("interval", 5)))
    deadline = time.monotonic() + min(int(started.get("expires_in", 900)), _MAX_WAIT_S)
    form = {
        "grant_type": DEVICE_CODE_GRANT,
        "client_id": CLI_APP_ID,
        "device_code": str(started["device_code"]),
    }
    while True:
        time.sleep(interval)
        response = _post(http, f"/{tenant}/oauth2/v2.0/token", form)
        if response.status_code == 200:
            result: dict[str, Any] = response.json()
            return result
        error, description = oauth_error(response)
        if error == "authorization_pending":
            pass
        elif error == "slow_down":
            interval += 5
        elif error == "access_denied":
            raise CliError("the sign-in was denied by the user asked to approve it")
        elif error == "expired_token":
            raise CliError(
                "the code expired before anyone approved it; run `keyless login "
                "--use-device-code` again"
            )
        else:
            raise CliError(f"the sign-in failed: {description}")
        if time.monotonic() + interval > deadline:
            raise CliError(
                "the code expired before anyone approved it; run `keyless login "
                "--use-device-code` again"
            )


def _default_subscription(http: httpx.Client, token: str) -> str | None:
    """The first subscription the user may read (as `az login` picks one); None if none."""
    try:
        response = http.get("/subscriptions", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            return None
        values = response.json().get("value") or []
        return str(values[0]["subscriptionId"]) if values else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


# -------------------------------------------------------------------------------- approve


@login_app.command("approve")
def approve(
    code: Annotated[str, typer.Argument(help="The code the other machine printed: XXXX-XXXX.")],
    deny: Annotated[bool, typer.Option("--deny", help="Refuse the sign-in instead.")] = False,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Approve a device sign-in: that device is then signed in as you.

    The code comes from `keyless login --use-device-code`; approve only a code you started.
    """
    result = call(
        data_dir, "POST", "/admin/v1/deviceCodes/approve", {"userCode": code, "deny": deny}
    )
    if result["status"] == "approved":
        origin = result.get("requestedFrom") or "an unknown address"
        note(f"approved: the device that asked from {origin} is now signed in as {result['user']}")
    else:
        note("denied: that device will not be signed in")
    emit(result, output)


# --------------------------------------------------------------------------------- logout


def logout(data_dir: DataDirOption = None) -> None:
    """Sign out: revoke the sign-in session on the server and forget the cached sign-in."""
    paths = paths_for(data_dir)
    record = read_record(paths)
    if record is None:
        forget_token(paths)
        note("you were not signed in")
        return
    problem = None
    try:
        revoke_sign_in(paths, record)
    except CliError as exc:
        problem = str(exc)
    forget_token(paths)
    if problem is not None:
        user = (record.get("user") or {}).get("name") or "your user"
        fail(
            "signed out on this machine, but the session could not be revoked on the server "
            f"({problem}); an administrator can end it with `keyless ad user revoke-sessions "
            f"--id {user}`"
        )
    note("signed out")


# ----------------------------------------------------------------------- get-access-token


# az's --resource-type values for the resources Keyless has, as the names Azure's tools send.
RESOURCE_TYPES = {
    "arm": "https://management.azure.com",
    "oss-rdbms": "https://ossrdbms-aad.database.windows.net",
}
# az's other values, for a clear refusal (Keyless has no such API).
AZ_ONLY_TYPES = ("aad-graph", "batch", "data-lake", "media", "ms-graph")


def resource_for_type(resource_type: str) -> str:
    value = resource_type.strip().lower()
    if value in RESOURCE_TYPES:
        return RESOURCE_TYPES[value]
    why = "Keyless has no such API" if value in AZ_ONLY_TYPES else "it is not one of az's"
    fail(
        f"--resource-type {resource_type[:40]!r}: {why}; Keyless has "
        f"{', '.join(RESOURCE_TYPES)} (or give --resource: https://vault.azure.net for vaults; "
        "`keyless ad api list` shows every resource API)"
    )


@account_app.command("get-access-token")
def get_access_token(
    resource: Annotated[
        str | None,
        typer.Option(
            help="Resource to get a token for, e.g. https://ossrdbms-aad.database.windows.net "
            "\\[default: the management API].",
            show_default=False,
        ),
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(help="Scope instead of --resource, e.g. api://keyless/postgres/.default."),
    ] = None,
    resource_type: Annotated[
        str | None,
        typer.Option(
            "--resource-type",
            help="As az's: arm (the management API) or oss-rdbms (PostgreSQL).",
            show_default=False,
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="The tenant the token must be for (as `az --tenant`; tools pass it)."),
    ] = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Print an access token for a resource, in the shape `az account get-access-token` prints."""
    if resource_type is not None:
        if resource or scope:
            fail("use one of --resource, --resource-type and --scope")
        resource = resource_for_type(resource_type)
    if resource and scope:
        fail("use --resource or --scope, not both")
    if scope is not None and len(scope.split()) != 1:
        fail("give one scope, of the form {resource}/.default")
    target = scope.strip() if scope else f"{resource.rstrip('/')}/.default" if resource else None
    paths = paths_for(data_dir)
    try:
        if target is None:
            record = signed_in(paths)
            token = {"accessToken": record["accessToken"], "expires_on": record["expires_on"]}
        else:
            token, record = resource_token(paths, target)
    except CliError as exc:
        fail(str(exc))
    signed_in_tenant = str(record.get("tenant") or "")
    if tenant is not None and tenant.strip().lower() != signed_in_tenant.lower():
        # One sign-in is one tenant; a token for another needs its own sign-in.
        fail(
            f"you are signed in to tenant {signed_in_tenant}, not {tenant.strip()[:64]}; sign in "
            f"there with `keyless login --use-device-code --tenant {tenant.strip()[:64]}`"
        )
    expires_on = int(token["expires_on"])
    emit(
        {
            "accessToken": token["accessToken"],
            # az prints local time, with microseconds; expires_on is the epoch seconds.
            "expiresOn": dt.datetime.fromtimestamp(expires_on).strftime("%Y-%m-%d %H:%M:%S.%f"),
            "expires_on": expires_on,
            "subscription": record.get("subscription"),
            "tenant": record.get("tenant"),
            "tokenType": "Bearer",
        },
        output,
    )


# ---------------------------------------------------------------------- revoke-sessions


@ad.user_app.command("revoke-sessions")
def revoke_sessions(
    user: Annotated[str, typer.Option("--id", help="The user's UPN or object ID.")],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Sign a user out everywhere: every refresh token of theirs stops working.

    Access tokens already issued are refused at once by Keyless's own resources; other
    services accept them until they expire (the tenant's token lifetime).
    """
    if not user.strip() or "/" in user or user.strip(".") == "":
        fail(f"--id {user[:100]!r} is not a UPN or object ID")
    path = f"/admin/v1/users/{quote(user, safe='@')}/revokeSignInSessions"
    emit(call(data_dir, "POST", path, {}), output)
