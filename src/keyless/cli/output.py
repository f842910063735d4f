"""Printing results, as `az` prints them: `--query` (JMESPath) picks from the result, then
`--output` writes it as json (the default), jsonc, table, tsv, yaml or nothing.

Every command prints its result through `emit`, so every command renders the same way; the
two options themselves are added to every command by `keyless.cli.global_options`, which calls
`begin` with their values before the command runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import jmespath
from jmespath.exceptions import (
    IncompleteExpressionError,
    JMESPathError,
    LexerError,
    ParseError,
)
from jmespath.functions import Functions
from jmespath.parser import ParsedResult
from rich.console import Console
from rich.markup import escape

from keyless.cli.render import (
    FORMATS,
    TableRows,
    as_json,
    as_tsv,
    as_yaml,
    print_jsonc,
    table_of,
)

# Never wrapped: messages carry commands to copy, and a wrap inside one breaks it.
_err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class _Invocation:
    """What the command line asked of this run's output (one command per process)."""

    output: str | None = None
    query: ParsedResult | None = None


_invocation = _Invocation()


def begin(output: str | None, query: str | None) -> None:
    """Record the command line's --output and --query. A query that does not parse stops here,
    before the command runs, so a typo in it never leaves a write half-reported."""
    if output is not None and output.lower() not in FORMATS:
        fail(f"--output {output[:50]!r} is not a format; use one of {', '.join(FORMATS)}")
    _invocation.output = output.lower() if output is not None else None
    _invocation.query = compile_query(query) if query is not None else None


_NOTHING_DONE = (
    '\nnothing was done. JMESPath examples: --query id, --query "[].name", '
    '--query "{name:name, id:id}" (https://jmespath.org)'
)
_FUNCTIONS = frozenset(Functions().FUNCTION_TABLE)


def compile_query(expression: str) -> ParsedResult:
    """The expression, parsed; its syntax and the functions it names are checked here, so a
    typo stops the command before it does anything."""
    try:
        parsed = jmespath.compile(expression)
    except JMESPathError as exc:
        fail(escape(describe_query_error(expression, exc)))
    unknown = sorted(_function_names(dict(parsed.parsed)) - _FUNCTIONS)
    if unknown:
        fail(
            escape(
                f"--query {expression!r} calls {', '.join(f'{n}()' for n in unknown)}, which "
                f"JMESPath does not have; its functions are {', '.join(sorted(_FUNCTIONS))}"
                f"{_NOTHING_DONE}"
            )
        )
    return parsed


def _function_names(node: dict[str, Any]) -> set[str]:
    names = {str(node["value"])} if node.get("type") == "function_expression" else set()
    for child in node.get("children", []):
        if isinstance(child, dict):
            names |= _function_names(child)
    return names


def describe_query_error(expression: str, exc: JMESPathError) -> str:
    """What is wrong with the expression and where, with a caret under the place."""
    if not isinstance(exc, ParseError):
        return f"--query is empty: give a JMESPath expression, e.g. --query id{_NOTHING_DONE}"
    column = exc.lex_position if isinstance(exc.lex_position, int) else len(expression)
    if isinstance(exc, IncompleteExpressionError):
        reason = "it ends before the expression is complete"
    elif isinstance(exc, LexerError):
        reason = f"{exc.token_value!r} is not a JMESPath token (unknown or unterminated)"
    else:
        reason = str(exc.msg)
    return (
        f"--query {expression!r} is not valid JMESPath: {reason} (column {column})\n"
        f"  {expression}\n  {' ' * column}^{_NOTHING_DONE}"
    )


def emit(
    data: Any,
    output: str | None = None,
    columns: list[str] | None = None,
    table: TableRows | None = None,
) -> None:
    """Print a command's result. `columns` and `table` shape `-o table` only (as az's table
    transformers do), and only when no --query reshaped the result."""
    fmt = _invocation.output or (output or "json").lower()
    query = _invocation.query
    if query is not None:
        try:
            data = query.search(data)
        except JMESPathError as exc:
            fail(escape(f"the command ran, but --query could not be applied to its result: {exc}"))
        if data is None:
            return  # as az: a query that selects nothing prints nothing
        columns, table = None, None
    if fmt == "none":
        return
    if fmt == "table":
        # Piped or redirected, there is no width to fit: never cut IDs short with "…".
        console = Console() if sys.stdout.isatty() else Console(width=100_000)
        console.print(table_of(data, columns, table))
    elif fmt == "tsv":
        sys.stdout.write(as_tsv(data))
    elif fmt == "yaml":
        sys.stdout.write(as_yaml(data))
    elif fmt == "jsonc":
        print_jsonc(data, Console(highlight=False))
    else:
        sys.stdout.write(as_json(data))


def show(
    data: Any,
    output: str | None,
    columns: list[str],
    row: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """JSON as the API shapes it; for `-o table`, one flat `row` per item."""
    if row is None:
        emit(data, output, columns)
        return
    flat = row

    def rows(result: Any) -> list[dict[str, Any]]:
        return [flat(item) for item in (result if isinstance(result, list) else [result])]

    emit(data, output, columns, rows)


def iso_time(value: Any) -> Any:
    """Epoch seconds as az prints times (`2026-01-02T03:04:05.123456+00:00`, fixed width so
    they sort as text); anything else unchanged (None, or a time already in ISO 8601)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def iso_times(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """The rows with their time fields (`keys`) in ISO 8601."""
    return [{k: iso_time(v) if k in keys else v for k, v in row.items()} for row in rows]


def note(message: str) -> None:
    # markup=False: a message is text, and "[system]" in it is an argument, not a style.
    _err.print(message, markup=False)


def fail(message: str, code: int = 1) -> NoReturn:
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise SystemExit(code)
