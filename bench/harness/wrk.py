"""wrk, the load generator: installed or explained, run with a Lua script that prints one JSON
line of counts and latencies, or run plain for a GET floor."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.machine import log

# The line each bench/*.lua script prints at the end: MARKER + one JSON object.
MARKER = "KEYLESS_BENCH_JSON "


def ensure_wrk(install: bool, script: str) -> None:
    """wrk on PATH, or (with `install`) apt-get it, or exit saying how to get it."""
    if shutil.which("wrk"):
        return
    if install:
        log("wrk is missing: apt-get install -y wrk")
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, timeout=600)
        if shutil.which("wrk"):
            return
    sys.exit(
        f"{script} needs wrk (https://github.com/wg/wrk) on PATH.\n"
        "  Debian/Ubuntu: sudo apt-get install -y wrk   (or re-run with --install-wrk)\n"
        "  macOS:         brew install wrk"
    )


def run_script(
    url: str,
    lua: Path,
    connections: int,
    duration: float,
    script_args: list[str],
    timeout_s: float,
    env: dict[str, str] | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """One wrk run (-t min(c, 2)) with `lua`; its JSON line, plus wrk's own CPU seconds
    (`wrk_cpu_s`) and thread count (`threads`)."""
    threads = min(connections, 2)
    cmd = [
        "wrk",
        "-c",
        str(connections),
        "-t",
        str(threads),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        *(["--latency"] if latency else []),
        "-s",
        str(lua),
        url,
        "--",
        *script_args,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(
            f"wrk gave no result (exit {result.returncode}): "
            f"{(result.stderr or result.stdout)[-2000:]}"
        )
    data: dict[str, Any] = json.loads(line[len(MARKER) :])
    data["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data["threads"] = threads
    return data


def run_plain(
    url: str,
    connections: int,
    duration: float,
    lua: Path | None = None,
    headers: list[str] | None = None,
    timeout_s: float = 5,
) -> dict[str, Any]:
    """wrk with no result script of ours (a plain GET, or `lua` that only shapes requests):
    what wrk prints, parsed. `errors` counts non-2xx answers and socket errors."""
    cmd = [
        "wrk",
        "-c",
        str(connections),
        "-t",
        str(min(connections, 2)),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "--latency",
        *(["-s", str(lua)] if lua is not None else []),
        *[arg for header in headers or [] for arg in ("-H", header)],
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out: dict[str, Any] = {
        "connections": connections,
        "requests": 0,
        "requests_per_s": 0.0,
        "non_2xx": 0,
        "socket_errors": 0,
    }
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["requests_per_s"] = float(parts[1])
        elif "requests in" in line:
            out["requests"] = int(parts[0])
        elif len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            out[f"p{parts[0][:-1]}_ms"] = parse_ms(parts[1])
        elif "Non-2xx" in line:
            out["non_2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            out["socket_errors"] = sum(int(x.strip(",")) for x in parts[3::2])
            out["socket_error_detail"] = line.split(":", 1)[1].strip()
    if done.returncode != 0 or not out["requests"]:
        out["wrk_failed"] = (done.stderr.strip() or done.stdout.strip())[-300:]
    out["errors"] = out["non_2xx"] + out["socket_errors"]
    return out


def parse_ms(text: str) -> float:
    """wrk's latency text (850.00us, 1.20ms, 2.00s) in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * factor, 3)
    return float(text)
