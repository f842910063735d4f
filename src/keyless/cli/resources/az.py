"""Options as az spells and parses them: `-g`, `-n`, `--subscription`, and list options that
take space-separated values (`--tags a=b c=d`), which click alone cannot read."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from keyless.cli.output import fail

SYSTEM = "[system]"

# Options that take several space-separated values, as az's do (`--tags a=b c=d`), with what
# the option means when it is given with no value at all (None: it needs one).
_VARIADIC: dict[str, str | None] = {
    "--tags": "",
    "--assign-identity": SYSTEM,
    "--identities": SYSTEM,
    "--ids": None,
    "--action": None,
    "--customized-keys": None,
    "--service-principal": None,
    "--user-identity": None,
    "--settings": None,
    "--setting-names": None,
}


def spread(args: list[str], variadic: dict[str, str | None]) -> list[str]:
    """`--tags a=b c=d` -> `--tags a=b --tags c=d`; a bare `--assign-identity` -> `[system]`.
    Values run up to the next word that starts with '-'."""
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out += args[i:]
            break
        name, eq, value = word.partition("=")
        i += 1
        if name not in variadic:
            out.append(word)
            continue
        values = [value] if eq else []
        while i < len(args) and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        if not values:
            default = variadic[name]
            if default is None:
                out.append(word)  # click then says that the option needs a value
                continue
            values = [default]
        for item in values:
            out += [name, item]
    return out


class AzCommand(TyperCommand):
    """A command whose list options read space-separated values, as az's do."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        names = {opt for param in self.params for opt in param.opts}
        mine = {k: v for k, v in _VARIADIC.items() if k in names}
        return super().parse_args(ctx, spread(args, mine))


SubscriptionOption = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        help="Subscription name or ID \\[default: the one you signed in to].",
        show_default=False,
    ),
]
GroupOption = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.")]
OptionalGroupOption = Annotated[
    str | None, typer.Option("--resource-group", "-g", help="Only this resource group.")
]
NameOption = Annotated[str, typer.Option("--name", "-n", help="Name.")]
LocationOption = Annotated[str | None, typer.Option("--location", "-l")]
TagsOption = Annotated[
    list[str] | None,
    typer.Option("--tags", help="Space-separated tags: name=value name2=value2."),
]


def parse_tags(values: list[str] | None) -> dict[str, str] | None:
    """`--tags` as a dict (None when the option was not given; {} for a bare `--tags`)."""
    if values is None:
        return None
    tags: dict[str, str] = {}
    for value in values:
        if value == "":
            continue
        key, eq, text = value.partition("=")
        if not key:
            fail(f"--tags {value[:100]!r} is not a tag: write name=value (space-separated)")
        tags[key] = text if eq else ""
    return tags
