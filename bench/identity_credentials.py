"""Benchmark of credentials in an app under `keyless app run` (issue #4).

    .venv/bin/python bench/identity_credentials.py [--iterations 15] [--duration 10]
                                                   [--connections 1,16,64] [--output FILE]
                                                   [--experiment tcp_nodelay]

Starts its own Keyless server (`keyless init` + `keyless serve --workers 1` in a fresh temporary
data directory, on a free loopback port), creates a resource group and an app with a
system-assigned identity with the CLI, and runs a measuring program as that app with
`keyless app run -- python bench/identity_credentials.py --child ...`, so it gets
IDENTITY_ENDPOINT / IDENTITY_HEADER exactly as a real app does (plus what
`eval "$(keyless env)"` exports in the operator's shell, so the Keyless CA is trusted). Inside
the app it measures:

1. Credentials. For keyless.identity.DefaultCredential and azure-identity's
   DefaultAzureCredential (unchanged, as a user runs it), interleaved, each sample in a fresh
   Python process (a real app start): the library's import time, then the time from
   constructing the credential to the first token, and (in the first --warm-runs samples)
   the in-process warm get_token(scope) cost: a timed loop for the mean, and a loop timing
   every call for p50/p99. Baselines in the same run: one raw HTTP request to the endpoint on
   a new connection and on a kept-alive one, from the measuring program's warm process, and
   the interpreter start-up. The floor of any library's first token is measured too: the
   same request over a bare socket from a fresh process, between the two libraries' samples
   (the first exchange of a new process costs more than later ones: see
   docs/PERFORMANCE.md). One unmeasured sample per library first warms the page cache.
2. The managed identity endpoint with cached tokens: `wrk` (started by the measuring program,
   so it is part of the app's process tree and passes the endpoint's real process-binding
   check) at each concurrency over keep-alive connections, then with a new connection per
   request (the binding looks the caller up once per connection). The baseline is a second
   `keyless app run --no-process-binding` measured the same way (c=16 only), which also
   repeats the first-token samples: the libraries' own cost without the caller lookup.
   `--experiment tcp_nodelay` adds a run of the CLI with TCP_NODELAY set on the endpoint's
   connections (a prototype measured for comparison, not what src/ does).

The result is one JSON document on stdout; progress goes to stderr. No token or header secret
is ever printed (wrk reads the header from its environment). The server, every
`keyless app run` and everything the measuring program started are always stopped, and the
data directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from harness.machine import busy_seconds, log, machine_info, session_members
from harness.report import publish, report
from harness.server import KEYLESS, Server, running_server
from harness.wrk import ensure_wrk, run_plain

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
RUN_TIMEOUT_S = 900  # an upper bound for one `keyless app run`, so nothing hangs

TARGET_FIRST_TOKEN_MS = 50.0
TARGET_SPEEDUP = 5.0
TARGET_WARM_US = 10.0
TARGET_REQUESTS_PER_S = 5000.0
LIBRARIES = ("keyless", "azure")
LIBRARY_NAMES = {
    "keyless": "keyless.identity.DefaultCredential",
    "azure": "azure.identity.DefaultAzureCredential",
}


# --------------------------------------------------------------------------------------------
# One sample: a fresh Python process, as an app starts. Written to a file and run with the
# venv's python; it imports nothing before the library but `sys` and `time`, so the library's
# import pays for everything it needs. It prints one JSON line (never the token).

SAMPLE = r"""
import sys, time
T_START = time.monotonic()


