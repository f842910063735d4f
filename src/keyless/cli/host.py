"""`keyless app run`: run an app's process as that app (see keyless.host.runner)."""

from __future__ import annotations

import os
import shlex
from typing import Annotated, Any

import typer

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
from keyless.host.runner import child_environment, run_child, serve_endpoint


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
    data_dir: DataDirOption = None,
) -> None:
    """Run the app's command (or the one after --) as the app: its settings as environment
    variables, and a managed identity endpoint that serves its identities' tokens."""
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
    with serve_endpoint(_fetcher(client, app_path), bind_to_process=process_binding) as endpoint:
        env = child_environment(dict(os.environ), settings, endpoint)
        try:
            code = run_child(
                command,
                env,
                properties.get("workingDirectory"),
                started=endpoint.child_pid.append,
            )
        except RuntimeError as exc:
            fail(f"{exc} (command: {shlex.join(command)})")
    raise typer.Exit(code)


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
