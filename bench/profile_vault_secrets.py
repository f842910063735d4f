"""Where a secret read costs its time: py-spy on the server workers while wrk reads a secret.

    .venv/bin/pip install py-spy        # once; py-spy needs ptrace (root, or CAP_SYS_PTRACE)
    .venv/bin/python bench/profile_vault_secrets.py [--workers 2] [--connections 16]
                                                    [--duration 12] [--gil]

Builds the world of bench/vault_secrets.py (server, vault, secret, reader with a token), puts
it under wrk load, samples every worker with `py-spy record --format raw`, and prints the
buckets and top functions the way bench/profile_token_endpoint.py does (stderr: readable;
stdout: JSON). The collapsed stacks stay in --out.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import profile_token_endpoint as pt
import token_endpoint as tb
import vault_secrets as vb
from harness.machine import machine_info
from harness.report import publish
from harness.report import report as harness_report
from harness.wrk import ensure_wrk


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=12, help="seconds of load (all but 2 sampled)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples/s")
    p.add_argument("--gil", action="store_true", help="only sample the thread holding the GIL")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--out", type=Path, default=Path("/tmp/keyless-profile-vault"))
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("py-spy is missing: .venv/bin/pip install py-spy")
    ensure_wrk(False, "bench/profile_vault_secrets.py")
    args.out.mkdir(parents=True, exist_ok=True)
    with tb.running_server(args.workers, keep=False) as server:
        world = vb.build_world(server)
        vb.run_wrk(world, args.connections, 2, 200, True)  # warm-up
        workers = pt.worker_pids(server, args.workers)
        tb.log(f"sampling workers {workers}")
        result: dict[str, Any] = {}

        def load() -> None:
            cpu0 = server.cpu_seconds()
            raw = vb.run_wrk(world, args.connections, args.duration, 200, True)
            cpu = server.cpu_seconds() - cpu0
            result["row"] = vb.summarise("read", args.connections, raw, cpu, 200)

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(1.0)
        spies, raw_files = [], []
        for pid in workers:
            out = args.out / f"read-w{args.workers}-c{args.connections}-{pid}.txt"
            raw_files.append(out)
            cmd = [
                py_spy, "record", "--pid", str(pid),
                "--duration", str(max(1, int(args.duration) - 2)),
                "--rate", str(args.rate), "--format", "raw", "--output", str(out),
                "--nonblocking", *(["--gil"] if args.gil else []),
            ]  # fmt: skip
            spies.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        for spy in spies:
            _, err = spy.communicate(timeout=args.duration + 60)
            if spy.returncode != 0:
                tb.log(f"py-spy failed: {err.decode()[-1000:]}")
        thread.join(timeout=args.duration + 120)
    report = {
        "load": result.get("row"),
        "profile": pt.analyse([f for f in raw_files if f.exists()], args.top),
        "raw_stacks": [str(f) for f in raw_files],
    }
    prof = report["profile"]
    tb.log(f"load: {report['load']}")
    for name, share in prof["buckets_pct"].items():
        tb.log(f"  {share:5.1f}%  {name}")
    tb.log("top (inclusive):")
    for frame, share in prof["top_inclusive_pct"]:
        tb.log(f"  {share:5.1f}%  {frame}")
    publish(
        harness_report(
            "profile of vault secret reads under load (py-spy)",
            machine_info(),
            {"load": report.pop("load"), "profile": report.pop("profile")},
            **report,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
