"""The benchmarks share one harness (bench/harness): one way to describe the machine, wait for
it to be quiet, start a server and run wrk, and one JSON schema for what they print.

The benchmarks themselves are run by hand (docs/PERFORMANCE.md); this checks what can be
checked without load: that none of them grows its own copy again, and the schema.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
BENCHMARKS = [
    "access_decisions.py",
    "identity_credentials.py",
    "postgres_connect.py",
    "token_endpoint.py",
    "vault_secrets.py",
    "profile_token_endpoint.py",
    "profile_vault_secrets.py",
]
# No options: run, it measures; the copy check covers it.
PLAIN = ["single_worker_nodelay.py"]
# What the harness owns: a benchmark that defines one of these again has a drifting copy.
HARNESS_NAMES = {
    "machine_info",
    "_git_commit",
    "machine_busy_seconds",
    "wait_until_idle",
    "free_port",
    "Server",
    "running_server",
    "ensure_wrk",
    "run_wrk_get",
    "_ms",
    "session_members",
}


def test_no_benchmark_keeps_its_own_copy_of_the_harness() -> None:
    for name in [*BENCHMARKS, *PLAIN]:
        tree = ast.parse((BENCH / name).read_text())
        defined = {
            node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)
        }
        assert not defined & HARNESS_NAMES, (name, defined & HARNESS_NAMES)
        imports = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert any(m.startswith("harness.") for m in imports), name


def test_the_shared_schema() -> None:
    script = (
        "import json, sys\n"
        "from harness.machine import machine_info\n"
        "from harness.report import publish, report\n"
        "publish(report('probe', machine_info(), [{'x': 1}], {'floor': 2}, note='n'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "--flag"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    document = json.loads(done.stdout)
    assert list(document)[:7] == [
        "schema",
        "benchmark",
        "commit",
        "command",
        "machine",
        "baselines",
        "results",
    ]
    assert document["schema"] == "keyless-bench/1"
    assert document["results"] == [{"x": 1}] and document["baselines"] == {"floor": 2}
    assert document["note"] == "n"
    assert document["commit"] == document["machine"]["keyless_commit"] != ""
    for field in ("cores", "cpu_model", "python", "loadavg_at_start", "loadavg_at_end"):
        assert field in document["machine"], field
    for name in BENCHMARKS:
        help_text = subprocess.run(
            [sys.executable, str(BENCH / name), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert help_text.returncode == 0 and "usage:" in help_text.stdout, help_text.stderr
