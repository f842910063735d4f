"""A fixed SELECT compiled once for the store's dialect and run on the driver's own cursor.

For the reads made on every request of a hot path (a vault secret read): SQLAlchemy's
execution machinery (cache key, execution context, result objects) costs several times what
SQLite takes to answer an indexed query. The statement is still written with SQLAlchemy Core
against the models, compiled by the dialect in use (so it reads the same on SQLite and
PostgreSQL), and its columns are converted by their types' own result processors (JSON text
to objects, SQLite's integers to booleans), as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect, Select


class PreparedSelect:
    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        # Every bind with its compiled-in value (the literals of the statement); the caller's
        # parameters are merged over these.
        self._defaults: dict[str, Any] = dict(compiled.params)
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        processors: list[Callable[[Any], Any] | None] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]
        self._processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def first(self, dbapi_connection: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, converted, or None. The whole result is fetched and the cursor
        closed, so no statement stays open (an open SQLite read would hold its snapshot)."""
        merged = {**self._defaults, **params}
        args: Any = merged if self._order is None else tuple(merged[k] for k in self._order)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self._sql, args)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if not rows:
            return None
        row = list(rows[0])
        for i, process in self._processors:
            if row[i] is not None:
                row[i] = process(row[i])
        return tuple(row)
