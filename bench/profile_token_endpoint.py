"""Where a token costs its time: py-spy on a server worker while wrk drives the token endpoint.

    .venv/bin/pip install py-spy        # once; py-spy needs ptrace (root, or CAP_SYS_PTRACE)
    .venv/bin/python bench/profile_token_endpoint.py [--workers 2] [--scenario client_secret]
                                                     [--connections 16] [--duration 15]

Starts a server exactly as bench/token_endpoint.py does, puts it under load with wrk, samples
every worker process with `py-spy record --native --format raw` for the middle of the run,
and prints (stderr: a readable table; stdout: JSON) the share of samples per cost bucket
(RSA signing, TLS, SQLite, SQLAlchemy, PyJWT, Starlette/uvicorn, ...) and the top functions by
own and inclusive time. The collapsed stacks stay in --out (feed them to flamegraph.pl or
speedscope).
"""

from __future__ import annotations

import argparse
import collections
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import token_endpoint as tb
from harness.machine import machine_info
from harness.report import publish
from harness.report import report as harness_report
from harness.wrk import ensure_wrk

# First match wins, tested against the frames of a stack from the leaf up: a sample is charged
# to the innermost frame that names a bucket.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("RSA sign (cryptography, C)", ("RSAAlgorithm.sign (", "rsa_ossl_private", "BN_mod_exp")),
    ("RSA verify (cryptography, C)", ("RSAAlgorithm.verify (",)),
    (
        "SQLite statement/commit (C; includes waiting for the write lock)",
        (
            "DefaultDialect.do_execute (",
            "DefaultDialect.do_commit (",
            "do_executemany (",
            "sqlite3",
        ),
    ),
    ("TLS (ssl module)", ("ssl.py", "SSL_", "_ssl__")),
    ("SQLAlchemy (Python)", ("sqlalchemy",)),
    ("PyJWT (Python)", ("jwt/",)),
    ("json", ("json/",)),
    (
        "threadpool handoff (anyio, threading)",
        ("anyio", "concurrent/futures", "threading.py", "queue.py"),
    ),
    ("Starlette", ("starlette",)),
    ("uvicorn (Python)", ("uvicorn", "httptools")),
    (
        "keyless (own code)",
        (
            "keyless/",
            "token_endpoint.py",
            "cache.py",
            "client_auth.py",
            "tokens.py",
            "keys.py",
            "routes.py",
        ),
    ),
    ("event loop: uvloop native (TLS records, HTTP parsing, epoll)", ("Runner.run (",)),
    ("asyncio", ("asyncio",)),
]


# py-spy cannot always tell a thread blocked in a wait from a running one (--nonblocking
# samples without pausing the process; --native counts lock waits as running): the stacks of
# threads waiting for work are dropped.
IDLE_FRAMES = (
    "Condition.wait (",
    "Event.wait (",
    "Queue.get (",
    "_queue_SimpleQueue_get",
    "Connection._recv (multiprocessing",
    "sleep (",
)


def is_idle(frames: list[str]) -> bool:
    """A thread waiting for work (anywhere in its stack: with --native, C frames follow)."""
    return any(f.startswith(IDLE_FRAMES) for f in frames)


def bucket_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def analyse(raw_files: list[Path], top: int) -> dict[str, Any]:
    buckets: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = in_sqlite = busy_wait = gil_wait = 0
    for path in raw_files:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            if is_idle(frames):
                continue
            total += count
            if any(
                f.startswith(("DefaultDialect.do_execute", "DefaultDialect.do_commit"))
                for f in frames
            ):
                in_sqlite += count
                if any(f.startswith("sqlite3InvokeBusyHandler") for f in frames):
                    busy_wait += count
                elif any(f.startswith("pthread_cond_timedwait") for f in frames):
                    gil_wait += count
            buckets[bucket_of(frames)] += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        # Only with --native: of the samples inside a SQLite statement or commit, the share
        # sleeping in SQLite's busy handler (waiting for another connection's write lock) and
        # the share waiting to take the GIL back.
        "sqlite_pct": pct(in_sqlite),
        "sqlite_busy_handler_pct_of_sqlite": round(100 * busy_wait / in_sqlite, 1)
        if in_sqlite
        else None,
        "sqlite_gil_wait_pct_of_sqlite": round(100 * gil_wait / in_sqlite, 1)
        if in_sqlite
        else None,
        "buckets_pct": {k: pct(v) for k, v in buckets.most_common()},
        "top_own_pct": [[f, pct(n)] for f, n in own.most_common(top)],
        "top_inclusive_pct": [[f, pct(n)] for f, n in inclusive.most_common(top)],
    }


