"""The ASGI application: every part's routes behind one HTTPS listener."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from keyless.access import api as access_api
from keyless.access.arm import ArmApi
from keyless.access.engine import AccessEngine
from keyless.access.existence import register_lookups
from keyless.authority import admin_api, routes
from keyless.authority.config import DataDir
from keyless.authority.context import Authority
from keyless.authority.masterkey import MasterKey
from keyless.authority.principal_hooks import on_principal_removed
from keyless.base.vault_domain import VaultDomain
from keyless.connector import api as connector_api
from keyless.gateway import api as gateway_api
from keyless.gateway.mappings import remove_principal_mappings
from keyless.host import api as host_api
from keyless.resources import api as resources_api
from keyless.resources import federation, manager
from keyless.server.errors import ErrorBoundary
from keyless.server.fastpath import TokenFastPath
from keyless.server.maintenance import maintenance_loop
from keyless.server.openapi import openapi_document
from keyless.server.requestlog import RequestLog
from keyless.store.engine import open_engine
from keyless.vault.api import VaultHosts, VaultService
from keyless.vault.resource import register_vault_type


def create_app(authority: Authority, run_maintenance: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(maintenance_loop(authority)) if run_maintenance else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            authority.issuer_keys.close()

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "endpoint": authority.endpoint})

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(
            {"error": {"code": "NotFound", "message": "no such route on this Keyless server"}},
            status_code=404,
        )

    async def not_allowed(request: Request, _exc: Exception) -> Response:
        # RFC 9110 15.5.6: a 405 names the methods the path does take. A path may be served
        # by several routes (one per method), so all of them are asked, not only the first.
        methods: set[str] = set()
        for route in all_routes:
            matched = isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            if matched and isinstance(route, Route) and route.methods:
                methods |= route.methods
        return JSONResponse(
            {
                "error": {
                    "code": "MethodNotAllowed",
                    "message": "this route does not take that HTTP method",
                }
            },
            status_code=405,
            headers={"Allow": ", ".join(sorted(methods))},
        )

    healthz = Route("/healthz", health)
    healthz.keyless_authorization = "public"  # type: ignore[attr-defined]

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    openapi_route = Route("/openapi.json", openapi)
    openapi_route.keyless_authorization = "public"  # type: ignore[attr-defined]
    access = AccessEngine(authority.engine)
    arm = ArmApi(authority, access)
    vault_domain = VaultDomain.from_endpoint(authority.endpoint)
    register_vault_type(vault_domain)
    on_principal_removed(remove_principal_mappings)
    # Access checks that a role assignment's scope exists through the resources layer above it.
    register_lookups(manager.find_group, manager.find_resource)
    vaults = VaultService(authority, access, vault_domain)
    all_routes: list[BaseRoute] = [
        healthz,
        openapi_route,
        *routes.build_routes(authority),
        *admin_api.build_routes(authority),
        # Authorization routes first: `.../providers/Keyless.Authorization/roleAssignments`
        # would otherwise match the generic `.../providers/{namespace}/{type}` list.
        *access_api.build_routes(arm, access),
        *host_api.build_routes(arm, authority),
        *federation.build_routes(arm),
        *gateway_api.build_routes(arm),
        *connector_api.build_routes(arm, authority),
        *resources_api.build_routes(arm),
    ]
    document = openapi_document(all_routes)
    token = next(r for r in all_routes if isinstance(r, Route) and r.name == "token")
    return Starlette(
        routes=all_routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed},
        middleware=[
            # The token endpoint, ahead of the router (fastpath.py), behind its own boundary.
            Middleware(TokenFastPath, token_endpoint=token.app, vaults=vault_domain),
            Middleware(ErrorBoundary),
            # Requests for `{vault}.vault.{host}` go to the vault's data plane (issue #6).
            Middleware(VaultHosts, service=vaults),
        ],
    )


def authority_from_env() -> Authority:
    """Build the authority from the variables `keyless serve` sets before starting workers."""
    paths = DataDir(Path(os.environ["KEYLESS_DATA_DIR"]))
    engine = open_engine(os.environ["KEYLESS_SERVE_STORE_URL"])
    ca_files = [Path(p) for p in os.environ.get("KEYLESS_FEDERATION_CA", "").split(os.pathsep) if p]
    return Authority.create(
        engine, MasterKey.load(paths.master_key), os.environ["KEYLESS_SERVE_ENDPOINT"], ca_files
    )


def with_request_log(app: Starlette) -> Any:
    """The app, wrapped in the request log unless `keyless serve --log-level` is above info."""
    return RequestLog(app) if os.environ.get("KEYLESS_SERVE_LOG_REQUESTS") else app


def create_app_from_env() -> Any:
    app = with_request_log(create_app(authority_from_env()))
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Keep what a server process built at start-up (modules, the ORM's metadata, the routes)
    out of the garbage collector's full collections: they scanned all of it every time, and
    under load one took 50-250 ms, stopping the event loop and every request on it (the vault
    reads' p99). It lives as long as the process anyway; what becomes garbage later is still
    freed by reference counting. Called once per server process, after the app is built."""
    gc.collect()
    gc.freeze()
