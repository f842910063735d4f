"""The machine a benchmark runs on: what it is, which commit it measures, and how busy other
work keeps it (the machine is shared, so a benchmark can wait for it to be quiet)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


def log(message: str) -> None:
    """Progress, to stderr: stdout carries only the JSON report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine_info(**extra: Any) -> dict[str, Any]:
    """What the figures were measured on; `extra` adds what one benchmark depends on (e.g.
    library versions)."""
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography_openssl": backend.openssl_version_text(),
        "wrk": wrk_version(),
        "loadavg_at_start": loadavg(),
        "keyless_commit": git_commit(),
        "keyless_source": keyless_source(),
        **extra,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _proc_field(path: str, name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return ""


def wrk_version() -> str:
    if not shutil.which("wrk"):
        return ""
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def git_commit() -> str:
    """HEAD, with +dirty when src/ has uncommitted changes: the code the figures belong to."""
    # Read-only: rev-parse, and status with optional locks off so the index is never rewritten.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}{'+dirty' if dirty else ''}"


def keyless_source() -> str:
    """The keyless package a server started from here imports (PYTHONPATH may point at
    another copy)."""
    out = subprocess.run(
        [sys.executable, "-c", "import keyless, os; print(os.path.dirname(keyless.__file__))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def busy_pct(seconds: float = 2.0) -> float:
    """How busy the cores were, in percent, over the next `seconds`."""
    cores = os.cpu_count() or 1
    b0 = busy_seconds()
    time.sleep(seconds)
    return round(100 * (busy_seconds() - b0) / seconds / cores, 1)


def wait_until_idle(max_wait_s: float, threshold_pct: float = 15.0) -> float:
    """On a shared machine: wait (at most max_wait_s) until the cores have been at most
    threshold_pct busy for 3 s in a row. Returns the busy percentage last seen."""
    deadline = time.monotonic() + max_wait_s
    while True:
        pct = busy_pct(3.0)
        if pct <= threshold_pct or time.monotonic() >= deadline:
            return pct
        log(f"machine {pct:.0f}% busy with other work; waiting for it to calm down")


def session_members(sid: int) -> list[int]:
    """Every live process of session `sid` (a server started with start_new_session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by these processes (the live ones)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick
