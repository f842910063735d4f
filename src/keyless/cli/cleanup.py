"""What deleting a resource must undo outside Keyless's store, before the resource goes.

A connection made a database role, its grants and its mapping; the server deleting an app or a
group removes the records but cannot log in to PostgreSQL as the user's admin role. So `group
delete` and `app delete` run the registered cleanups first, with the user's own rights, exactly
as the command that made each thing would undo it (`keyless app connection delete`).

The resource commands own this registry; the commands that make such things
(`keyless.cli.connection`) register here, so nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cleanup:
    # (data dir, ARM path of a group or an app) -> one line per thing that will be undone
    preview: Callable[[Any, str], list[str]]
    # (data dir, ARM path, say) -> one line per thing undone; raises ValueError naming what
    # failed (the things undone before it stay undone, the rest is left as it was)
    run: Callable[[Any, str, Callable[[str], None]], list[str]]


_CLEANUPS: list[Cleanup] = []


def register(cleanup: Cleanup) -> None:
    _CLEANUPS.append(cleanup)


def preview(data_dir: Any, path: str) -> list[str]:
    return [line for c in _CLEANUPS for line in c.preview(data_dir, path)]


def run(data_dir: Any, path: str, say: Callable[[str], None]) -> list[str]:
    return [line for c in _CLEANUPS for line in c.run(data_dir, path, say)]
