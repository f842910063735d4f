"""Benchmark of PostgreSQL logins through the token gateway (issue #5), against SCRAM.

    .venv/bin/python bench/postgres_connect.py [--samples 500] [--concurrency 4,8,16]
                                               [--duration 5] [--rounds 2] [--client-processes 2]
                                               [--wait-idle 60] [--retries 1] [--output FILE]
                                               [--experiment empty_sasl_path]

Builds the real world the end-to-end tests build (tests/support): `keyless init` and
`keyless serve` in a fresh temporary data directory, a service principal made with the CLI
(`keyless ad sp create-for-rbac --secret`), a role mapping, `keyless gateway serve` (plain LDAP
on loopback) as its own process, and one PostgreSQL cluster whose pg_hba.conf has, on
127.0.0.1, for the same database:

  token  role bench_token, `ldap` through the gateway (the pg_hba line `hba_line` makes); the
         password is a Keyless access token for api://keyless/postgres, acquired once and
         reused as clients cache tokens (the gateway still checks it on every bind: signature,
         claims, mapping, and a committed audit record before it answers)
  scram  role bench_scram with a password, scram-sha-256 (PostgreSQL's default, 4096
         iterations)
  trust  role bench_trust, no authentication: a baseline, the floor of a new connection

and one more baseline, gateway_bind: the bind a token login makes, sent straight to the gateway
on a new TCP connection (bind, answer, unbind, close: what PostgreSQL's backend does through
libldap), without PostgreSQL.

Measured, with psycopg 3 (libpq) as an app connects, every connection new and closed again:

1. Sequential connect latency: --samples connects per method, interleaved (the order rotates
   every sample so drift and noise spread over all methods), p50/p90/p99/mean, and the ratio
   token/scram; trust and gateway_bind are timed in the same loop.
2. New connections (or binds) per second: K client threads, split over --client-processes processes
   (psycopg releases the GIL while it waits, but a client process is still mostly Python),
   connect and close in a loop for --duration seconds after a one-second warm-up; methods
   alternate, their order reversed every round. CPU per connection of PostgreSQL (postmaster
   and its backends), the gateway and the client is measured from /proc.

`--experiment empty_sasl_path` starts PostgreSQL with SASL_PATH set to an empty directory: a
backend's first LDAP call initialises libldap, whose Cyrus SASL client start-up otherwise
dlopen()s every SASL plugin on the machine for each login (PostgreSQL's `ldap` method only
makes simple binds, so it never uses them). A server setting measured for comparison; nothing
in Keyless changes.

Every point records how much CPU other processes took; with --retries a point during which
they took more than 10 % of the machine is measured again. Every granted token login must have
left exactly one `gateway.bind` audit record (checked at the end). The result is one JSON
document on stdout; progress goes to stderr. Tokens and passwords are never printed. Every
process started is stopped (PostgreSQL with pg_ctl) and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import multiprocessing
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    # `python bench/postgres_connect.py` puts bench/ first on sys.path; the world is built with
    # the end-to-end tests' helpers (tests/support), imported where they are used.
    sys.path.insert(0, str(REPO))

from harness.machine import busy_seconds, log, machine_info, wait_until_idle  # noqa: E402
from harness.report import publish, report  # noqa: E402

TARGET_RATIO = 1.25  # token connect time <= 1.25x SCRAM's
TARGET_CONN_PER_S = 300.0  # RDS IAM authentication caps new IAM connections at 200/s
SERVER_NAME = "bench-pg"  # the server's name in the gateway's bind DN and mapping
DATABASE = "postgres"
ROLES = {"token": "bench_token", "scram": "bench_scram", "trust": "bench_trust"}
# token and scram are compared; trust (no authentication) and gateway_bind (the bind that a
# token login makes, straight to the gateway, without PostgreSQL) are baselines.
METHODS = ("token", "scram", "trust", "gateway_bind")
POSTGRES_SCOPE = "api://keyless/postgres/.default"
BUSY_SHARE = 0.10  # a point is disturbed when other processes took more than this


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own_s: float  # user + system
    reaped_s: float  # user + system of its children that have exited and been waited for


def _processes() -> dict[int, _Proc]:
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, _Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        rest = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = _Proc(
            int(rest[1]),
            (int(rest[11]) + int(rest[12])) / tick,
            (int(rest[13]) + int(rest[14])) / tick,
        )
    return table


@dataclass
class Meter:
    """CPU seconds of named process trees. A tree counts its live processes and the children
    they have reaped, so a backend that exits during a run is counted once, whether it is
    still there at the end or was reaped by the postmaster meanwhile."""

    trees: dict[str, list[int]] = field(default_factory=dict)
    own_only: dict[str, list[int]] = field(default_factory=dict)  # no descendants, no reaped

    def sample(self) -> dict[str, float]:
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, proc in table.items():
            children.setdefault(proc.ppid, []).append(pid)
        out: dict[str, float] = {"machine_busy": busy_seconds()}
        for name, roots in self.trees.items():
            total, stack, seen = 0.0, list(roots), set()
            while stack:
                pid = stack.pop()
                if pid in seen or pid not in table:
                    continue
                seen.add(pid)
                total += table[pid].own_s + table[pid].reaped_s
                stack.extend(children.get(pid, []))
            out[name] = out.get(name, 0.0) + total
        for name, pids in self.own_only.items():
            out[name] = out.get(name, 0.0) + sum(table[p].own_s for p in pids if p in table)
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
        used = {name: after[name] - before[name] for name in before}
        ours = sum(v for k, v in used.items() if k != "machine_busy")
        cores = os.cpu_count() or 1
        other = max(0.0, used["machine_busy"] - ours)
        return {
            "cpu_s": {k: round(v, 3) for k, v in used.items() if k != "machine_busy"},
            "machine_cpu_busy_pct": round(100 * used["machine_busy"] / seconds / cores, 1),
            "other_cpu_s": round(other, 2),
            "disturbed": bool(other > BUSY_SHARE * seconds * cores),
        }


# --------------------------------------------------------------------------------------------
# One connection


def connect_params(port: int, method: str, password: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": ROLES[method],
        "dbname": DATABASE,
        "sslmode": "disable",  # loopback; no method pays for TLS (a token login is one bind)
        "gssencmode": "disable",
        "connect_timeout": 10,
    }
    if password is not None:
        params["password"] = password
    return params


def connect_once(params: dict[str, Any]) -> float:
    """Seconds until psycopg.connect returns (authenticated, backend ready); then closed."""
    t0 = time.perf_counter()
    connection = psycopg.connect(**params)
    t1 = time.perf_counter()
    connection.close()
    return t1 - t0


class DirectBind:
    """One simple bind straight to the gateway on a new TCP connection, then an unbind, as
    PostgreSQL's backend (libldap) does for a token login."""

    def __init__(self, port: int, dn: str, token: str) -> None:
        from ldap3.protocol import rfc4511
        from pyasn1.codec.ber import encoder

        def message(message_id: int, name: str, op: Any) -> bytes:
            choice = rfc4511.ProtocolOp()
            choice.setComponentByName(name, op)
            envelope = rfc4511.LDAPMessage()
            envelope["messageID"] = rfc4511.MessageID(message_id)
            envelope["protocolOp"] = choice
            return bytes(encoder.encode(envelope))

        bind = rfc4511.BindRequest()
        bind["version"] = rfc4511.Version(3)
        bind["name"] = rfc4511.LDAPDN(dn)
        bind["authentication"] = rfc4511.AuthenticationChoice().setComponentByName(
            "simple", rfc4511.Simple(token.encode())
        )
        self.port = port
        self.bind = message(1, "bindRequest", bind)
        self.unbind = message(2, "unbindRequest", rfc4511.UnbindRequest())

    def __call__(self) -> float:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(self.bind)
            reply = b""
            while (size := _frame_size(reply)) is None or len(reply) < size:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("the gateway closed the connection before answering")
                reply += chunk
            t1 = time.perf_counter()
            sock.sendall(self.unbind)
        code = _bind_result(reply)
        if code != 0:
            raise RuntimeError(f"the gateway refused the bind (LDAP result {code})")
        return t1 - t0


