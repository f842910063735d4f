"""`keyless ad sp update --set accountEnabled=...` and `keyless ad user update --account-enabled
...`: disable an account (no token; its tokens refused at Keyless's resources) or enable it again,
as `az ad sp update` and `az ad user update` do."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from keyless.cli import ad
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import emit, fail

_BOOLEANS = {"true": True, "false": False}


def _boolean(value: str, what: str) -> bool:
    parsed = _BOOLEANS.get(value.strip().lower())
    if parsed is None:
        fail(f"{what} must be true or false, not {value[:40]!r}")
    return parsed


@ad.sp_app.command("update")
def sp_update(
    id: Annotated[str, typer.Option("--id", help="appId, object ID or display name.")],
    set_: Annotated[
        list[str],
        typer.Option("--set", help="accountEnabled=true|false (the one property updated here)."),
    ],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Disable a service principal (no token; the tokens it holds are refused at once by
    Keyless's resources) or enable it again; everything it has is kept."""
    enabled: bool | None = None
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or key.strip() != "accountEnabled":
            fail(f"--set {item[:60]!r}: only accountEnabled=true|false can be set")
        enabled = _boolean(value, "accountEnabled")
    assert enabled is not None  # typer requires at least one --set
    emit(call(data_dir, "PATCH", f"{ad.SP}/{id}", {"accountEnabled": enabled}), output)


@ad.user_app.command("update")
def user_update(
    user: Annotated[str, typer.Option("--id", help="The user's UPN or object ID.")],
    account_enabled: Annotated[
        str, typer.Option("--account-enabled", help="true to enable, false to disable.")
    ],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Disable a user (no sign-in, no token; the tokens they hold are refused at once by
    Keyless's resources) or enable them again."""
    if not user.strip() or "/" in user or user.strip(".") == "":
        fail(f"--id {user[:100]!r} is not a UPN or object ID")
    enabled = _boolean(account_enabled, "--account-enabled")
    path = f"/admin/v1/users/{quote(user, safe='@')}"
    emit(call(data_dir, "PATCH", path, {"accountEnabled": enabled}), output)
