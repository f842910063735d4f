"""Every `keyless ...` command that an error message or hint in src/ prints must run as printed:
the command path exists, every option is known, every required option is there. Each is parsed
by the real CLI's parser (click's `make_context`, which checks all of that without running the
command), with each value the message fills in at run time (`{name}`) standing for a value."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer import Exit

from keyless.cli.main import app

try:  # typer >= 0.29 carries its own click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

SRC = Path(__file__).resolve().parents[1] / "src" / "keyless"
COMMAND = re.compile(r"`(keyless [^`]+)`")
FILLED = "filled-in"
# f-string expressions that stand for several words, with a value of the shape they take.
SAMPLES = {
    "self._app_args": "-g shop -n web",
    "at": "--vault-name shop-vault --name stripe-key",
    "app_args": "-g shop -n web",
    "port + 1": "8390",
}


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each {expression} as FILLED."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value
            if isinstance(part, ast.Constant)
            else SAMPLES.get(ast.unparse(part.value), FILLED)  # type: ignore[attr-defined]
            for part in node.values
        )
    return None


def printed_commands() -> list[tuple[str, str]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
        }  # what the code says about itself; not printed to users
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            text = _text(node)
            if text is None:
                continue
            for match in COMMAND.finditer(text):
                where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"
                if (where, match.group(1)) not in found:
                    found.append((where, match.group(1)))
    return found


COMMANDS = printed_commands()


def test_there_are_printed_commands_to_check() -> None:
    assert len(COMMANDS) > 20


ROOT_COMMAND: Any = typer.main.get_command(app)


def _parse(command: str) -> None:
    """Raise UsageError unless `command` parses: a command (not a group), its options known and
    its required ones present. Nothing runs."""
    words = shlex.split(command.replace("...", ""))[1:]
    node = ROOT_COMMAND
    ctx = node.make_context("keyless", [], resilient_parsing=True)
    while hasattr(node, "commands") and words and not words[0].startswith("-"):
        sub = node.get_command(ctx, words[0])
        if sub is None:
            raise UsageError(f"no command {words[0]!r} in `{ctx.command_path}`")
        node, words = sub, words[1:]
        ctx = node.make_context(sub.name, [], parent=ctx, resilient_parsing=True)
    if not words:
        return  # a command named in prose ("started by `keyless app run`"), not a command line
    runnable = getattr(node, "invoke_without_command", False)
    if hasattr(node, "commands") and not runnable and "--help" not in words:
        raise UsageError(f"`{ctx.command_path}` is a group: it needs a command")
    node.make_context(node.name, list(words), parent=ctx.parent)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_printed_command_parses(where: str, command: str) -> None:
    try:
        _parse(command)
    except Exit:
        pass  # --help
    except UsageError as exc:
        pytest.fail(f"{where}: `{command}` does not run as printed: {exc.format_message()}")
