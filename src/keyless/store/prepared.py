"""Fixed statements compiled once for the store's dialect and run on the driver's own cursor.

For the statements of every request on a hot path (a vault secret read, its audit record):
SQLAlchemy's execution machinery (cache key, execution context, result objects) costs several
times what SQLite takes to answer an indexed query or insert a row. The statements are still
written with SQLAlchemy Core against the models and compiled by the dialect in use (so they
read the same on SQLite and PostgreSQL), and values go through their types' own bind and
result processors (JSON to and from text, SQLite's integers to booleans), as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Select, Table, bindparam, insert


class PreparedSelect:
    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        self._dialect = dialect
        self._types = [column.type.dialect_impl(dialect) for column in statement.selected_columns]
        # Every bind with its compiled-in value (the literals of the statement); the caller's
        # parameters are merged over these.
        self._defaults: dict[str, Any] = dict(compiled.params)
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        # Made from the first result: some drivers' processors depend on the column's type
        # code in the cursor's description (psycopg's numeric types), as in SQLAlchemy.
        self._processors: list[tuple[int, Callable[[Any], Any]]] | None = None

    def first(self, dbapi_connection: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, converted, or None. The whole result is fetched and the cursor
        closed, so no statement stays open (an open SQLite read would hold its snapshot)."""
        merged = {**self._defaults, **params}
        args: Any = merged if self._order is None else tuple(merged[k] for k in self._order)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self._sql, args)
            rows = cursor.fetchall()
            processors = self._processors
            if processors is None:
                processors = self._processors = self._result_processors(cursor.description)
        finally:
            cursor.close()
        if not rows:
            return None
        row = list(rows[0])
        for i, process in processors:
            if row[i] is not None:
                row[i] = process(row[i])
        return tuple(row)

    def _result_processors(
        self, description: Sequence[Sequence[Any]]
    ) -> list[tuple[int, Callable[[Any], Any]]]:
        out: list[tuple[int, Callable[[Any], Any]]] = []
        for i, (kind, column) in enumerate(zip(self._types, description, strict=True)):
            process = kind.result_processor(self._dialect, column[1])
            if process is not None:
                out.append((i, process))
        return out


class PreparedInsert:
    """A fixed INSERT of the given columns, compiled once for the store's dialect, for many
    rows at once on the driver's cursor inside the caller's transaction. Values go through
    their columns' bind processors (JSON to text, or to psycopg's JSON wrapper), as
    SQLAlchemy would."""

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect) -> None:
        compiled = (
            insert(table)
            .values({name: bindparam(name) for name in columns})
            .compile(dialect=dialect)
        )
        self._sql = compiled.string
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        self._columns = list(columns)
        self._processors = [
            (name, p)
            for name in columns
            if (p := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def execute_many(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        params: list[Any] = []
        for row in rows:
            values = {name: row[name] for name in self._columns}
            for name, process in self._processors:
                values[name] = process(values[name])
            params.append(values if self._order is None else tuple(values[n] for n in self._order))
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self._sql, params)
        finally:
            cursor.close()
