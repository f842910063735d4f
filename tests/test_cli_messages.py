"""CLI messages reach the terminal as written: never wrapped (a wrap inside a printed command
breaks it when copied) and never read as Rich markup (`[system]` is an argument, not a style)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from keyless.cli.output import fail, note
note("assign it (`keyless app identity assign -g shop -n web --identities [system]`) " * 3)
fail("or name another (`keyless app create -g shop -n web --key-vault-reference-identity "
     "[system]`)")
"""


def test_notes_and_errors_are_neither_wrapped_nor_read_as_markup() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].count("--identities [system]`") == 3
    assert lines[1] == (
        "error: or name another (`keyless app create -g shop -n web "
        "--key-vault-reference-identity [system]`)"
    )