def _ber_length(data: bytes, at: int) -> tuple[int, int] | None:
    """(length, offset of the contents) of the BER element whose length octets start at `at`,
    or None while they have not all arrived."""
    if len(data) <= at:
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    n = first & 0x7F
    if len(data) < at + 1 + n:
        return None
    return int.from_bytes(data[at + 1 : at + 1 + n], "big"), at + 1 + n


def _frame_size(data: bytes) -> int | None:
    header = _ber_length(data, 1)
    return None if header is None else header[0] + header[1]


def _bind_result(reply: bytes) -> int:
    """The resultCode of a BindResponse: SEQUENCE { messageID INTEGER, [APPLICATION 1] {
    resultCode ENUMERATED, ... } }."""
    _, at = _ber_length(reply, 1) or (0, 0)
    length, at = _ber_length(reply, at + 1) or (0, 0)  # messageID
    at += length
    if reply[at] != 0x61:
        raise RuntimeError(f"the gateway answered with tag {reply[at]:#x}, not a BindResponse")
    _, at = _ber_length(reply, at + 1) or (0, 0)
    length, at = _ber_length(reply, at + 1) or (0, 0)  # resultCode
    return int.from_bytes(reply[at : at + length], "big")


# --------------------------------------------------------------------------------------------
# Load: client processes with threads, each connecting and closing in a loop


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _load(
    op: Callable[[], float], threads: int, start_at: float, t_begin: float, t_end: float
) -> dict[str, Any]:
    """In a client process: `threads` threads call `op` (connect and close; it returns the
    connect time) from start_at to t_end; the ones that completed in [t_begin, t_end] are the
    measured ones."""
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"ok_total": 0, "errors": 0}
    first_error: list[str] = []

    def loop() -> None:
        mine: list[float] = []
        ok = errors = 0
        _sleep_until(start_at)
        while True:
            t0 = time.monotonic()
            if t0 >= t_end:
                break
            try:
                latency = op()
            except Exception as exc:
                errors += 1
                with lock:
                    if not first_error:
                        first_error.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.002)
                continue
            ok += 1
            if t_begin <= time.monotonic() <= t_end:
                mine.append(latency)
        with lock:
            latencies.extend(mine)
            totals["ok_total"] += ok
            totals["errors"] += errors

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"latencies": latencies, **totals, "first_error": first_error[0] if first_error else ""}


