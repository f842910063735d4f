"""`keyless group`: resource groups, in the shape of `az group`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from keyless.cli import cleanup
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import fail, note, show
from keyless.cli.resources.arm import AUTHZ, group_path, is_within, scope_key, subscription_of
from keyless.cli.resources.az import (
    AzCommand,
    NameOption,
    SubscriptionOption,
    TagsOption,
    parse_tags,
)
from keyless.cli.resources.kind import delete_with_cleanup

group_app = typer.Typer(help="Resource groups.", no_args_is_help=True)

COLUMNS = ["name", "location", "id"]


@group_app.command("create", cls=AzCommand)
def group_create(
    name: NameOption,
    location: Annotated[
        str | None, typer.Option("--location", "-l", help="Location \\[default: local].")
    ] = None,
    tags: TagsOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create a resource group, or update its tags if it exists."""
    body: dict[str, Any] = {"tags": parse_tags(tags) or {}}
    if location is not None:
        body["location"] = location
    sub = subscription_of(data_dir, subscription)
    show(call(data_dir, "PUT", group_path(sub, name), body), output, COLUMNS)


@group_app.command("list")
def group_list(
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Resource groups in the subscription that you may read."""
    sub = subscription_of(data_dir, subscription)
    groups = call(data_dir, "GET", f"/subscriptions/{sub}/resourceGroups")["value"]
    show(groups, output, COLUMNS)


@group_app.command("show")
def group_show(
    name: NameOption,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One resource group."""
    sub = subscription_of(data_dir, subscription)
    show(call(data_dir, "GET", group_path(sub, name)), output, COLUMNS)


@group_app.command("delete")
def group_delete(
    name: NameOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete a resource group and everything in it: its resources, their identities and every
    role assignment at or below it, in one transaction."""
    sub = subscription_of(data_dir, subscription)
    path = group_path(sub, name)
    if not yes:
        _confirm(data_dir, path)
    delete_with_cleanup(data_dir, path, output)


def _confirm(data_dir: Any, path: str) -> None:
    """Say what the delete takes with it, and ask; without a terminal, refuse."""
    group = call(data_dir, "GET", path)
    resources = call(data_dir, "GET", f"{path}/resources")["value"]
    key = scope_key(group["id"])
    assignments = [
        a
        for a in call(data_dir, "GET", f"{path}{AUTHZ}/roleAssignments")["value"]
        if is_within(key, scope_key(a["properties"]["scope"]))
    ]
    lines = [f"The resource group {group['name']!r} will be deleted with everything in it:"]
    lines += [f"  {r['type']}/{r['name']}" for r in resources] or ["  (no resources)"]
    lines.append(
        f"  {len(assignments)} role assignment(s) at or below it, and every role assignment "
        "held by the identities of these resources"
    )
    lines += [f"  {line}" for line in cleanup.preview(data_dir, path)]
    note("\n".join(lines))
    if not sys.stdin.isatty():
        fail(
            "there is no terminal to confirm on, so nothing was deleted; run again with "
            "--yes to delete it"
        )
    if not typer.confirm("Are you sure you want to perform this operation?", err=True):
        fail("not confirmed; nothing was deleted")
