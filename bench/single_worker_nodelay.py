"""Why `keyless serve --workers 1` answers every keep-alive request ~40 ms late.

    .venv/bin/python bench/single_worker_nodelay.py

With one worker, `keyless.server.run.serve` makes the listening socket itself
(`socket.socket(family, SOCK_STREAM)`, so `proto` is 0) and runs uvicorn under `asyncio.run`,
i.e. on asyncio's default event loop, not uvloop ("loop": "uvloop" only applies through
`uvicorn.run`). asyncio sets TCP_NODELAY on accepted connections only when the socket's
`proto` is IPPROTO_TCP, so Nagle's algorithm stays on; uvicorn writes the response head and
body separately, the body waits for the ACK of the head, and the client delays that ACK by
~40 ms. `--workers 2` goes through `uvicorn.run` (uvloop, which always sets TCP_NODELAY).

This script serves a trivial ASGI app with Keyless's own TLS settings (from a data directory
that `keyless init` creates; a real server is started once for that and stopped) in three
ways, as subprocesses on loopback, and times 50 sequential GETs on one keep-alive connection:

  as_src         socket(AF_INET, SOCK_STREAM) + asyncio.run   (what --workers 1 does)
  proto_tcp      socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) + asyncio.run
  uvloop         socket as src + an uvloop event loop

Prints one JSON document. Every server is stopped and the directory removed.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness.machine import machine_info
from harness.report import publish, report
from harness.server import Server, free_port

SERVER = r"""
import asyncio, socket, sys
from pathlib import Path
import uvicorn
from keyless.authority.config import DataDir
from keyless.authority.masterkey import MasterKey
from keyless.server.run import ServeOptions, _uvicorn_settings

variant, data_dir, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
paths = DataDir(data_dir)
settings = _uvicorn_settings(paths, MasterKey.load(paths.master_key), ServeOptions(data_dir))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


proto = socket.IPPROTO_TCP if variant == "proto_tcp" else 0
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(128)
server = uvicorn.Server(uvicorn.Config(app, **settings))
if variant == "uvloop":
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))
else:
    asyncio.run(server.serve(sockets=[sock]))
"""


def main() -> int:
    machine = machine_info()
    work = Path(tempfile.mkdtemp(prefix="keyless-nodelay-"))
    results: dict[str, float] = {}
    try:
        data_dir = work / "data"
        keyless = Server(data_dir)
        try:
            keyless.start()  # `keyless init` makes the data directory: CA, certificate, keys
        finally:
            keyless.stop()
        script = work / "server.py"
        script.write_text(SERVER)
        context = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
        for variant in ("as_src", "proto_tcp", "uvloop"):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, str(script), variant, str(data_dir), str(port)],
                env=keyless.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                base = f"https://localhost:{port}"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        httpx.get(base, verify=context, timeout=2)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                with httpx.Client(base_url=base, verify=context) as http:
                    for _ in range(10):
                        http.get("/")
                    samples = []
                    for _ in range(50):
                        t0 = time.perf_counter()
                        http.get("/")
                        samples.append(time.perf_counter() - t0)
                samples.sort()
                results[f"{variant}_p50_ms"] = round(samples[25] * 1000, 2)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(
        report(
            "why `keyless serve --workers 1` answers keep-alive requests late (TCP_NODELAY)",
            machine,
            {"sequential_keepalive_https_get": results},
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