def worker_pids(server: tb.Server, workers: int) -> list[int]:
    """The processes that answer requests: the serve process itself with one worker, else
    uvicorn's spawned workers (not the supervisor, not multiprocessing's resource tracker)."""
    if workers == 1 and server.process is not None:
        return [server.process.pid]
    found = []
    for pid in server.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "multiprocessing.spawn" in cmdline or "spawn_main" in cmdline:
            found.append(pid)
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scenario", choices=["client_secret", "certificate"], default="client_secret")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument(
        "--duration", type=float, default=15, help="seconds of load (sampled: all but 2)"
    )
    p.add_argument("--rate", type=int, default=200, help="py-spy samples/s")
    p.add_argument(
        "--native",
        action="store_true",
        help="also sample C frames (slow: it halves the server's rate, and py-spy then counts "
        "threads blocked on locks as busy)",
    )
    p.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path("/tmp/keyless-profile"))
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is missing: .venv/bin/pip install py-spy")
    ensure_wrk(False, "bench/profile_token_endpoint.py")
    args.out.mkdir(parents=True, exist_ok=True)

    bench_args = tb.parse_args(
        ["--workers", str(args.workers), "--duration", str(args.duration), "--warmup", "0"]
    )
    with tb.running_server(args.workers, keep=False) as server:
        clients = tb.create_clients(server)
        tb.sanity_check(server, clients, bench_args.scope)
        work = server.data_dir.parent / "load"
        work.mkdir()
        bench = tb.Bench(server, clients, bench_args, work)
        if args.scenario == "client_secret":
            body = work / "secret.body"
            body.write_text(tb.secret_body(clients, bench_args.scope))
            lua_args = ["static", str(body)]
        else:
            rate = 2 * 1300  # at most the signing bound of two cores
            lua_args = bench.write_pool(
                "profile", math.ceil(args.duration * rate), min(args.connections, 2)
            )
        workers = worker_pids(server, args.workers)
        tb.log(f"server pids {server.pids()}; sampling {workers}")
        result: dict[str, Any] = {}

        def load() -> None:
            cpu0 = server.cpu_seconds()
            raw = tb.run_wrk(bench.url, args.connections, args.duration, lua_args, 5)
            result["row"] = tb.summarise(
                args.scenario, args.connections, raw, server.cpu_seconds() - cpu0
            )

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.0)
        spies = []
        raw_files = []
        for pid in workers:
            out = args.out / f"{args.scenario}-w{args.workers}-c{args.connections}-{pid}.txt"
            raw_files.append(out)
            cmd = [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(args.duration) - 2)),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(out),
                *(["--native"] if args.native else ["--nonblocking"]),
                *(["--gil"] if args.gil else []),
            ]
            spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for spy in spies:
            _, err = spy.communicate(timeout=args.duration + 60)
            if spy.returncode != 0:
                tb.log(f"py-spy failed: {err.decode()[-1000:]}")
        thread.join(timeout=args.duration + 120)
    report = {
        "scenario": args.scenario,
        "workers": args.workers,
        "connections": args.connections,
        "load": result.get("row"),
        "profile": analyse([f for f in raw_files if f.exists()], args.top),
        "raw_stacks": [str(f) for f in raw_files],
    }
    prof = report["profile"]
    tb.log(f"load: {report['load']}")
    tb.log(
        f"{prof['samples']} samples; {prof['sqlite_pct']}% in SQLite statements/commits"
        + (
            f", of which {prof['sqlite_busy_handler_pct_of_sqlite']}% in the busy handler "
            f"(waiting for the write lock) and {prof['sqlite_gil_wait_pct_of_sqlite']}% "
            "waiting for the GIL"
            if args.native
            else ""
        )
    )
    tb.log("share per bucket:")
    for name, share in prof["buckets_pct"].items():
        tb.log(f"  {share:5.1f}%  {name}")
    tb.log("top inclusive:")
    for frame, share in prof["top_inclusive_pct"]:
        tb.log(f"  {share:5.1f}%  {frame[:150]}")
    publish(
        harness_report(
            "profile of the token endpoint under load (py-spy)",
            machine_info(),
            {"load": report.pop("load"), "profile": report.pop("profile")},
            **report,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
