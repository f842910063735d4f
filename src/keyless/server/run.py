"""`keyless serve`: HTTPS on TCP for everything, plus the local sign-in socket and the token
gateway (plain LDAP on loopback, for PostgreSQL's `ldap` authentication).

The store is migrated and checked before the port opens, so a misconfigured server fails at
start with a message, not at the first request. The TCP socket is shared by one worker process
per usable CPU unless `--workers N` says otherwise (`default_workers`); the sign-in socket stays
in the supervising process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyless.authority.config import DataDir, ServerConfig
from keyless.authority.context import Authority
from keyless.authority.keys import jwks_max_age_from_env, load_signer
from keyless.authority.local_login import serve_login_socket
from keyless.authority.masterkey import MasterKey, MasterKeyError
from keyless.authority.tls import (
    TlsFiles,
    issue_server_certificate,
    server_certificate_names,
    server_certificate_needs_renewal,
    server_key_password,
)
from keyless.base import loop
from keyless.base.errors import KeylessError
from keyless.base.vault_domain import tls_names_for
from keyless.gateway.decision import BindChecker
from keyless.gateway.server import Gateway
from keyless.gateway.settings import GatewaySettings
from keyless.server.app import (
    authority_from_env,
    create_app,
    freeze_startup_heap,
    with_request_log,
)
from keyless.server.requestlog import LEVELS, banner, logs_requests
from keyless.server.workers import OwnSocketWorkers, reuse_port_socket
from keyless.store.engine import open_engine
from keyless.store.migrate import upgrade
from keyless.store.models import SigningKey, Tenant

GATEWAY_HOST = "127.0.0.1"
# The CLI's bound on --workers; the default never goes past it either.
MAX_WORKERS = 64


def default_workers() -> int:
    """One worker per CPU this process may run on: a token costs CPU (an RSA signature and the
    HTTP/TLS stack), and one Python process uses one core at most, so fewer workers than
    CPUs leaves the machine idle under load. The affinity mask, not the machine's core count,
    is what a container or `taskset` allows."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform (macOS)
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_WORKERS))


class ServeError(KeylessError, RuntimeError):
    """The server cannot start; the message says what to do."""


@dataclass
class ServeOptions:
    data_dir: Path
    host: str | None = None
    port: int | None = None
    store_url: str | None = None
    workers: int | None = None  # None: default_workers()
    federation_ca: list[Path] | None = None
    log_level: str = "info"  # info logs every request (keyless.server.requestlog)
    gateway_port: int | None = None  # None: the data directory's (8389 unless init said); 0: off


def _prepare(options: ServeOptions) -> tuple[DataDir, ServerConfig, str, str, str | None]:
    paths = DataDir(options.data_dir.expanduser().resolve())
    if not paths.master_key.exists():
        raise ServeError(f"{paths.root} is not a Keyless data directory; run `keyless init` first")
    config = ServerConfig.load_or_default(paths)
    try:
        jwks_max_age_from_env()  # refused here with its message, not in every worker
    except ValueError as exc:
        raise ServeError(str(exc)) from None
    master = MasterKey.load(paths.master_key)
    store_url = options.store_url or config.effective_store_url(paths)
    engine = open_engine(store_url)
    try:
        upgrade(engine)
        with Session(engine) as session:
            if session.scalars(select(Tenant.id)).first() is None:
                raise ServeError(
                    "the store has no tenant; run `keyless init` with the same --store-url"
                )
            _check_master_key(session, master)
            tenant = session.scalars(select(Tenant.id).where(Tenant.is_default)).first()
    finally:
        engine.dispose()
    tls = TlsFiles.in_dir(paths.root)
    port = options.port if options.port is not None else config.port
    endpoint = config.endpoint(port)
    # Vault hosts (`*.vault.{public host}`, issue #6): a data directory made before vaults gets
    # its server certificate reissued by the same CA once, so clients keep trusting it.
    wanted = [*config.tls_names, *tls_names_for(endpoint)]
    if server_certificate_needs_renewal(tls, wanted):
        names = list(dict.fromkeys([*server_certificate_names(tls), *wanted]))
        issue_server_certificate(tls, master, names)
    return paths, config, store_url, endpoint, tenant


def _check_master_key(session: Session, master: MasterKey) -> None:
    """Open one signing key now, so a master key from another data directory fails at start."""
    active = session.scalars(select(SigningKey).where(SigningKey.status == "active")).first()
    if active is None:
        return
    try:
        load_signer(master, active)
    except MasterKeyError as exc:
        raise ServeError(str(exc)) from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = loop.tcp_listening_socket(family)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port} ({exc.strerror}); is another server running? "
            "Pick another port with --port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_settings(paths: DataDir, master: MasterKey, options: ServeOptions) -> dict[str, Any]:
    tls = TlsFiles.in_dir(paths.root)
    return {
        "ssl_certfile": str(tls.server_cert),
        "ssl_keyfile": str(tls.server_key),
        "ssl_keyfile_password": server_key_password(master),
        # uvicorn's own messages (startup, errors) only from warning up unless debugging; the
        # request log is Keyless's (requestlog), which leaves secrets out.
        "log_level": "debug" if options.log_level == "debug" else "warning",
        "access_log": False,
        "http": "httptools",
        "loop": "uvloop",
        "timeout_keep_alive": 30,
        # Closing an idle keep-alive TLS connection waits for the client's close_notify (up to
        # 30 s in uvloop); clients that pool connections never send it, so bound the stop.
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }


