"""`keyless keys`, `keyless tenant` and `keyless audit`: the authority's own administration."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyless.cli.duration import parse_duration
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, iso_times
from keyless.cli.session import ApiClient, CliError

keys_app = typer.Typer(help="Signing keys: list and rotate.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenant settings.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)


def call(
    data_dir: Any,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    try:
        return ApiClient(paths_for(data_dir)).call(method, path, body, params)
    except CliError as exc:
        fail(str(exc))


@keys_app.command("list")
def keys_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """The published signing keys: next, active and retired."""
    keys = call(data_dir, "GET", "/admin/v1/signingKeys")["value"]
    emit(
        iso_times(keys, "createdAt", "activatedAt", "retiredAt", "publishedUntil"),
        output,
        ["kid", "status", "activatedAt", "retiredAt", "publishedUntil"],
    )


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDirOption = None) -> None:
    """Promote the next key now; the old one stays in JWKS until its tokens expire."""
    emit(call(data_dir, "POST", "/admin/v1/signingKeys/rotate", {}))


@tenant_app.command("show")
def tenant_show(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """The tenant's settings."""
    emit(call(data_dir, "GET", "/admin/v1/tenant"), output)


@tenant_app.command("update")
def tenant_update(
    data_dir: DataDirOption = None,
    token_lifetime: Annotated[
        str | None, typer.Option(help="Access token lifetime, e.g. 60m, 1h, 90s.")
    ] = None,
    key_rotation_interval: Annotated[
        str | None, typer.Option(help="Rotate the signing key this often, e.g. 30d.")
    ] = None,
) -> None:
    """Change token lifetime or the signing key rotation schedule."""
    body: dict[str, Any] = {}
    try:
        if token_lifetime is not None:
            body["tokenLifetimeSeconds"] = parse_duration(token_lifetime)
        if key_rotation_interval is not None:
            body["keyRotationIntervalSeconds"] = parse_duration(key_rotation_interval)
    except ValueError as exc:
        fail(str(exc))
    if not body:
        fail("nothing to change; pass --token-lifetime or --key-rotation-interval")
    emit(call(data_dir, "PATCH", "/admin/v1/tenant", body))


@audit_app.command("list")
def audit_list(
    data_dir: DataDirOption = None,
    action: Annotated[str | None, typer.Option(help="e.g. token.issue, directory.*")] = None,
    actor: Annotated[str | None, typer.Option(help="Object or client ID.")] = None,
    result: Annotated[str | None, typer.Option(help="granted, denied, invalid_client...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    output: OutputOption = "json",
) -> None:
    """Recent audit records, newest first."""
    params = {
        k: v
        for k, v in {"action": action, "actor": actor, "result": result, "limit": limit}.items()
        if v is not None
    }
    emit(
        iso_times(call(data_dir, "GET", "/admin/v1/audit", params=params)["value"], "at"),
        output,
        ["at", "actor", "action", "target", "result"],
    )
