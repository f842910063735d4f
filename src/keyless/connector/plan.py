"""An operation of several steps that is undone as a whole when a step fails.

Each step that changes something registers how to take the change back; on failure the
registered undos run newest first, and the error says which step failed and what was undone
(or, if an undo itself failed, what is left for the user to clean up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from keyless.base.errors import KeylessError

T = TypeVar("T")


class StepFailed(KeylessError, RuntimeError):
    """A step failed and everything before it was undone (or the message lists what was not)."""

    def __init__(self, step: str, cause: str, undone: list[str], left: list[str]) -> None:
        lines = [f"{step} failed: {cause}"]
        if undone:
            lines.append("undone: " + "; ".join(undone))
        if left:
            lines.append("NOT undone (clean up by hand): " + "; ".join(left))
        if not undone and not left:
            lines.append("nothing had been changed")
        super().__init__("\n".join(lines))
        self.step, self.cause, self.undone, self.left = step, cause, undone, left


@dataclass
class Plan:
    say: Callable[[str], None] = lambda _line: None
    _undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def step(self, description: str, action: Callable[[], T]) -> T:
        """Run `action`; on any failure undo what is registered and raise StepFailed."""
        try:
            result = action()
        except Exception as exc:  # every failure must reach the rollback
            undone, left = self.rollback()
            raise StepFailed(description, str(exc) or type(exc).__name__, undone, left) from None
        self.done.append(description)
        self.say(f"done: {description}")
        return result

    def on_undo(self, description: str, undo: Callable[[], object]) -> None:
        self._undo.append((description, undo))

    def rollback(self) -> tuple[list[str], list[str]]:
        undone: list[str] = []
        left: list[str] = []
        while self._undo:
            description, undo = self._undo.pop()
            try:
                undo()
                undone.append(description)
            except Exception as exc:  # keep undoing the rest; report this one
                left.append(f"{description} ({exc})")
        return undone, left