def _client_main(channel: Connection) -> None:
    """A client process: runs the loads it is sent until it is sent None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    channel.send("ready")
    while True:
        job = channel.recv()
        if job is None:
            return
        channel.send(_load(*job))


class Clients:
    """Client processes started once (spawned: only this file, the stdlib and psycopg)."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.channels: list[Connection] = []
        self.processes: list[Any] = []
        try:
            for _ in range(processes):
                parent, child = context.Pipe()
                process = context.Process(target=_client_main, args=(child,), daemon=True)
                process.start()
                child.close()
                self.channels.append(parent)
                self.processes.append(process)
            for channel in self.channels:
                if not channel.poll(60) or channel.recv() != "ready":
                    raise RuntimeError("a client process did not start")
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.processes if p.pid is not None]

    def run(
        self, op: Callable[[], float], threads: int, warmup: float, duration: float, meter: Meter
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        n = len(self.channels)
        used = min(n, threads)
        split = [threads // used + (1 if i < threads % used else 0) for i in range(used)]
        start_at = time.monotonic() + 0.3
        t_begin = start_at + warmup
        t_end = t_begin + duration
        for channel, k in zip(self.channels, split, strict=False):
            channel.send((op, k, start_at, t_begin, t_end))
        _sleep_until(t_begin)
        before = meter.sample()
        _sleep_until(t_end)
        after = meter.sample()
        results = []
        for channel in self.channels[:used]:
            if not channel.poll(duration + 60):
                raise RuntimeError("a client process did not report its load")
            results.append(channel.recv())
        return results, Meter.delta(before, after, duration)

    def stop(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(OSError, ValueError):
                channel.send(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)


# --------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else None,
        "min_ms": round(min(ms), 3) if ms else None,
    }


# --------------------------------------------------------------------------------------------
# The world: Keyless, the gateway, PostgreSQL


@dataclass
class World:
    pg_port: int
    gateway_port: int
    token: str
    scram_password: str
    meter: Meter
    audit_count: Callable[[], dict[str, int]]
    facts: dict[str, Any]

    def params(self, method: str) -> dict[str, Any]:
        password = {"token": self.token, "scram": self.scram_password, "trust": None}[method]
        return connect_params(self.pg_port, method, password)

    def op(self, method: str) -> Callable[[], float]:
        """One new connection of `method`, timed (picklable, for the client processes)."""
        if method == "gateway_bind":
            dn = f"cn={ROLES['token']},ou={SERVER_NAME},dc=keyless"
            return DirectBind(self.gateway_port, dn, self.token)
        return functools.partial(connect_once, self.params(method))


@contextlib.contextmanager
def world(base: Path, pg_env: dict[str, str] | None = None) -> Iterator[World]:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from keyless.authority.config import DataDir, ServerConfig
    from keyless.gateway.mappings import add_mapping
    from keyless.gateway.names import hba_line
    from keyless.gateway.settings import Limits
    from keyless.store.engine import open_engine
    from keyless.store.models import AuditEvent
    from tests.support.gateway import GatewayProcess
    from tests.support.postgres import PostgresServer
    from tests.support.server import running_server

    with running_server(base / "data") as server:
        log(f"keyless serve up on {server.endpoint}")
        created = server.cli_json("ad", "sp", "create-for-rbac", "--name", "bench-pg", "--secret")
        principal = server.cli_json("ad", "sp", "show", "--id", created["appId"])["id"]
        paths = DataDir(server.data_dir)
        store_url = ServerConfig.load_or_default(paths).effective_store_url(paths)
        engine = open_engine(store_url)
        try:
            with Session(engine) as session, session.begin():
                add_mapping(
                    session, server.tenant_id, SERVER_NAME, ROLES["token"], principal, "bench"
                )
            with server.http() as http:
                response = http.post(
                    server.token_url(),
                    data={
                        "grant_type": "client_credentials",
                        "client_id": created["appId"],
                        "client_secret": created["password"],
                        "scope": POSTGRES_SCOPE,
                    },
                )
            if response.status_code != 200:
                raise RuntimeError(f"no token: {response.json().get('error_description')}")
            body = response.json()
            token = str(body["access_token"])

            def audit_count() -> dict[str, int]:
                with engine.connect() as connection:
                    rows = connection.execute(
                        select(AuditEvent.result, func.count())
                        .where(AuditEvent.action == "gateway.bind")
                        .group_by(AuditEvent.result)
                    )
                    return {str(result): int(n) for result, n in rows}

            with GatewayProcess(server) as gateway:
                assert gateway.process is not None
                log(f"keyless gateway serve (plain LDAP) on 127.0.0.1:{gateway.port}")
                hba = [
                    hba_line(
                        SERVER_NAME,
                        "127.0.0.1",
                        gateway.port,
                        tls=False,
                        database=DATABASE,
                        user=ROLES["token"],
                    ),
                    f"host {DATABASE} {ROLES['scram']} 127.0.0.1/32 scram-sha-256",
                    f"host {DATABASE} {ROLES['trust']} 127.0.0.1/32 trust",
                ]
                with PostgresServer(hba_lines=hba, env=pg_env) as pg:
                    scram_password = secrets.token_urlsafe(24)
                    facts = _prepare_postgres(pg, scram_password)
                    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
                    assert server.process is not None
                    meter = Meter(
                        trees={
                            "postgres": [postmaster],
                            "gateway": [gateway.process.pid],
                            "keyless_serve": [server.process.pid],
                        },
                        own_only={"client": [os.getpid()]},
                    )
                    facts["pg_hba_lines"] = hba
                    facts["gateway"] = {
                        "mode": "plain LDAP on 127.0.0.1 (`keyless gateway serve`, no TLS)",
                        "bind_threads": Limits().bind_threads,
                        "store": "SQLite (WAL), the default embedded store, shared with serve",
                    }
                    facts["token"] = {
                        "scope": POSTGRES_SCOPE,
                        "expires_in_s": body.get("expires_in"),
                        "acquired": "once, reused for every token login",
                    }
                    yield World(
                        pg.port, gateway.port, token, scram_password, meter, audit_count, facts
                    )
        finally:
            engine.dispose()


def _prepare_postgres(pg: Any, scram_password: str) -> dict[str, Any]:
    from psycopg import sql

    with psycopg.connect(pg.admin_url(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLES["token"])))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLES["trust"])))
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLES["scram"]), sql.Literal(scram_password)
            )
        )
        stored = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLES["scram"],)
        ).fetchone()
        settings: dict[str, str] = dict(
            admin.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                (
                    [
                        "server_version",
                        "max_connections",
                        "fsync",
                        "synchronous_commit",
                        "full_page_writes",
                        "shared_buffers",
                        "password_encryption",
                        "log_connections",
                        "ssl",
                    ],
                ),
            ).fetchall()
        )
    verifier = str(stored[0]) if stored and stored[0] else ""
    # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; only the iteration count is kept.
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise RuntimeError("bench_scram's password was not stored as a SCRAM verifier")
    iterations = int(verifier.split("$", 2)[1].split(":", 1)[0])
    version = subprocess.run(
        [str(pg.bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return {
        "postgres": {
            "version": version,
            "settings": settings,
            "scram_iterations": iterations,
            "note": "fsync, synchronous_commit and full_page_writes off (throwaway cluster): "
            "logins write nothing, so neither method is affected",
        }
    }


# --------------------------------------------------------------------------------------------
# The measurements


@dataclass
class Bench:
    world: World
    args: argparse.Namespace
    token_logins: int = 0  # every successful token login and direct bind: one audit record each

    def quiet(self) -> None:
        if self.args.wait_idle > 0:
            wait_until_idle(self.args.wait_idle)

    def sanity(self) -> None:
        for method in ("token", "scram", "trust"):
            with psycopg.connect(**self.world.params(method)) as connection:
                row = connection.execute("SELECT current_user").fetchone()
            if row != (ROLES[method],):
                raise RuntimeError(f"{method} login connected as {row}")
            self.token_logins += method == "token"
        wrong = dict(self.world.params("token"), password=self.world.token[:-8] + "AAAAAAAA")
        try:
            psycopg.connect(**wrong).close()
        except psycopg.OperationalError:
            pass
        else:
            raise RuntimeError("a token with a broken signature logged in")

    def sequential(self) -> dict[str, Any]:
        best: dict[str, Any] | None = None
        for attempt in range(1 + self.args.retries):
            self.quiet()
            result = self._sequential_once()
            result["attempt"] = attempt + 1
            if best is None or result["other_cpu_s"] < best["other_cpu_s"]:
                best = result
            if not result["disturbed"]:
                break
            log(f"  disturbed: other processes used {result['other_cpu_s']} CPU-s")
        assert best is not None
        return best

    def _sequential_once(self) -> dict[str, Any]:
        names = list(METHODS)
        kinds = {name: self.world.op(name) for name in names}
        for _ in range(self.args.warmup_samples):
            for name in names:
                kinds[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        gc.collect()
        before, t0 = self.world.meter.sample(), time.monotonic()
        for i in range(self.args.samples):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(kinds[name]())
        elapsed = time.monotonic() - t0
        after = self.world.meter.sample()
        self.token_logins += 2 * (self.args.samples + self.args.warmup_samples)
        usage = Meter.delta(before, after, elapsed)
        summary = {name: latency_summary(values) for name, values in times.items()}
        token, scram = summary["token"], summary["scram"]
        return {
            "samples_per_method": self.args.samples,
            "order": "interleaved; the order rotates every sample",
            "methods": summary,
            "ratio_token_over_scram": {
                "p50": round(token["p50_ms"] / scram["p50_ms"], 3),
                "mean": round(token["mean_ms"] / scram["mean_ms"], 3),
                "p90": round(token["p90_ms"] / scram["p90_ms"], 3),
                "p99": round(token["p99_ms"] / scram["p99_ms"], 3),
            },
            "token_minus_trust_p50_ms": round(token["p50_ms"] - summary["trust"]["p50_ms"], 3),
            "scram_minus_trust_p50_ms": round(scram["p50_ms"] - summary["trust"]["p50_ms"], 3),
            "elapsed_s": round(elapsed, 2),
            **usage,
        }

    def load_point(self, clients: Clients, method: str, k: int) -> dict[str, Any]:
        best: dict[str, Any] | None = None
        for attempt in range(1 + self.args.retries):
            self.quiet()
            results, usage = clients.run(
                self.world.op(method), k, self.args.warmup, self.args.duration, self.world.meter
            )
            latencies = [x for r in results for x in r["latencies"]]
            ok_total = sum(r["ok_total"] for r in results)
            if method in ("token", "gateway_bind"):
                self.token_logins += ok_total
            count = len(latencies)
            row: dict[str, Any] = {
                "method": method,
                "concurrency": k,
                "connections": count,
                "conn_per_s": round(count / self.args.duration, 1),
                "latency": latency_summary(latencies),
                "errors": sum(r["errors"] for r in results),
                "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
                "cpu_ms_per_connection": {
                    name: round(1e3 * seconds / count, 3) if count else None
                    for name, seconds in usage["cpu_s"].items()
                },
                **usage,
                "attempt": attempt + 1,
            }
            if best is None or row["other_cpu_s"] < best["other_cpu_s"]:
                best = row
            if not row["disturbed"]:
                break
            log(f"  disturbed: other processes used {row['other_cpu_s']} CPU-s; again")
        assert best is not None
        return best

    def load(self, clients: Clients) -> list[dict[str, Any]]:
        summary: list[dict[str, Any]] = []
        methods = self.args.load_methods
        for k in self.args.concurrency:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
            for r in range(self.args.rounds):
                order = methods if r % 2 == 0 else list(reversed(methods))
                for method in order:
                    row = self.load_point(clients, method, k)
                    runs[method].append(row)
                    log(
                        f"  c={k} {method:6s} round {r + 1}: {row['conn_per_s']:7.1f} conn/s, "
                        f"p50 {row['latency']['p50_ms']} ms, errors {row['errors']}"
                        + (" (disturbed)" if row["disturbed"] else "")
                    )
            for method in methods:
                summary.append(_combine(method, k, runs[method], self.args.duration))
        return summary


def _combine(method: str, k: int, runs: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    count = sum(r["connections"] for r in runs)
    cpu: dict[str, float] = {}
    for r in runs:
        for name, seconds in r["cpu_s"].items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    return {
        "method": method,
        "concurrency": k,
        "conn_per_s": round(count / (duration * len(runs)), 1),
        "rounds_conn_per_s": [r["conn_per_s"] for r in runs],
        "p50_ms": round(statistics.median(r["latency"]["p50_ms"] for r in runs), 3),
        "p99_ms": round(max(r["latency"]["p99_ms"] for r in runs), 3),
        "errors": sum(r["errors"] for r in runs),
        "first_error": next((r["first_error"] for r in runs if r["first_error"]), ""),
        "cpu_ms_per_connection": {
            name: round(1e3 * seconds / count, 3) if count else None
            for name, seconds in cpu.items()
        },
        "machine_cpu_busy_pct": [r["machine_cpu_busy_pct"] for r in runs],
        "other_cpu_s": [r["other_cpu_s"] for r in runs],
        "disturbed_rounds": sum(1 for r in runs if r["disturbed"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info(
        psycopg=f"{psycopg.__version__} ({psycopg.pq.__impl__}), libpq {psycopg.pq.version()}"
    )
    cpu, cores, load = machine["cpu_model"], machine["cores"], machine["loadavg_at_start"]
    log(f"machine: {cpu}, {cores} cores, load {load}")
    if args.wait_idle > 0:
        wait_until_idle(args.wait_idle)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="keyless-bench-pg-"))
        pg_env: dict[str, str] = {}
        if "empty_sasl_path" in args.experiment:
            # Readable by the account PostgreSQL runs as (the temporary directory is not).
            empty = stack.enter_context(tempfile.TemporaryDirectory(prefix="keyless-no-sasl-"))
            Path(empty).chmod(0o755)
            pg_env["SASL_PATH"] = empty
        w = stack.enter_context(world(Path(tmp), pg_env))
        bench = Bench(w, args)
        audit_before = w.audit_count()
        bench.sanity()
        log(f"sequential: {args.samples} connects per method, interleaved ...")
        sequential = bench.sequential()
        for name, s in sequential["methods"].items():
            log(f"  {name:12s} p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  mean {s['mean_ms']} ms")
        log(f"  token/scram p50 {sequential['ratio_token_over_scram']['p50']}")
        clients = Clients(args.client_processes)
        try:
            w.meter.trees["client"] = clients.pids  # and this process (own_only)
            log(f"load: {args.concurrency} threads over {args.client_processes} processes ...")
            load = bench.load(clients)
        finally:
            clients.stop()
        audit_after = w.audit_count()
        granted = audit_after.get("granted", 0) - audit_before.get("granted", 0)
        refused = sum(audit_after.values()) - sum(audit_before.values()) - granted
        audit = {
            "granted_records": granted,
            "successful_token_logins_and_binds": bench.token_logins,
            "refused_records": refused,
            "refused_expected": 1,  # the sanity check's broken token
            "ok": granted == bench.token_logins and refused == 1,
        }
        facts = w.facts
    token_rates = [r for r in load if r["method"] == "token"]
    best = max(token_rates, key=lambda r: r["conn_per_s"]) if token_rates else None
    ratio = sequential["ratio_token_over_scram"]
    return report(
        "PostgreSQL connect: token through the gateway vs SCRAM (issue #5)",
        machine,
        {"sequential": sequential, "load": load},
        {
            "methods": ["trust", "gateway_bind"],
            "how": "measured in the same runs as token and scram, interleaved with them: trust "
            "(no authentication) and gateway_bind (the bind a token login makes, straight to "
            "the gateway, without PostgreSQL); their figures are beside token's and scram's "
            "in results.sequential.methods and results.load",
        },
        **facts,
        experiment=args.experiment or None,
        postgres_environment={"SASL_PATH": "an empty directory"}
        if "empty_sasl_path" in args.experiment
        else {},
        client={
            "library": "psycopg 3 (libpq), sslmode=disable, gssencmode=disable, new connection "
            "each time, closed after connect",
            "load_processes": args.client_processes,
            "load_duration_s": args.duration,
            "load_warmup_s": args.warmup,
            "rounds": args.rounds,
            "note": "clients, PostgreSQL, the gateway and keyless serve share the same cores",
        },
        targets={
            "connect_time_ratio": {
                "target": f"token <= {TARGET_RATIO}x SCRAM (median connect time)",
                "measured_p50": ratio["p50"],
                "measured_mean": ratio["mean"],
                "met": ratio["p50"] <= TARGET_RATIO,
            },
            "new_connections_per_s": {
                "target": f">= {TARGET_CONN_PER_S:.0f} token logins/s "
                "(RDS IAM authentication: 200/s)",
                "best": best["conn_per_s"] if best else None,
                "at_concurrency": best["concurrency"] if best else None,
                "met": bool(best and best["conn_per_s"] >= TARGET_CONN_PER_S),
            },
        },
        audit=audit,
        disturbed=bool(sequential["disturbed"]) or any(r["disturbed_rounds"] for r in load),
        all_errors_zero=all(r["errors"] == 0 for r in load),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    p = argparse.ArgumentParser(
        description="PostgreSQL connect latency and rate: token via the Keyless gateway vs "
        "SCRAM (prints JSON on stdout)."
    )
    p.add_argument("--samples", type=int, default=500, help="sequential connects per method")
    p.add_argument("--warmup-samples", type=int, default=20)
    p.add_argument("--concurrency", type=ints, default=[4, 8, 16], help="client threads (4,8,16)")
    p.add_argument("--duration", type=float, default=5, help="seconds per load run (5)")
    p.add_argument("--warmup", type=float, default=1, help="seconds before each load run (1)")
    p.add_argument("--rounds", type=int, default=2, help="load runs per method and point (2)")
    p.add_argument(
        "--load-methods",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(METHODS),
        help="comma-separated, of token,scram,trust,gateway_bind (default: all)",
    )
    p.add_argument(
        "--client-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="client processes the load threads are split over (default: one per core)",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="on a shared machine, wait up to this long before each measurement until the "
        "cores are at most 15%% busy with other work (default 0: do not wait)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="measure a point again (at most this many times) when other processes used "
        "more than 10%% of the CPU during it; the least disturbed attempt is reported",
    )
    p.add_argument(
        "--experiment",
        type=lambda s: [x for x in s.split(",") if x],
        default=[],
        help="empty_sasl_path: start PostgreSQL with SASL_PATH set to an empty directory "
        "(a server setting, measured for comparison)",
    )
    p.add_argument("--output", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    for name in args.experiment:
        if name != "empty_sasl_path":
            p.error(f"unknown experiment {name!r}")
    for method in args.load_methods:
        if method not in METHODS:
            p.error(f"unknown method {method!r}")
    if args.samples < 1 or args.duration < 1 or args.rounds < 1 or args.client_processes < 1:
        p.error("--samples, --duration, --rounds and --client-processes must be at least 1")
    if not args.concurrency or min(args.concurrency) < 1 or max(args.concurrency) > 150:
        p.error("--concurrency values must be 1..150 (the cluster allows 200 connections)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop everything

    signal.signal(signal.SIGTERM, stop)
    document = run(args)
    publish(document, args.output)
    return 0 if document["all_errors_zero"] and document["audit"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
