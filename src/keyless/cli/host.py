"""`keyless app run`: run an app's process as that app (see keyless.host.runner)."""

from __future__ import annotations

import os
import shlex
from typing import Annotated, Any

import typer
from rich.markup import escape

from keyless.base.vault_domain import VaultDomain
from keyless.cli.options import DataDirOption, paths_for
from keyless.cli.output import fail, note
from keyless.cli.resources import (
    APP_TYPE,
    GroupOption,
    NameOption,
    SubscriptionOption,
    app_app,
    resource_path,
    subscription_of,
)
from keyless.cli.session import ApiClient, CliError
from keyless.host.endpoint import IMDS_PATH, TokenError
from keyless.host.references import (
    ReferenceWatch,
    Resolution,
    Resolver,
    azure_notices,
    has_references,
    resolve_settings,
)
from keyless.host.runner import (
    RESTART_GRACE_S,
    Restarts,
    RunningEndpoint,
    child_environment,
    run_child,
    serve_endpoint,
)


def _fetcher(client: ApiClient, app_path: str) -> Any:
    def fetch(resource: str, selector: dict[str, str]) -> dict[str, Any]:
        response = client.request(
            "POST", f"{app_path}/identityToken", {"resource": resource, **selector}
        )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"the authority answered HTTP {response.status_code}"
            if response.status_code >= 500:
                raise RuntimeError(message)
            raise TokenError(response.status_code, message)
        result: dict[str, Any] = response.json()
        return result

    return fetch