def main():
    lib, scope, warm_n, per_call_n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    perf = time.perf_counter
    t0 = perf()
    if lib == "keyless":
        from keyless.identity import DefaultCredential as Credential
    else:
        from azure.identity import DefaultAzureCredential as Credential
    t1 = perf()
    modules = len(sys.modules)
    c1 = time.process_time()
    credential = Credential()
    t2 = perf()
    token = credential.get_token(scope)
    t3 = perf()
    c3 = time.process_time()
    modules = len(sys.modules) - modules
    credential.get_token(scope)
    t4 = perf()
    out = {
        "t_start": T_START,
        "import_ms": (t1 - t0) * 1e3,
        "construct_ms": (t2 - t1) * 1e3,
        "get_token_ms": (t3 - t2) * 1e3,
        "first_token_ms": (t3 - t1) * 1e3,
        "first_token_cpu_ms": (c3 - c1) * 1e3,
        "second_call_us": (t4 - t3) * 1e6,
        "modules_imported_during_first_token": modules,
    }
    if warm_n:
        get = credential.get_token
        start = perf()
        for _ in range(warm_n):
            get(scope)
        out["warm_mean_us"] = (perf() - start) / warm_n * 1e6
        ns = time.perf_counter_ns
        lat = [0] * per_call_n
        for i in range(per_call_n):
            a = ns()
            get(scope)
            lat[i] = ns() - a
        clock = [0] * 20000
        for i in range(20000):
            a = ns()
            clock[i] = ns() - a
        lat.sort()
        clock.sort()
        pick = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] / 1e3
        out["warm_per_call_us"] = {
            "calls": per_call_n, "p50": pick(lat, 0.5), "p90": pick(lat, 0.9),
            "p99": pick(lat, 0.99), "p999": pick(lat, 0.999), "max": lat[-1] / 1e3,
        }
        out["clock_overhead_us_p50"] = pick(clock, 0.5)
    import base64, json
    payload = token.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    out["claims"] = {k: claims.get(k) for k in ("oid", "aud", "idtyp", "xms_mirid")}
    out["token_chars"] = len(token.token)
    if lib == "keyless":
        out["chain"] = [getattr(c, "chain_name", type(c).__name__) for c in credential.credentials]
        out["answered_by"] = type(credential.selected).__name__
    else:
        out["chain"] = [type(c).__name__ for c in credential.credentials]
        chosen = credential._successful_credential
        inner = getattr(chosen, "_credential", None)
        out["answered_by"] = type(chosen).__name__ + (
            f" ({type(inner).__name__})" if inner is not None else "")
    print(json.dumps(out))


main()
"""

# The floor: the same request from a fresh process with nothing but a socket (no library, no
# HTTP client): what any library's first token costs at least on this machine and endpoint.
# It imports both libraries first (unused), so its process is in the state of a sample's at
# its first token: a process's first exchange costs more the younger the process is.
FLOOR = r"""
import sys, time
T_START = time.monotonic()


