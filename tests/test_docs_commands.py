"""Every ```sh block of README.md and docs/*.md runs as written, in order, against a real
server (one per document, as Azure's own docs are tested): what a reader types is what the
suite runs. Each document runs as one bash session with `set -euo pipefail` after the state the
documents assume (`eval "$(keyless env)"` and `keyless login`, as the quickstart leaves it).

The few exceptions are listed below, each with its reason: blocks that are tested elsewhere,
placeholders a reader fills in, and files the text assumes the reader has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyless.gateway.cluster import cluster_directory
from tests.support.server import KEYLESS, KeylessServer, running_server

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)

# Blocks not run here, by their first line, and why.
SKIPPED = {
    "scripts/quickstart": "tests/test_quickstart.py runs the quickstart; scripts/test is the "
    "whole suite (it would run this test again)",
}
# Placeholders a reader replaces, per document: (text, what the test puts there).
PLACEHOLDERS = {
    "README.md": [
        ("--id APP_ID", "--id \"$(keyless ad sp list | jq -r '.[] | select(.displayName == "
         "\"billing\") | .appId')\""),
    ],
}  # fmt: skip
# What a document assumes exists before its first block, and why.
ASSUMED = {
    "vault.md": [
        # "Connections with a client secret" connects to the README's PostgreSQL server.
        "keyless group create -n shop >/dev/null",
        "keyless postgres server create -g shop -n shop-pg --database orders >/dev/null",
    ],
}
# Files the text assumes the reader has in the current directory.
FILES = {
    "app.py": "import os\nprint('app ran; settings:', sorted(k for k in os.environ "
    "if k.startswith(('AZURE_', 'LOG_', 'STRIPE_'))))\n",
    "stripe-key.txt": "sk_test_not_a_real_key_4242",
}


@dataclass
class Block:
    document: Path
    line: int
    text: str


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    return [
        Block(document, text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in BLOCK.finditer(text)
    ]


RUN = [d for d in DOCUMENTS if blocks(d)]


def test_the_exceptions_still_match_something() -> None:
    """A stale exception would hide a block from the runner, or test nothing."""
    firsts = [b.text.splitlines()[0] for d in RUN for b in blocks(d)]
    for start in SKIPPED:
        assert any(f.startswith(start) for f in firsts), start
    for name, pairs in PLACEHOLDERS.items():
        text = "".join(b.text for d in RUN if d.name == name for b in blocks(d))
        for placeholder, _ in pairs:
            assert placeholder in text, (name, placeholder)


def _script(document: Path, server: KeylessServer) -> str:
    lines = ["set -euo pipefail", 'eval "$(keyless env)"', "keyless login >/dev/null"]
    lines += ASSUMED.get(document.name, [])
    for block in blocks(document):
        where = f"{document.relative_to(ROOT)}:{block.line}"
        first = block.text.splitlines()[0]
        if any(first.startswith(start) for start in SKIPPED):
            continue
        text = block.text.replace("localhost:8443", f"localhost:{server.port}")
        for placeholder, value in PLACEHOLDERS.get(document.name, []):
            text = text.replace(placeholder, value)
        lines += [f"echo '### {where}' >&2", text]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("document", RUN, ids=[d.name for d in RUN])
def test_every_command_block_runs_as_written(document: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name, content in FILES.items():
        (work / name).write_text(content)
    (work / "examples").symlink_to(ROOT / "examples")
    with running_server(tmp_path / "data") as server:
        env = server.env()
        env["PATH"] = os.pathsep.join([str(Path(KEYLESS[0]).parent), *SYSTEM_PATH])
        try:
            done = subprocess.run(
                ["bash", "-c", _script(document, server)],
                env=env,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            for row in server.cli_json("postgres", "server", "list"):
                group = row["id"].split("/resourceGroups/")[1].split("/")[0]
                server.cli("postgres", "server", "delete", "-g", group, "-n", row["name"], "--yes",
                           check=False)  # fmt: skip
                shutil.rmtree(cluster_directory(server.data_dir.resolve(), row["name"]), True)
    reached = re.findall(r"^### (.*)$", done.stderr, re.M)
    assert done.returncode == 0, (
        f"{reached[-1] if reached else document.name} failed (exit {done.returncode}):\n"
        f"{done.stderr[-4000:]}"
    )
