"""How a command's result is written in each `--output` format, as `az` writes it.

Pure functions from data to text (the table aside, which Rich draws), so each format's rules
are tested on their own; `keyless.cli.output.emit` picks one and writes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

OutputFormat = Literal["json", "jsonc", "table", "tsv", "yaml", "none"]
FORMATS: tuple[str, ...] = ("json", "jsonc", "table", "tsv", "yaml", "none")

# A table's rows from a command's result, when the result is not already a list of flat rows
# (az calls it a table transformer).
TableRows = Callable[[Any], list[dict[str, Any]]]


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


def as_yaml(data: Any) -> str:
    import yaml  # only when asked for: every command line would pay for it otherwise

    # Keys in the order the API gives them, as the JSON output has them.
    return str(yaml.safe_dump(data, default_flow_style=False, allow_unicode=True, sort_keys=False))


def as_tsv(data: Any) -> str:
    """az's tsv: one line per list item (or one line for anything else); an object's values
    tab-separated in its field order; a nested object is an empty field, a nested list its
    length, so every line of a list has the same columns. A scalar prints bare, which is what
    makes `X=$(keyless ... --query id -o tsv)` work."""
    items = data if isinstance(data, list) else [data]
    return "".join(_tsv_line(item) + "\n" for item in items)


def _tsv_line(item: Any) -> str:
    if isinstance(item, dict):
        return "\t".join(_tsv_field(v) for v in item.values())
    if isinstance(item, list):
        return "\t".join(_tsv_field(v) for v in item)
    if isinstance(item, bool):
        return "true" if item else "false"
    return _tsv_field(item)


def _tsv_field(value: Any) -> str:
    # Inside a line az writes Python's own spellings (True, None); scripts that read tsv
    # from az expect exactly these.
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def print_jsonc(data: Any, console: Console) -> None:
    """JSON in colour on a terminal; elsewhere the same text as `json` (as az does)."""
    if not console.is_terminal:
        console.file.write(as_json(data))
        return
    from rich.json import JSON  # only when asked for, as yaml

    console.print(JSON(json.dumps(data), indent=2), soft_wrap=True)


def table_of(data: Any, columns: list[str] | None = None, rows: TableRows | None = None) -> Table:
    """The rows and columns `-o table` shows.

    With `columns`, those fields (a dotted name reaches into nested objects: `properties.host`
    shows as `host`); without, as az: the first-level fields that hold a scalar, in the order
    they first appear. A scalar result is one `Result` column."""
    items = rows(data) if rows is not None else (data if isinstance(data, list) else [data])
    if columns is None:
        columns = _scalar_fields(items)
    if not columns and items:
        table = Table("Result")
        for item in items:
            table.add_row(_cell(item))
        return table
    table = Table(*(c.rsplit(".", 1)[-1] for c in columns))
    for item in items:
        table.add_row(*(_cell(_field(item, c)) for c in columns))
    return table


def _scalar_fields(items: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if isinstance(item, dict):
            for key, value in item.items():
                if value is not None and not isinstance(value, list | dict):
                    seen.setdefault(key)
    return list(seen)


def _field(item: Any, column: str) -> Any:
    if not isinstance(item, dict):
        return None
    if column in item:
        return item[column]
    value: Any = item
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)
