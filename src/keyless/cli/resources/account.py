"""`keyless account`: your sign-in and its subscriptions, in the shape of `az account`.
(`keyless.cli.signin` adds `get-access-token`.)"""

from __future__ import annotations

import typer

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import emit
from keyless.cli.resources.arm import token_of

account_app = typer.Typer(help="Your sign-in and its subscriptions.", no_args_is_help=True)


@account_app.command("show")
def account_show(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Who you are signed in as, and your default tenant and subscription."""
    token = token_of(data_dir)
    emit(
        {
            "environmentName": "Keyless",
            "id": token.get("subscription"),
            "isDefault": True,
            "state": "Enabled",
            "tenantId": token.get("tenant"),
            "homeTenantId": token.get("tenant"),
            "user": token.get("user"),
            "endpoint": token.get("endpoint"),
        },
        output,
        ["id", "tenantId", "user", "endpoint"],
    )


@account_app.command("list")
def account_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """The subscriptions you may read."""
    token = token_of(data_dir)
    subscriptions = call(data_dir, "GET", "/subscriptions")["value"]
    emit(
        [
            {
                "cloudName": "Keyless",
                "id": s["subscriptionId"],
                "name": s["displayName"],
                "isDefault": s["subscriptionId"] == token.get("subscription"),
                "state": s["state"],
                "tenantId": s["tenantId"],
                "homeTenantId": s["tenantId"],
                "user": token.get("user"),
            }
            for s in subscriptions
        ],
        output,
        ["name", "id", "isDefault", "state", "tenantId"],
    )