def serve(options: ServeOptions) -> None:
    paths, config, store_url, endpoint, tenant = _prepare(options)
    host = options.host or config.host
    port = options.port if options.port is not None else config.port
    os.environ["KEYLESS_DATA_DIR"] = str(paths.root)
    os.environ["KEYLESS_SERVE_STORE_URL"] = store_url
    os.environ["KEYLESS_SERVE_ENDPOINT"] = endpoint
    os.environ["KEYLESS_SERVE_LOG_REQUESTS"] = "1" if logs_requests(options.log_level) else ""
    os.environ["KEYLESS_FEDERATION_CA"] = os.pathsep.join(
        str(p) for p in options.federation_ca or []
    )
    settings = _uvicorn_settings(paths, MasterKey.load(paths.master_key), options)
    sock = _bind(host, port)
    gateway_port = options.gateway_port if options.gateway_port is not None else config.gateway_port
    state: dict[str, Any] = {"endpoint": endpoint, "pid": os.getpid(), "host": host, "port": port}
    if gateway_port:
        state["gateway"] = {"host": GATEWAY_HOST, "port": gateway_port, "scheme": "ldap"}
    paths.server_state.write_text(json.dumps(state) + "\n")
    if LEVELS.index(options.log_level) <= LEVELS.index("warning"):
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        gateway = f"{GATEWAY_HOST}:{gateway_port}" if gateway_port else None
        banner(endpoint, listen, tenant, gateway, str(paths.login_socket))
    workers = options.workers or default_workers()
    try:
        if workers > 1:
            sock.close()  # uvicorn binds it again for its workers; we only checked it is free
            _serve_workers(settings, host, port, workers, paths, gateway_port)
        else:
            loop.run(_serve_single(settings, sock, paths, gateway_port))
    finally:
        _remove_runtime_files(paths)
        sock.close()


def _remove_runtime_files(paths: DataDir) -> None:
    for path in (paths.server_state, paths.login_socket):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, which ends the process before
    any `finally` runs; so the runtime files are removed as part of the shutdown itself."""

    def __init__(self, config: uvicorn.Config, paths: DataDir) -> None:
        super().__init__(config)
        self._paths = paths

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        _remove_runtime_files(self._paths)


async def _start_gateway(authority: Authority, port: int) -> Gateway | None:
    """The embedded token gateway; plain LDAP, so loopback only (`keyless gateway serve
    --tls` serves PostgreSQL servers on other machines)."""
    if not port:
        return None
    gateway = Gateway(
        GatewaySettings(host=GATEWAY_HOST, port=port), BindChecker(authority), authority.grant_log
    )
    try:
        await gateway.start()
    except OSError as exc:
        raise ServeError(
            f"cannot start the token gateway on {GATEWAY_HOST}:{port} ({exc.strerror}); is "
            "another Keyless running? Give another port, e.g. `keyless init --gateway-port "
            f"{port + 1}` (PostgreSQL servers enabled for this Keyless name it), or "
            "--gateway-port 0 to run without it"
        ) from None
    return gateway


async def _serve_single(
    settings: dict[str, Any], sock: socket.socket, paths: DataDir, gateway_port: int
) -> None:
    authority = authority_from_env()
    gateway = await _start_gateway(authority, gateway_port)
    login = await serve_login_socket(authority, paths.login_socket)
    try:
        config = uvicorn.Config(with_request_log(create_app(authority)), **settings)
        freeze_startup_heap()
        await _Server(config, paths).serve(sockets=[sock])
    finally:
        login.close()
        if gateway is not None:
            await gateway.close()


def _serve_workers(
    settings: dict[str, Any],
    host: str,
    port: int,
    workers: int,
    paths: DataDir,
    gateway_port: int,
) -> None:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[ServeError] = []

    def login_thread() -> None:
        asyncio.set_event_loop(loop)
        authority = authority_from_env()
        try:
            loop.run_until_complete(_start_gateway(authority, gateway_port))
        except ServeError as exc:
            failure.append(exc)
            ready.set()
            return
        loop.run_until_complete(serve_login_socket(authority, paths.login_socket))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=login_thread, name="keyless-login", daemon=True)
    thread.start()
    ready.wait(10)
    if failure:
        raise failure[0]
    try:
        config = uvicorn.Config(
            "keyless.server.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **settings,
        )
        OwnSocketWorkers(config, lambda: reuse_port_socket(host, port)).run()
    finally:
        loop.call_soon_threadsafe(loop.stop)
