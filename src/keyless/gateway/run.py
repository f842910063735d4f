"""`keyless gateway serve`: the token gateway as its own process, beside `keyless serve`.

It opens the same store and data directory as the server: token checks use the authority's
in-process caches (JWKS from the store, rebuilt when the directory generation moves), so no
bind ever calls the authority over HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.gateway.decision import BindChecker
from keyless.gateway.names import hba_template
from keyless.gateway.server import Gateway
from keyless.gateway.settings import (
    DEFAULT_PORT,
    GatewaySettings,
    GatewaySettingsError,
    server_tls_context,
)
from keyless.store.engine import open_engine
from keyless.store.migrate import upgrade


@dataclass
class GatewayOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: bool = False
    store_url: str | None = None
    endpoint: str | None = None  # the authority's public URL; default: from config.json


def serve(options: GatewayOptions) -> None:
    paths = DataDir(options.data_dir.expanduser().resolve())
    if not paths.master_key.exists():
        raise GatewaySettingsError(
            f"{paths.root} is not a Keyless data directory; run `keyless init` first"
        )
    config = ServerConfig.load_or_default(paths)
    master = MasterKey.load(paths.master_key)
    settings = GatewaySettings(
        host=options.host,
        port=options.port,
        tls=server_tls_context(paths.root, master) if options.tls else None,
    )
    settings.check()
    engine = open_engine(options.store_url or config.effective_store_url(paths))
    try:
        upgrade(engine)
        authority = Authority.create(engine, master, options.endpoint or config.endpoint(), [])
        try:
            asyncio.run(_run(settings, authority))
        finally:
            authority.issuer_keys.close()
    finally:
        engine.dispose()


async def _run(settings: GatewaySettings, authority: Authority) -> None:
    gateway = Gateway(settings, BindChecker(authority), authority.grant_log)
    try:
        await gateway.start()
    except OSError as exc:
        raise GatewaySettingsError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); is another "
            "gateway running? Pick another port with --port"
        ) from None
    example = hba_template(settings.host, gateway.port, tls=settings.tls is not None)
    print(f"keyless gateway listening on {gateway.url}", file=sys.stderr)
    print(f"pg_hba.conf: {example}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.close()
