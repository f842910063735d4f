"""The commands every resource type in a resource group has in the same shape (`list`, `show`,
`delete`, and `create` where it takes only a location and tags), generated from one
description of the type so that they cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from keyless.cli import cleanup
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption
from keyless.cli.output import emit, fail, note, show
from keyless.cli.resources.arm import list_resources, resource_path, subscription_of
from keyless.cli.resources.az import (
    AzCommand,
    GroupOption,
    LocationOption,
    NameOption,
    OptionalGroupOption,
    SubscriptionOption,
    TagsOption,
    parse_tags,
)

Shape = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ResourceKind:
    """A resource type as the CLI shows it."""

    type_name: str  # the ARM type, e.g. Keyless.ManagedIdentity/userAssignedIdentities
    to_json: Shape  # the API's resource as the command prints it (as az prints it)
    columns: list[str]  # `-o table` columns
    list_help: str
    show_help: str
    delete_help: str
    row: Shape | None = None  # one flat `-o table` row, when the columns are not fields
    create_help: str | None = None  # a `create` that takes a location and tags, if any
    # Whether things outside the store may hang off it (an app's connections): its delete then
    # undoes them first, as `keyless app connection delete` does (keyless.cli.cleanup).
    cleans_up: bool = False


def add_commands(app: typer.Typer, kind: ResourceKind) -> None:
    """Add `list`, `show`, `delete` (and `create`, if the kind has one) for `kind` to `app`."""

    def render(data: Any, output: str) -> None:
        show(data, output, kind.columns, kind.row)

    if kind.create_help is not None:

        def create(
            group: GroupOption,
            name: NameOption,
            location: LocationOption = None,
            tags: TagsOption = None,
            subscription: SubscriptionOption = None,
            data_dir: DataDirOption = None,
            output: OutputOption = "json",
        ) -> None:
            sub = subscription_of(data_dir, subscription)
            body: dict[str, Any] = {"tags": parse_tags(tags) or {}}
            if location is not None:
                body["location"] = location
            created = call(data_dir, "PUT", resource_path(sub, group, kind.type_name, name), body)
            render(kind.to_json(created), output)

        app.command("create", cls=AzCommand, help=kind.create_help)(create)

    def list_(
        group: OptionalGroupOption = None,
        subscription: SubscriptionOption = None,
        data_dir: DataDirOption = None,
        output: OutputOption = "json",
    ) -> None:
        sub = subscription_of(data_dir, subscription)
        found = list_resources(data_dir, sub, group, kind.type_name)
        render([kind.to_json(r) for r in found], output)

    def show_(
        group: GroupOption,
        name: NameOption,
        subscription: SubscriptionOption = None,
        data_dir: DataDirOption = None,
        output: OutputOption = "json",
    ) -> None:
        sub = subscription_of(data_dir, subscription)
        found = call(data_dir, "GET", resource_path(sub, group, kind.type_name, name))
        render(kind.to_json(found), output)

    def delete(
        group: GroupOption,
        name: NameOption,
        subscription: SubscriptionOption = None,
        data_dir: DataDirOption = None,
        output: OutputOption = "json",
    ) -> None:
        sub = subscription_of(data_dir, subscription)
        path = resource_path(sub, group, kind.type_name, name)
        if kind.cleans_up:
            delete_with_cleanup(data_dir, path, output)
        else:
            emit(call(data_dir, "DELETE", path), output)

    app.command("list", help=kind.list_help)(list_)
    app.command("show", help=kind.show_help)(show_)
    app.command("delete", help=kind.delete_help)(delete)


def delete_with_cleanup(data_dir: Any, path: str, output: str) -> None:
    """Undo what lives outside the store (a connection's database role...), then delete; the
    answer says both. A failed cleanup deletes nothing more."""
    try:
        undone = cleanup.run(data_dir, path, note)
    except ValueError as exc:
        fail(f"{exc}; nothing else was deleted: fix it and run the delete again")
    result = call(data_dir, "DELETE", path)
    emit({**result, "reverted": undone}, output)