@app_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def app_run(
    ctx: typer.Context,
    group: GroupOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    process_binding: Annotated[
        bool,
        typer.Option(help="Serve tokens only to the app's own process tree (Linux)."),
    ] = True,
    allow_unresolved_references: Annotated[
        bool,
        typer.Option(
            "--allow-unresolved-references",
            help="Start even if a vault reference cannot be resolved: the setting keeps the "
            "literal reference (as in Azure), with a warning.",
        ),
    ] = False,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            metavar="SECONDS",
            min=1.0,
            help="Re-read the vault references that follow the latest version every SECONDS "
            "and restart the app (SIGTERM, then start it again) when a value changed.",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run the app's command (or the one after --) as the app: its settings as environment
    variables (vault references resolved with the app's identity), and a managed identity
    endpoint that serves its identities' tokens."""
    sub = subscription_of(data_dir, subscription)
    app_path = resource_path(sub, group, APP_TYPE, name)
    client = ApiClient(paths_for(data_dir))
    try:
        app = client.call("GET", app_path)
    except CliError as exc:
        fail(str(exc))
    properties = app.get("properties", {})
    command = list(ctx.args) or list(properties.get("command") or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail(
            f"app {name!r} has no command; set one (`keyless app create -g {group} -n {name} "
            '--command "python app.py"`) or give it after --'
        )
    if not app.get("identity") or app["identity"].get("type") in (None, "None"):
        note(
            f"app {name!r} has no managed identity; its token requests will be refused "
            f"(`keyless app identity assign -g {group} -n {name}`)"
        )
    settings = {str(k): str(v) for k, v in (properties.get("appSettings") or {}).items()}
    fetch = _fetcher(client, app_path)
    resolver = None
    if has_references(settings):
        resolver = Resolver(
            fetch,
            client.http,
            VaultDomain.from_endpoint(client.endpoint),
            properties.get("keyVaultReferenceIdentity"),
            f"-g {group} -n {name}",
        )
    resolution = _resolve(settings, client, resolver, allow_unresolved_references)
    with serve_endpoint(fetch, bind_to_process=process_binding) as endpoint:
        restarts, watcher = None, None
        if watch is not None:
            restarts = Restarts(RESTART_GRACE_S, say=lambda m: note(escape(m)))
            watcher = _watcher(resolution, resolver, watch, restarts, endpoint)
        runs = 0

        def started(pid: int) -> None:
            nonlocal runs
            endpoint.serve_to(pid)
            if runs:
                note(f"the app is running again (pid {pid})")
            runs += 1

        try:
            if watcher is not None:
                watcher.start()
            code = run_child(
                command,
                child_environment(dict(os.environ), resolution.settings, endpoint),
                properties.get("workingDirectory"),
                started=started,
                restarts=restarts,
            )
        except RuntimeError as exc:
            fail(f"{exc} (command: {shlex.join(command)})")
        finally:
            if watcher is not None:
                watcher.stop()
    raise typer.Exit(code)


def _resolve(
    settings: dict[str, str], client: ApiClient, resolver: Resolver | None, allow: bool
) -> Resolution:
    """The settings with their vault references resolved; fails (or, if allowed, warns)
    naming each one that cannot be."""
    resolution = resolve_settings(settings, VaultDomain.from_endpoint(client.endpoint), resolver)
    for line in azure_notices(settings):
        note(escape(line))
    for name, resolved in sorted(resolution.resolved.items()):
        ref = resolved.reference
        note(
            escape(
                f"app setting {name}: resolved its vault reference ({ref.vault}/{ref.secret}, "
                f"version {resolved.version})"
            )
        )
    if resolution.unresolved and not allow:
        reasons = "\n".join(f"- {u.message()}" for u in resolution.unresolved)
        fail(
            escape(
                f"the app was not started: {len(resolution.unresolved)} vault "
                f"reference(s) cannot be resolved\n{reasons}\n(to start it anyway, each such "
                "setting keeping its literal reference, add --allow-unresolved-references)"
            )
        )
    for unresolved in resolution.unresolved:
        note(escape(f"warning: {unresolved.message()}; the setting keeps the literal reference"))
    return resolution


def _watcher(
    resolution: Resolution,
    resolver: Resolver | None,
    interval: float,
    restarts: Restarts,
    endpoint: RunningEndpoint,
) -> ReferenceWatch | None:
    def restart(settings: dict[str, str], reasons: list[str]) -> bool:
        if not restarts.request(child_environment(dict(os.environ), settings, endpoint)):
            return False
        for reason in reasons:
            note(escape(reason))
        note(f"restarting the app: SIGTERM, then up to {restarts.grace:g}s for it to end")
        return True

    watcher = ReferenceWatch(resolution, resolver, interval, restart, say=lambda m: note(escape(m)))
    if not watcher.watched:
        note(
            "--watch: no vault reference here follows the latest version (a reference with a "
            "version never changes); nothing to watch"
        )
        return None
    note(
        f"watching the vault references of {', '.join(watcher.watched)} every {interval:g}s; "
        "a new version restarts the app"
    )
    return watcher


@app_app.command("serve-imds")
def app_serve_imds(
    group: GroupOption,
    name: NameOption,
    port: Annotated[int, typer.Option(help="Loopback port.")] = 50342,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Serve the app's identities to every process of this machine at the IMDS path, as a VM's
    identity is (no header secret, `Metadata: true` required). Point clients at it with
    AZURE_POD_IDENTITY_AUTHORITY_HOST. Ctrl-C stops it."""
    import signal
    import threading

    sub = subscription_of(data_dir, subscription)
    app_path = resource_path(sub, group, APP_TYPE, name)
    client = ApiClient(paths_for(data_dir))
    try:
        client.call("GET", app_path)
    except CliError as exc:
        fail(str(exc))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _s, _f: stop.set())
    try:
        with serve_endpoint(
            _fetcher(client, app_path), bind_to_process=False, port=port, shared_imds=True
        ) as ep:
            note(
                f"serving the identities of app {name!r} on {ep.base}{IMDS_PATH}\n"
                f"  export AZURE_POD_IDENTITY_AUTHORITY_HOST={ep.base}"
            )
            stop.wait()
    except RuntimeError as exc:
        fail(str(exc))
