"""`keyless ad signed-in-user show` (az's name) and `me` wherever a principal is named: the
way to say "myself" in a command, so printed fixes such as `--assignee me` run as printed."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import typer

from keyless.cli import ad
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail
from keyless.cli.session import CliError, signed_in_object_id

signed_in_user_app = typer.Typer(help="The signed-in user.", no_args_is_help=True)
ad.app.add_typer(signed_in_user_app, name="signed-in-user")


def signed_in_user_id(data_dir: Any) -> str:
    try:
        return signed_in_object_id(paths_for(data_dir))
    except CliError as exc:
        fail(str(exc))


@signed_in_user_app.command("show")
def show(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """The signed-in user: object ID (`id`), user principal name, display name."""
    oid = signed_in_user_id(data_dir)
    principal = call(data_dir, "GET", f"/providers/Keyless.Directory/principals/{quote(oid)}")
    emit(
        {
            "id": oid,
            "displayName": principal.get("displayName"),
            "userPrincipalName": principal.get("userPrincipalName") or principal.get("displayName"),
            "type": principal.get("type"),
        },
        output,
    )
