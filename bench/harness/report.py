"""The one JSON document every benchmark prints: the same top-level fields whatever it
measures, so results from different benchmarks and commits line up.

    {"schema": "keyless-bench/1", "benchmark": ..., "commit": ..., "command": ...,
     "machine": {...}, "baselines": {...}, "results": ..., <the benchmark's own fields>}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.machine import loadavg

SCHEMA = "keyless-bench/1"


def report(
    benchmark: str,
    machine: dict[str, Any],
    results: Any,
    baselines: dict[str, Any] | None = None,
    **details: Any,
) -> dict[str, Any]:
    """The document: `results` are the measured figures, `baselines` what they are compared
    with (measured in the same run), `details` the benchmark's own setup and checks."""
    machine.setdefault("loadavg_at_end", loadavg())
    script = Path(sys.argv[0]).name
    return {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "commit": machine.get("keyless_commit", ""),
        "command": " ".join([".venv/bin/python", f"bench/{script}", *sys.argv[1:]]),
        "machine": machine,
        "baselines": baselines or {},
        "results": results,
        **details,
    }


def publish(document: dict[str, Any], output: Path | None = None) -> None:
    """To stdout, and to `output` too when given."""
    text = json.dumps(document, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    print(text)