def main():
    import azure.identity, keyless.identity  # unused: see above
    import json, os, socket
    from urllib.parse import quote, urlsplit
    perf = time.perf_counter
    parts = urlsplit(os.environ["IDENTITY_ENDPOINT"])
    resource = quote(sys.argv[1].removesuffix("/.default"), safe="")
    request = (
        f"GET {parts.path}?api-version=2019-08-01&resource={resource} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nX-IDENTITY-HEADER: {os.environ['IDENTITY_HEADER']}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    t1, c1 = perf(), time.process_time()
    with socket.socket() as s:
        s.connect((parts.hostname, parts.port))
        s.sendall(request)
        answer = bytearray()
        while chunk := s.recv(65536):
            answer += chunk
    t2, c2 = perf(), time.process_time()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    ok = head.split(b" ", 2)[1] == b"200" and "access_token" in json.loads(body)
    print(json.dumps({
        "t_start": T_START, "first_token_ms": (t2 - t1) * 1e3,
        "first_token_cpu_ms": (c2 - c1) * 1e3, "token_ok": ok,
    }))


main()
"""

# --experiment tcp_nodelay: the `keyless app run` CLI with TCP_NODELAY set on every connection
# its endpoint accepts (a prototype for comparison, not what src/ does).
TCP_NODELAY_CLI = """
import socket, sys
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
_made = HttpToolsProtocol.connection_made
def connection_made(self, transport):
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _made(self, transport)
HttpToolsProtocol.connection_made = connection_made
from keyless.cli.main import main
sys.exit(main())
"""

# wrk sends the header secret from its environment: never on a command line.
WRK_LUA = 'wrk.headers["X-IDENTITY-HEADER"] = os.getenv("IDENTITY_HEADER")\n'


# --------------------------------------------------------------------------------------------
# Small helpers shared by both sides


def summary(values: list[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "median": round(statistics.median(ordered), digits),
        "mean": round(statistics.fmean(ordered), digits),
        "min": round(ordered[0], digits),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], digits),
        "max": round(ordered[-1], digits),
        "stdev": round(statistics.stdev(ordered), digits) if len(ordered) > 1 else 0.0,
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_sockets() -> int:
    """TCP sockets of this network namespace (lines of /proc/net/tcp and tcp6, all states).
    The endpoint's process binding reads these files for every new connection."""
    total = 0
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{name}", "rb") as f:
            total += max(0, sum(1 for _ in f) - 1)
    return total


# --------------------------------------------------------------------------------------------
# The measuring program, inside the app (`--child`)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process if `keyless app run` (its parent) goes away."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def child_log(message: str) -> None:
    print(f"[bench:app] {message}", file=sys.stderr, flush=True)


def raw_request(url: str, header: str, resource_uri: str, conn: Any = None) -> dict[str, Any]:
    """One App Service protocol request with the stdlib; status and time, never the body."""
    parts = urlsplit(url)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    query = urlencode({"api-version": "2019-08-01", "resource": resource_uri})
    start = time.perf_counter()
    try:
        conn.request("GET", f"{parts.path}?{query}", headers={"X-IDENTITY-HEADER": header})
        response = conn.getresponse()
        body = response.read()
    finally:
        elapsed = time.perf_counter() - start
        if own:
            conn.close()
    out: dict[str, Any] = {"status": response.status, "ms": elapsed * 1e3}
    if response.status != 200:
        with contextlib.suppress(ValueError, AttributeError):
            out["message"] = json.loads(body).get("message")
    elif b"access_token" not in body:
        out["status"] = "200 without access_token"
    return out


def http_baselines(url: str, header: str, resource_uri: str) -> dict[str, Any]:
    sockets = tcp_sockets()
    first = raw_request(url, header, resource_uri)  # the endpoint's first issuance
    if first["status"] != 200:
        raise RuntimeError(f"the endpoint refused the first request: {first}")
    new_conn = [raw_request(url, header, resource_uri)["ms"] for _ in range(30)]
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        raw_request(url, header, resource_uri, conn)
        kept = [raw_request(url, header, resource_uri, conn)["ms"] for _ in range(50)]
    finally:
        conn.close()
    return {
        "first_request_ms_incl_issuance": round(first["ms"], 2),
        "cached_new_connection_ms": summary(new_conn, 3),
        "cached_keep_alive_ms": summary(kept, 3),
        "tcp_sockets_on_machine": sockets,
        "how": "http.client GET of IDENTITY_ENDPOINT (App Service protocol) from the app's own "
        "process; the first request makes the endpoint ask the server (one issuance), every "
        "later one is served from the endpoint's cache",
    }


def run_sample(sample: Path, lib: str, spec: dict[str, Any], warm: bool) -> dict[str, Any]:
    n = (
        (spec["keyless_warm_calls"] if lib == "keyless" else spec["azure_warm_calls"])
        if warm
        else 0
    )
    command = [sys.executable, str(sample), lib, spec["scope"], str(n), str(n)]
    spawned = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    ended = time.monotonic()
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0][:500]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["startup_ms"] = (out.pop("t_start") - spawned) * 1e3
    out["process_wall_ms"] = (ended - spawned) * 1e3
    claims = out.get("claims") or {}
    out["token_ok"] = (
        claims.get("oid") == spec["principal_id"]
        and claims.get("idtyp") == "app"
        and str(claims.get("xms_mirid", "")).endswith(f"/apps/{spec['app']}")
    )
    return out


