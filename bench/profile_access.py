"""Where an access decision's time goes, and what a scope-prefix index would change.

    .venv/bin/python bench/profile_access.py [--decisions 100000] [--seed 3]

Builds the same data set and the same seeded decisions as bench/access_decisions.py (100,000
role assignments, 10,000 nested groups, 50,000 principals), then:

1. profile: cProfile of `AccessIndex.check` (src as is) over the decisions, per-call cost of
   each function, and how many grants a decision tests (`is_within` calls per decision).
2. prototype: `ScopeFirstIndex`, defined in this file only, built from the same AccessIndex:
   grants keyed by scope key, then by principal. A decision walks the target's ancestor
   scopes (at most ~10 whole-segment prefixes: /, the subscription, the resource group, the
   resource, child resources) and at each one looks up the caller's principals (itself and
   its groups), iterating whichever of the two is smaller; so it tests only the grants that
   reach the target instead of every grant the caller holds anywhere. Its answers are
   compared with src's on every decision, and both are timed on the same calls.
3. gc: the warm pass of src's check with the garbage collector on, off, and after
   gc.freeze() (objects of the built index moved out of the collected generations).
4. index build: fetching 100,000 assignments and the memberships vs making Grant objects.
6. management API: GET app / PUT resource group through the ASGI app in this process (a real
   server made the data and was stopped), cost per request and per step under cProfile.
5. generation read (what AccessEngine.check adds per call): as in src (two statements built
   per call, each through SQLAlchemy), one statement built once for both counters, the same
   with exec_driver_sql, and the raw sqlite3 floor.

Prints one JSON document; nothing in src/ is changed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import access_decisions as ad
from sqlalchemy import select

from keyless.access.engine import (
    ACCESS_GENERATION,
    AccessEngine,
    AccessIndex,
    Decision,
    Grant,
)
from keyless.base.scopes import ROOT, scope_key
from keyless.store.generation import GENERATION, read_generation
from keyless.store.models import GroupMember, RoleAssignment, StoreState


class ScopeFirstIndex:
    """Prototype: the same grants, keyed by scope key and then principal."""

    def __init__(self, base: AccessIndex) -> None:
        self.base = base
        by_scope: dict[str, dict[str, list[Grant]]] = defaultdict(dict)
        for principal, grants in base.grants.items():
            for grant in grants:
                by_scope[grant.scope_key].setdefault(principal, []).append(grant)
        self.by_scope = dict(by_scope)

    @staticmethod
    def ancestors(target: str) -> list[str]:
        """The target and every scope above it, nearest first (whole segments only)."""
        if target == ROOT:
            return [ROOT]
        out = [target]
        cut = target.rfind("/")
        while cut > 0:
            out.append(target[:cut])
            cut = target.rfind("/", 0, cut)
        out.append(ROOT)
        return out

    def check(self, principal_id: str, action: str, scope: str, data: bool = False) -> Decision:
        members = self.base.principals(principal_id)
        allows = self.base._role_allows
        by_scope = self.by_scope
        for key in self.ancestors(scope_key(scope)):
            at = by_scope.get(key)
            if at is None:
                continue
            # Iterate the smaller side: the caller's principals, or who holds grants here.
            if len(at) <= len(members):
                held = [gs for p, gs in at.items() if p in members]
            else:
                held = [at[m] for m in members if m in at]
            for grants in held:
                for grant in grants:
                    if allows(grant.role_id, action, data):
                        role = self.base.roles[grant.role_id]
                        return Decision(True, principal_id, action, scope, grant, role.name)
        return Decision(False, principal_id, action, scope)


def profile_check(index: AccessIndex, calls: list[Any]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    for p, a, s, d, _ in calls:
        index.check(p, a, s, d)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    total = 0.0
    for (file, line, name), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        rows.append((tt, ct, nc, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    n = len(calls)
    calls_of = {r[3].split("(")[1].rstrip(")"): r[2] for r in rows}
    return {
        "calls_profiled": n,
        "note": "cProfile inflates per-call costs; read the shares, not the absolute times",
        "top_by_own_time": [
            {
                "function": where,
                "calls_per_decision": round(nc / n, 1),
                "own_us_per_decision": round(tt / n * 1e6, 2),
                "share_of_total": round(tt / total, 3),
            }
            for tt, _ct, nc, where in rows[:8]
        ],
        "grants_tested_per_decision": round(calls_of.get("is_within", 0) / n, 1),
    }


def build_breakdown(engine: Any) -> dict[str, Any]:
    """Where the ~1 s of an index rebuild goes: fetching rows vs making objects."""
    columns = (
        RoleAssignment.id,
        RoleAssignment.principal_id,
        RoleAssignment.role_definition_id,
        RoleAssignment.scope_key,
        RoleAssignment.scope,
    )
    out: dict[str, Any] = {}
    for label, collect in (("gc_enabled", True), ("gc_disabled", False)):
        gc.collect()
        if not collect:
            gc.disable()
        t = time.perf_counter()
        AccessEngine(engine).index()
        out[f"whole_first_index_{label}_ms"] = round((time.perf_counter() - t) * 1000)
        gc.enable()
    gc.collect()
    gc.disable()  # the steps below, without collector passes over this process's large heap
    with engine.connect() as c:
        t = time.perf_counter()
        rows = c.execute(select(*columns)).all()
        out["fetch_100k_assignments_sqlalchemy_ms"] = round((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        c.exec_driver_sql(
            "SELECT id, principal_id, role_definition_id, scope_key, scope FROM role_assignments"
        ).all()
        out["fetch_100k_assignments_driver_sql_ms"] = round((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        grants: dict[str, list[Grant]] = defaultdict(list)
        for id_, principal, role_id, key, scope in rows:
            grants[principal].append(Grant(id_, principal, role_id, key, scope))
        out["make_100k_grant_dataclasses_ms"] = round((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        tuples: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for row in rows:
            tuples[row[1]].append(tuple(row))
        out["same_as_plain_tuples_ms"] = round((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        members = c.execute(select(GroupMember.member_id, GroupMember.group_id)).all()
        groups_of: dict[str, set[str]] = defaultdict(set)
        for member, group in members:
            groups_of[member].add(group)
        out["fetch_and_index_memberships_ms"] = round((time.perf_counter() - t) * 1000)
        out["membership_rows"] = len(members)
    gc.enable()
    return out


API_STEPS = (
    ("ArmApi._run (all but HTTP/TLS/routing)", "arm.py", "_run"),
    ("validate_access_token", "validation.py", "validate_access_token"),
    ("  AuthorityCache.current (directory generation read)", "cache.py", "current"),
    ("  PyJWT decode (RS256 verify included)", "api_jwt.py", "decode"),
    ("AccessEngine.check", "engine.py", "check"),
    ("  AccessEngine.index (two generation reads)", "engine.py", "index"),
    ("handler: show_resource", "api.py", "show_resource"),
    ("handler: put_group", "api.py", "put_group"),
    ("Session.commit (handler transaction)", "session.py", "commit"),
    ("ArmApi._audit (second transaction)", "arm.py", "_audit"),
    ("Response.__init__ (JSON render)", "responses.py", "__init__"),
)


def api_handler_profile(n: int, args: argparse.Namespace, args_top: int = 25) -> dict[str, Any]:
    """The management API's Python cost per request without HTTP, TLS or uvicorn: a real
    `keyless serve` creates the data (tenant, admin, a resource group and an app) and is
    stopped; then the same ASGI app is built in this process and called through
    httpx.ASGITransport, with ArmApi's thread-pool hop made inline so cProfile sees it."""
    import asyncio

    import httpx

    import keyless.access.arm as arm_module
    from keyless.authority.context import Authority
    from keyless.authority.masterkey import MasterKey
    from keyless.server.app import create_app
    from keyless.store.engine import open_engine
    from keyless.store.location import default_store_url
    from tests.support.server import running_server

    work = Path(tempfile.mkdtemp(prefix="keyless-profile-api-"))
    try:
        data_dir = work / "data"
        with running_server(data_dir) as server:
            token = server.admin_token()
            endpoint = server.endpoint
            rg = f"/subscriptions/{server.subscription_id}/resourceGroups/bench-rg"
            app_path = f"{rg}/providers/Keyless.Web/apps/bench-app"
            headers = {"Authorization": f"Bearer {token}"}
            with server.http() as http:
                http.put(rg, json={"location": "local"}, headers=headers).raise_for_status()
                http.put(
                    app_path,
                    json={
                        "properties": {"command": ["true"]},
                        "identity": {"type": "SystemAssigned"},
                    },
                    headers=headers,
                ).raise_for_status()
        engine = open_engine(default_store_url(data_dir))
        authority = Authority.create(engine, MasterKey.load(data_dir / "master.key"), endpoint, [])

        async def inline(fn: Any, *a: Any, **k: Any) -> Any:
            return fn(*a, **k)

        arm_module.run_in_threadpool = inline  # type: ignore[attr-defined,assignment]
        app = create_app(authority, run_maintenance=False)
        out: dict[str, Any] = {
            "requests_each": n,
            "machine_busy_pct_before": (
                ad.wait_until_idle(args.wait_idle) if args.wait_idle > 0 else ad.machine_busy_pct()
            ),
        }

        async def drive() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=endpoint) as client:
                cases = (
                    ("get_app", lambda: client.get(app_path, headers=headers)),
                    (
                        "put_resource_group_same_tags",
                        lambda: client.put(
                            rg, json={"location": "local", "tags": {"b": "1"}}, headers=headers
                        ),
                    ),
                )
                for name, call in cases:
                    for _ in range(50):
                        assert (await call()).status_code == 200
                    t0 = time.perf_counter()
                    for _ in range(n):
                        await call()
                    plain_us = (time.perf_counter() - t0) / n * 1e6
                    profiler = cProfile.Profile()
                    profiler.enable()
                    for _ in range(n):
                        await call()
                    profiler.disable()
                    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
                    steps = {}
                    for label, file_part, func in API_STEPS:
                        total = sum(
                            row[3]
                            for (fn, _ln, fname), row in stats.items()
                            if fname == func and fn.endswith(file_part)
                        )
                        if total:
                            steps[label] = round(total / n * 1e6, 1)
                    sql = sum(
                        row[0]
                        for (fn, _ln, fname), row in stats.items()
                        if "execute' of 'sqlite3.Cursor" in fname
                    )
                    commits = sum(
                        row[0]
                        for (fn, _ln, fname), row in stats.items()
                        if "commit' of 'sqlite3.Connection" in fname
                    )
                    top = sorted(
                        (
                            (row[3] / n * 1e6, row[0] / n, f"{Path(fn).name}:{ln} {fname}")
                            for (fn, ln, fname), row in stats.items()
                        ),
                        reverse=True,
                    )[:args_top]
                    out[name] = {
                        "us_per_request_unprofiled": round(plain_us, 1),
                        "top_cumulative_us_calls_per_request": [
                            [round(t, 1), round(c, 1), f] for t, c, f in top
                        ],
                        "cprofile_cumulative_us_per_request": steps,
                        "sqlite_statements_per_request": round(sql / n, 1),
                        "sqlite_commits_per_request": round(commits / n, 1),
                    }

        asyncio.run(drive())

        # The same steps unprofiled, one at a time (cProfile inflates Python-heavy code).
        import jwt
        from sqlalchemy.orm import Session

        from keyless.authority.validation import validate_access_token
        from keyless.store import audit
        from keyless.store.models import Subscription

        access = AccessEngine(engine)
        subscription_id = rg.split("/")[2]
        record = audit.AuditRecord(
            actor="x", action="a", target=rg, result="succeeded", trace_id="t", details={}
        )

        def session_get() -> None:
            with Session(engine) as session, session.begin():
                session.get(Subscription, subscription_id)

        def audit_write() -> None:
            with engine.begin() as connection:
                audit.write(connection, record)

        steps: dict[str, Callable[[], Any]] = {
            "validate_access_token": lambda: validate_access_token(authority, token, "management"),
            "  jwt.get_unverified_header (1 of 3 token parses)": lambda: jwt.get_unverified_header(
                token
            ),
            "  AuthorityCache.current (directory generation read)": authority.cache.current,
            "AccessEngine.index (two generation reads)": access.index,
            "Session + begin + get(Subscription) + commit": session_get,
            "audit write in its own transaction": audit_write,
        }
        micro: dict[str, float] = {}
        for label, fn in steps.items():
            for _ in range(50):
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            micro[label] = round((time.perf_counter() - t0) / n * 1e6, 1)
        out["unprofiled_step_us"] = micro
        out["bearer_token_chars"] = len(token)
        engine.dispose()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def generation_reads(engine: Any, n: int = 5000) -> dict[str, Any]:
    both = select(StoreState.name, StoreState.value).where(
        StoreState.name.in_([GENERATION, ACCESS_GENERATION])
    )
    raw_sql = "SELECT name, value FROM store_state WHERE name IN (?, ?)"

    def as_src() -> None:
        with engine.connect() as c:
            read_generation(c), read_generation(c, ACCESS_GENERATION)

    def one_statement() -> None:
        with engine.connect() as c:
            dict(c.execute(both).all())

    def driver_sql() -> None:
        with engine.connect() as c:
            dict(c.exec_driver_sql(raw_sql, (GENERATION, ACCESS_GENERATION)).all())

    db = engine.url.database
    raw = sqlite3.connect(db)

    def sqlite_floor() -> None:
        dict(raw.execute(raw_sql, (GENERATION, ACCESS_GENERATION)).fetchall())

    out = {}
    for name, fn in (
        ("as_src_two_statements_built_per_call", as_src),
        ("one_prebuilt_statement", one_statement),
        ("exec_driver_sql", driver_sql),
        ("raw_sqlite3_floor", sqlite_floor),
    ):
        for _ in range(200):
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        s = ad.summarize_ns(times)
        out[name] = {"p50_us": s["p50_us"], "p99_us": s["p99_us"]}
    raw.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--decisions", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--api-requests", type=int, default=500)
    p.add_argument("--skip-api", action="store_true")
    p.add_argument("--skip-access", action="store_true")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to this long before timing until the machine is at most 15%% busy",
    )
    args = p.parse_args()
    if not 1000 <= args.decisions <= 1_000_000:
        p.error("--decisions must be 1000..1000000")
    report: dict[str, Any] = {}
    if not args.skip_access:
        work = Path(tempfile.mkdtemp(prefix="keyless-profile-access-"))
        try:
            _data, engine, decisions, _counts, _ = ad.prepare(args.seed, args.decisions, work)
            access = AccessEngine(engine)
            index = access.index()
            report["machine_busy_pct_before"] = (
                ad.wait_until_idle(args.wait_idle) if args.wait_idle > 0 else ad.machine_busy_pct()
            )
            ad.time_calls(index.check, decisions)  # warm src's caches
            ad.log("profile ...")
            report["profile_src_check"] = profile_check(index, decisions[:20_000])

            ad.log("prototype ...")
            t0 = time.perf_counter()
            proto = ScopeFirstIndex(index)
            build_extra_ms = (time.perf_counter() - t0) * 1000
            ad.time_calls(proto.check, decisions)  # same warm-up
            src_times, src_allowed = ad.time_calls(index.check, decisions)
            proto_times, proto_allowed = ad.time_calls(proto.check, decisions)
            cpu = time.thread_time_ns
            src_cpu, _ = ad.time_calls(index.check, decisions, cpu)
            proto_cpu, _ = ad.time_calls(proto.check, decisions, cpu)
            mismatches = sum(a != b for a, b in zip(src_allowed, proto_allowed, strict=True))
            categories = sorted({d[4] for d in decisions})
            report["prototype_scope_first_index"] = {
                "answers_differ_from_src": mismatches,
                "decisions": len(decisions),
                "extra_build_ms": round(build_extra_ms, 1),
                "src_wall": ad.summarize_ns(src_times),
                "prototype_wall": ad.summarize_ns(proto_times),
                "src_thread_cpu": ad.summarize_ns(src_cpu),
                "prototype_thread_cpu": ad.summarize_ns(proto_cpu),
                "by_category_thread_cpu_p99_us": {
                    c: {
                        "src": ad.summarize_ns(
                            [t for t, d in zip(src_cpu, decisions, strict=True) if d[4] == c]
                        )["p99_us"],
                        "prototype": ad.summarize_ns(
                            [t for t, d in zip(proto_cpu, decisions, strict=True) if d[4] == c]
                        )["p99_us"],
                    }
                    for c in categories
                },
                "cpu_share_of_passes": ad.CPU_SHARE[-4:],
            }

            ad.log("gc ...")
            gc_report = {}
            on, _ = ad.time_calls(index.check, decisions)
            gc_report["gc_enabled"] = ad.summarize_ns(on)
            gc.disable()
            off, _ = ad.time_calls(index.check, decisions)
            gc.enable()
            gc_report["gc_disabled"] = ad.summarize_ns(off)
            gc.collect()
            gc.freeze()
            frozen, _ = ad.time_calls(index.check, decisions)
            gc.unfreeze()
            gc_report["after_gc_freeze"] = ad.summarize_ns(frozen)
            report["gc_effect_on_src_check"] = gc_report

            ad.log("index build ...")
            report["index_build_breakdown"] = build_breakdown(engine)
            ad.log("generation reads ...")
            report["generation_read_per_call"] = generation_reads(engine)
            engine.dispose()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if not args.skip_api:
        ad.log("management API handler in-process ...")
        report["management_api_in_process"] = api_handler_profile(args.api_requests, args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
