"""Printing results: JSON by default (as `az`), a Rich table with `--output table`."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

_err = Console(stderr=True, highlight=False)


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


def iso_time(value: Any) -> Any:
    """Epoch seconds as az prints times (`2026-01-02T03:04:05.123456+00:00`, fixed width so
    they sort as text); anything else unchanged (None, or a time already in ISO 8601)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def iso_times(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """The rows with their time fields (`keys`) in ISO 8601."""
    return [{k: iso_time(v) if k in keys else v for k, v in row.items()} for row in rows]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def note(message: str) -> None:
    _err.print(message)


def fail(message: str, code: int = 1) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", markup=True)
    raise SystemExit(code)