def run_floor(floor: Path, spec: dict[str, Any]) -> dict[str, Any]:
    spawned = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(floor), spec["scope"]], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return {"error": tail[0][:500]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["startup_ms"] = (out.pop("t_start") - spawned) * 1e3
    return out


def credential_samples(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    sample = work / "sample.py"
    sample.write_text(SAMPLE)
    floor = work / "floor.py"
    floor.write_text(FLOOR)
    for lib in LIBRARIES:  # unmeasured: page cache, .pyc files, the endpoint's connection path
        got = run_sample(sample, lib, spec, warm=False)
        if "error" in got:
            raise RuntimeError(f"{LIBRARY_NAMES[lib]} failed: {got['error']}")
    run_floor(floor, spec)
    runs: dict[str, list[dict[str, Any]]] = {lib: [] for lib in LIBRARIES}
    floors: list[dict[str, Any]] = []
    for i in range(spec["iterations"]):
        first, last = LIBRARIES if i % 2 == 0 else LIBRARIES[::-1]
        for lib in (first, "floor", last):
            if lib == "floor":
                got = run_floor(floor, spec)
                floors.append(got)
                if "error" in got or not got["token_ok"]:
                    child_log(f"  floor   #{i + 1}: ERROR {got.get('error', 'no token')}")
                continue
            got = run_sample(sample, lib, spec, warm=i < spec["warm_runs"])
            runs[lib].append(got)
            if "error" in got:
                child_log(f"  {lib} #{i + 1}: ERROR {got['error']}")
            else:
                warm = f", warm {got['warm_mean_us']:.2f} us" if "warm_mean_us" in got else ""
                child_log(
                    f"  {lib:7} #{i + 1}: import {got['import_ms']:.0f} ms, first token "
                    f"{got['first_token_ms']:.1f} ms{warm}"
                )
    result = {lib: aggregate(rows) for lib, rows in runs.items()}
    good = [r for r in floors if "error" not in r]
    result["floor"] = {
        "samples": len(floors),
        "errors": [r.get("error", "no token") for r in floors if not r.get("token_ok")],
        "first_token_ms": summary([r["first_token_ms"] for r in good]),
        "first_token_cpu_ms": summary([r["first_token_cpu_ms"] for r in good]),
        "startup_ms": summary([r["startup_ms"] for r in good]),
        "how": "a fresh `python floor.py` started by the app, interleaved with the libraries: "
        "after importing both libraries (unused, so the process is as old as a sample's at "
        "its first token), one App Service request over a plain socket (no HTTP client), "
        "timed from connect to the end of the answer; the least any library's first token "
        "costs here",
    }
    return result


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in rows if "error" not in r]
    out: dict[str, Any] = {
        "samples": len(rows),
        "errors": [r["error"] for r in rows if "error" in r],
        "tokens_ok": all(r.get("token_ok") for r in good) and bool(good),
    }
    for key in (
        "first_token_ms",
        "first_token_cpu_ms",
        "construct_ms",
        "get_token_ms",
        "import_ms",
        "startup_ms",
    ):
        out[key] = summary([r[key] for r in good])
    out["import_plus_first_token_ms"] = summary(
        [r["import_ms"] + r["first_token_ms"] for r in good]
    )
    out["second_call_us"] = summary([r["second_call_us"] for r in good])
    out["modules_imported_during_first_token"] = summary(
        [r["modules_imported_during_first_token"] for r in good], 0
    )
    out["first_token_ms_each"] = [round(r["first_token_ms"], 1) for r in good]
    warm = [r for r in good if "warm_mean_us" in r]
    if warm:
        out["warm_get_token_us"] = {
            "runs": len(warm),
            "calls_per_run": warm[0]["warm_per_call_us"]["calls"],
            "mean": round(statistics.median(r["warm_mean_us"] for r in warm), 3),
            "p50": round(statistics.median(r["warm_per_call_us"]["p50"] for r in warm), 3),
            "p99": round(statistics.median(r["warm_per_call_us"]["p99"] for r in warm), 3),
            "p999": round(statistics.median(r["warm_per_call_us"]["p999"] for r in warm), 3),
            "per_run_means": [round(r["warm_mean_us"], 3) for r in warm],
            "clock_overhead_us_p50": round(
                statistics.median(r["clock_overhead_us_p50"] for r in warm), 3
            ),
            "how": "mean: a loop of get_token(scope) timed as a whole; p50/p99/p999: the same "
            "number of calls each timed with perf_counter_ns (includes the clock overhead); "
            "median over the runs",
        }
    if good:
        out["chain"] = good[0]["chain"]
        out["answered_by"] = sorted({r["answered_by"] for r in good})
        out["token_audience"] = good[0]["claims"].get("aud")
    return out


def run_wrk(url: str, lua: Path, connections: int, seconds: int, close: bool) -> dict[str, Any]:
    headers = ["Connection: close"] if close else []
    row = run_plain(url, connections, seconds, lua=lua, headers=headers, timeout_s=5)
    del row["connections"]  # the caller's row says it, with the rest of the point
    return row


def wrk_point(
    url: str, lua: Path, connections: int, seconds: int, close: bool, warmup: int
) -> dict[str, Any]:
    if warmup > 0:
        run_wrk(url, lua, connections, warmup, close)
    host = os.getppid()  # `keyless app run`: the endpoint is a thread of that process
    cores = os.cpu_count() or 1
    sockets = tcp_sockets()
    busy0, host0 = busy_seconds(), process_cpu_seconds(host)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.monotonic()
    row = run_wrk(url, lua, connections, seconds, close)
    wall = time.monotonic() - wall0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_seconds() - busy0
    host_cpu = process_cpu_seconds(host) - host0
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    row.update(
        connections=connections,
        threads=min(connections, 2),
        connection="new connection per request" if close else "keep-alive",
        duration_s=seconds,
        endpoint_cpu_s=round(host_cpu, 2),
        endpoint_cpu_us_per_request=round(1e6 * host_cpu / row["requests"], 1)
        if row["requests"]
        else None,
        wrk_cpu_s=round(wrk_cpu, 2),
        tcp_sockets_on_machine_at_start=sockets,
        other_processes_cpu_pct=round(
            max(0.0, 100 * (busy - host_cpu - wrk_cpu) / (wall * cores)), 1
        ),
    )
    return row


def endpoint_load(spec: dict[str, Any], work: Path, url: str) -> list[dict[str, Any]]:
    lua = work / "identity_header.lua"
    lua.write_text(WRK_LUA)
    query = urlencode({"api-version": "2019-08-01", "resource": spec["resource"]})
    target = f"{url}?{query}"
    rows = []
    for close, connections in spec["points"]:
        seconds = spec["duration"] if not close else spec["close_duration"]
        how = "new connection per request" if close else "keep-alive"
        child_log(f"wrk c={connections} {how}, {seconds}s ...")
        row = wrk_point(target, lua, connections, seconds, close, spec["warmup"])
        child_log(
            f"  {row['requests_per_s']:.0f} req/s, p50 {row.get('p50_ms')} ms, "
            f"p99 {row.get('p99_ms')} ms, errors {row['errors']}, endpoint CPU "
            f"{row['endpoint_cpu_us_per_request']} us/request"
        )
        rows.append(row)
    return rows


def child_main(out: Path, spec: dict[str, Any]) -> int:
    out.with_suffix(".pid").write_text(str(os.getpid()))
    _die_with_parent()
    url, header = os.environ["IDENTITY_ENDPOINT"], os.environ["IDENTITY_HEADER"]
    parts = urlsplit(url)
    result: dict[str, Any] = {
        "endpoint": {
            "scheme": parts.scheme,
            "host": parts.hostname,
            "path": parts.path,
            "loopback": parts.hostname in ("127.0.0.1", "::1", "localhost"),
            "msi_variables_set": bool(os.environ.get("MSI_ENDPOINT"))
            and bool(os.environ.get("MSI_SECRET")),
            "ca_trusted_via": [
                k for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE") if k in os.environ
            ],
            "host_process_binding": spec["process_binding"],
        }
    }
    work = out.parent
    try:
        child_log("first request to the endpoint (one issuance), then cached raw requests ...")
        result["http_baselines"] = http_baselines(url, header, spec["resource"])
        if spec["credentials"]:
            child_log(
                f"credentials: {spec['iterations']} fresh processes per library, interleaved "
                f"(warm get_token loops in the first {spec['warm_runs']}) ..."
            )
            result["credentials"] = credential_samples(spec, work)
        result["endpoint_load"] = endpoint_load(spec, work, url)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    return 1 if "error" in result else 0


# --------------------------------------------------------------------------------------------
# The server and the app (the benchmark's side)


def _end_measuring_program(pid_file: Path) -> None:
    """SIGKILL whatever is left of the measuring program: it runs in a session of its own
    (`keyless app run` starts its child with start_new_session), with its samples and wrk."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    for member in session_members(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


def run_in_app(
    server: Server,
    env: dict[str, str],
    group: str,
    app: str,
    spec: dict[str, Any],
    work: Path,
    flags: list[str],
    cli: list[str] = KEYLESS,
) -> dict[str, Any]:
    """`keyless app run -g G -n N [flags] -- python this-file --child OUT SPEC` to its end."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "result.json"
    command = [sys.executable, str(SCRIPT), "--child", str(out), json.dumps(spec)]
    process = subprocess.Popen(
        [*cli, "app", "run", "-g", group, "-n", app, *flags, "--", *command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,  # stdout carries only this benchmark's JSON
        stderr=sys.stderr,
        start_new_session=True,
    )
    try:
        code = process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # forwarded to the app by `app run`
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        _end_measuring_program(out.with_suffix(".pid"))
    if not out.exists():
        raise RuntimeError(f"keyless app run exited {code} without a result")
    result: dict[str, Any] = json.loads(out.read_text())
    result["app_run_exit_code"] = code
    if "error" in result:
        raise RuntimeError(f"the measuring program failed: {result['error']}")
    return result


# --------------------------------------------------------------------------------------------
# The report


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in ("keyless", "azure-identity", "azure-core", "msal", "httpx", "uvicorn", "requests"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def target(value: float | None, goal: float, higher_is_better: bool, unit: str) -> dict[str, Any]:
    met = value is not None and (value >= goal if higher_is_better else value < goal)
    return {
        "target": f"{'>=' if higher_is_better else '<'} {goal:g} {unit}".strip(),
        "value": value,
        "met": met,
    }


def build_targets(
    credentials: dict[str, Any], load: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    kl, az = credentials["keyless"], credentials["azure"]
    kl_first = kl["first_token_ms"].get("median")
    az_first = az["first_token_ms"].get("median")
    ratio = round(az_first / kl_first, 2) if kl_first and az_first else None
    kl_total = kl["import_plus_first_token_ms"].get("median")
    az_total = az["import_plus_first_token_ms"].get("median")
    comparison = {
        "first_token_ratio_azure_over_keyless": ratio,
        "import_plus_first_token_ratio_azure_over_keyless": round(az_total / kl_total, 2)
        if kl_total and az_total
        else None,
        "import_ratio_azure_over_keyless": round(
            az["import_ms"]["median"] / kl["import_ms"]["median"], 2
        )
        if kl["import_ms"].get("median")
        else None,
        "warm_get_token_ratio_azure_over_keyless": round(
            az["warm_get_token_us"]["mean"] / kl["warm_get_token_us"]["mean"], 1
        )
        if "warm_get_token_us" in kl and "warm_get_token_us" in az
        else None,
        "measured_on": "medians; first token = from constructing the credential to the first "
        "token returned (import not included), in a fresh process per sample",
    }
    floor = credentials.get("floor", {}).get("first_token_ms", {}).get("median")
    if floor:
        comparison["floor_first_exchange_ms"] = floor
        comparison["keyless_above_floor_ms"] = round(kl_first - floor, 2) if kl_first else None
        comparison["azure_above_floor_ms"] = round(az_first - floor, 2) if az_first else None
        comparison["ceiling_ratio_azure_over_floor"] = (
            round(az_first / floor, 2) if az_first else None
        )
    kl_cpu = kl.get("first_token_cpu_ms", {}).get("median")
    az_cpu = az.get("first_token_cpu_ms", {}).get("median")
    if kl_cpu and az_cpu:
        # The client process's own CPU for construct + first token: unlike wall time, it
        # hardly depends on what else the machine runs (a diagnostic, not the target).
        comparison["first_token_cpu_ratio_azure_over_keyless"] = round(az_cpu / kl_cpu, 2)
    keep_alive = [r for r in load if r["connection"] == "keep-alive"]
    best = max(keep_alive, key=lambda r: r["requests_per_s"], default=None)
    throughput = target(
        best["requests_per_s"] if best else None, TARGET_REQUESTS_PER_S, True, "requests/s"
    )
    throughput["at_connections"] = best["connections"] if best else None
    throughput["met_at_connections"] = [
        r["connections"]
        for r in keep_alive
        if r["requests_per_s"] >= TARGET_REQUESTS_PER_S and r["errors"] == 0
    ]
    throughput["note"] = "best keep-alive point, wrk inside the app's process tree"
    warm = kl.get("warm_get_token_us", {}).get("mean")
    targets: dict[str, Any] = {
        "keyless_first_token_ms": target(kl_first, TARGET_FIRST_TOKEN_MS, False, "ms"),
        "first_token_speedup_vs_DefaultAzureCredential": target(ratio, TARGET_SPEEDUP, True, "x"),
        "keyless_warm_get_token_us": target(warm, TARGET_WARM_US, False, "us (mean)"),
        "endpoint_requests_per_s": throughput,
    }
    targets["all_met"] = all(t["met"] for t in targets.values() if isinstance(t, dict))
    return targets, comparison


def unbound_first_tokens(baseline: dict[str, Any]) -> dict[str, Any]:
    """The same samples under `keyless app run --no-process-binding`: the libraries' own cost
    without the endpoint's per-connection caller lookup (context, not the targets)."""
    out: dict[str, Any] = {}
    for lib, name in (("keyless", "keyless"), ("azure", "azure_identity")):
        got = baseline["credentials"][lib]
        out[name] = {
            key: got[key]
            for key in (
                "samples",
                "errors",
                "tokens_ok",
                "first_token_ms",
                "first_token_cpu_ms",
                "get_token_ms",
            )
        }
    kl = out["keyless"]["first_token_ms"].get("median")
    az = out["azure_identity"]["first_token_ms"].get("median")
    out["first_token_ratio_azure_over_keyless"] = round(az / kl, 2) if kl and az else None
    floor = baseline["credentials"].get("floor", {}).get("first_token_ms", {})
    out["floor_first_exchange_ms"] = floor
    if az and floor.get("median"):
        out["ceiling_ratio_azure_over_floor"] = round(az / floor["median"], 2)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = machine_info(versions=library_versions())
    log(
        f"machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"load {machine['loadavg_at_start']}"
    )
    started = time.monotonic()
    resource_uri = args.scope.removesuffix("/.default")
    with running_server(1, args.keep, prefix="keyless-bench-identity-") as server:
        log(f"server up on {server.endpoint} (1 worker)")
        group, app = f"rg-bench-{uuid.uuid4().hex[:8]}", "bench-app"
        server.cli_json("group", "create", "-n", group)
        created = server.cli_json(
            "app", "create", "-g", group, "-n", app, "--assign-identity", "[system]"
        )
        principal = created["identity"]["principalId"]
        env = server.shell_env()
        log(f"app {group}/{app} with a system-assigned identity; running it with keyless app run")
        spec = {
            "mode": "in-tree",
            "scope": args.scope,
            "resource": resource_uri,
            "app": app,
            "principal_id": principal,
            "credentials": True,
            "iterations": args.iterations,
            "warm_runs": min(args.warm_runs, args.iterations),
            "keyless_warm_calls": args.keyless_warm_calls,
            "azure_warm_calls": args.azure_warm_calls,
            "points": [(False, c) for c in args.connections]
            + ([(True, args.close_connections)] if args.close_connections else []),
            "duration": args.duration,
            "close_duration": min(args.duration, 5),
            "warmup": args.warmup,
            "process_binding": True,
        }
        work = server.data_dir.parent
        in_tree = run_in_app(server, env, group, app, spec, work / "in-tree", [])
        experiment: dict[str, Any] | None = None
        # Before the baseline: its new-connection point leaves thousands of TIME_WAIT sockets,
        # which every process-binding lookup then reads through for a minute.
        if "tcp_nodelay" in args.experiment:
            log("experiment (not src/): the endpoint with TCP_NODELAY on accepted connections ...")
            experiment = run_in_app(
                server,
                env,
                group,
                app,
                {**spec, "mode": "experiment tcp_nodelay", "credentials": False},
                work / "tcp-nodelay",
                [],
                cli=[sys.executable, "-c", TCP_NODELAY_CLI],
            )
        baseline: dict[str, Any] | None = None
        if args.baseline:
            log("baseline: the same endpoint with `keyless app run --no-process-binding` ...")
            base_spec = {
                **spec,
                "mode": "no-process-binding",
                "warm_runs": 0,  # in-process, the same with or without the binding
                "process_binding": False,
                "points": [(False, args.baseline_connections)]
                + ([(True, args.close_connections)] if args.close_connections else []),
            }
            baseline = run_in_app(
                server,
                env,
                group,
                app,
                base_spec,
                work / "no-binding",
                ["--no-process-binding"],
            )
    credentials = in_tree["credentials"]
    targets, comparison = build_targets(credentials, in_tree["endpoint_load"])
    results = {
        "part1_credentials": {
            "how": "each sample a fresh `python sample.py` started by the app (so inside its "
            "process tree), libraries interleaved, after one unmeasured sample each; "
            "first_token_ms = DefaultX() + first get_token(scope); import_ms = importing the "
            "credential class; startup_ms = interpreter start until the sample's first line; "
            "every token checked (decoded claims: the app's system identity), never printed",
            "keyless": credentials["keyless"],
            "azure_identity": credentials["azure"],
            "comparison": comparison,
        },
        "part2_endpoint_load": {
            "how": "wrk started by the measuring program, i.e. inside the app's process tree "
            "(the endpoint's process binding is checked for real, once per connection); "
            f"{args.warmup}s warm-up per point; X-IDENTITY-HEADER sent from wrk's environment; "
            "every answer is the endpoint's cached token (no issuance)",
            "url": f"{in_tree['endpoint']['scheme']}://{in_tree['endpoint']['host']}:<port>"
            f"{in_tree['endpoint']['path']}?api-version=2019-08-01&resource={resource_uri}",
            "in_app_process_tree": in_tree["endpoint_load"],
            "experiment_tcp_nodelay": {
                "what": "NOT what src/ does: the same `keyless app run` (process binding on) "
                "with TCP_NODELAY set on each accepted connection of the endpoint",
                "http_baselines": experiment["http_baselines"],
                "in_app_process_tree": experiment["endpoint_load"],
            }
            if experiment
            else None,
            "note": "wrk, the endpoint (one asyncio thread in `keyless app run`) and the other "
            "processes of this machine share its cores",
        },
    }
    baselines = {
        "first_token_floor": credentials.get("floor"),
        "http": in_tree["http_baselines"],
        "http_no_process_binding": baseline["http_baselines"] if baseline else None,
        "first_token_without_process_binding": unbound_first_tokens(baseline) if baseline else None,
        "endpoint_load_no_process_binding": baseline["endpoint_load"] if baseline else None,
    }
    return report(
        "credentials and the managed identity endpoint under `keyless app run` (issue #4)",
        machine,
        results,
        baselines,
        setup={
            "server": "keyless init + keyless serve --workers 1 (HTTPS on loopback), temporary "
            "data directory",
            "app": "keyless app create --assign-identity [system]; the measuring program runs "
            "under `keyless app run` (IDENTITY_ENDPOINT/IDENTITY_HEADER from the run, the rest "
            'of the environment as after eval "$(keyless env)")',
            "scope": args.scope,
            "endpoint": in_tree["endpoint"],
        },
        targets=targets,
        total_run_s=round(time.monotonic() - started, 1),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark credentials and the managed identity endpoint under "
        "`keyless app run` (prints JSON on stdout)."
    )
    p.add_argument("--iterations", type=int, default=15, help="samples per library (15)")
    p.add_argument(
        "--warm-runs",
        type=int,
        default=3,
        help="samples per library that also measure warm get_token (3)",
    )
    p.add_argument("--keyless-warm-calls", type=int, default=100_000)
    p.add_argument("--azure-warm-calls", type=int, default=10_000)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk point (10)")
    p.add_argument("--warmup", type=int, default=1, help="wrk warm-up seconds per point (1)")
    p.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 16, 64],
        help="comma-separated wrk connection counts, keep-alive (1,16,64)",
    )
    p.add_argument(
        "--close-connections",
        type=int,
        default=16,
        help="connections for the new-connection-per-request point (16; 0 to skip)",
    )
    p.add_argument(
        "--baseline-connections",
        type=int,
        default=16,
        help="keep-alive connections for the --no-process-binding baseline (16)",
    )
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument(
        "--experiment",
        type=lambda s: [x for x in s.split(",") if x],
        default=[],
        help="also measure a prototype change, not what src/ does: tcp_nodelay (the endpoint "
        "with TCP_NODELAY on accepted connections)",
    )
    p.add_argument("--scope", default="https://management.azure.com/.default")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = p.parse_args(argv)
    for name in args.experiment:
        if name != "tcp_nodelay":
            p.error(f"unknown experiment {name!r}")
    if args.iterations < 1 or args.duration < 1 or not args.connections:
        p.error("--iterations and --duration must be at least 1, --connections not empty")
    if min(args.connections) < 1 or args.keyless_warm_calls < 1 or args.azure_warm_calls < 1:
        p.error("connection counts and warm call counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(Path(argv[1]), json.loads(argv[2]))
    args = parse_args(argv)
    ensure_wrk(False, "bench/identity_credentials.py")

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop it all

    signal.signal(signal.SIGTERM, stop)
    publish(run(args), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
