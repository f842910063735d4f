"""The event loop Keyless's servers run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop, as uvicorn's own runner picks for multi-worker servers; asyncio's loop where
    uvloop is not installed (it is optional in uvicorn[standard] on some systems)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run` on the loop above."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)
