"""Printing results: JSON by default (as `az`), a Rich table with `--output table`."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Never wrapped: messages carry commands to copy, and a wrap inside one breaks it.
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit(data: Any, output: str = "json", columns: list[str] | None = None) -> None:
    if output == "table":
        rows = data if isinstance(data, list) else [data]
        keys = columns or (list(rows[0].keys()) if rows and isinstance(rows[0], dict) else [])
        table = Table(*keys)
        for row in rows:
            table.add_row(*(_cell(row.get(k)) for k in keys))
        # Piped or redirected, there is no width to fit: never cut IDs short with "…".
        (Console() if sys.stdout.isatty() else Console(width=100_000)).print(table)
        return
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def note(message: str) -> None:
    # markup=False: a message is text, and "[system]" in it is an argument, not a style.
    _err.print(message, markup=False)


def fail(message: str, code: int = 1) -> NoReturn:
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise SystemExit(code)
