"""`keyless`: set up, run and administer a Keyless server."""

from __future__ import annotations

import inspect
import os
from enum import StrEnum
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.authority.config import default_data_dir
from keyless.cli import accounts as _accounts  # noqa: F401 - adds `ad sp/user update`
from keyless.cli import (
    ad,
    admin,
    gateway,
    host,
    postgres,
    resources,
    roles,
    shellenv,
    signin,
    vault,
)
from keyless.cli import appconfig as _appconfig  # noqa: F401 - adds app config, identity fic
from keyless.cli import connection as _connection  # noqa: F401 - adds `keyless app connection`
from keyless.cli import connection_change as _change  # noqa: F401 - connection update, repair
from keyless.cli.global_options import add_global_options
from keyless.cli.options import DataDirOption
from keyless.cli.output import emit, fail, note

app = typer.Typer(
    name="keyless",
    help="Passwordless connections: identities, short-lived tokens, and the services that check "
    "them.",
    no_args_is_help=True,
    # `keyless --install-completion` (bash, zsh, fish, PowerShell) and `--show-completion`.
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.add_typer(ad.app, name="ad")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.tenant_app, name="tenant")
app.add_typer(admin.audit_app, name="audit")
app.add_typer(resources.account_app, name="account")
app.add_typer(resources.group_app, name="group")
app.add_typer(resources.identity_app, name="identity")
app.add_typer(resources.app_app, name="app")
app.add_typer(roles.app, name="role")
app.add_typer(gateway.app, name="gateway")
app.add_typer(vault.vault_app, name="vault")
app.add_typer(postgres.postgres_app, name="postgres")


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"keyless {installed_version('keyless')}")
        raise typer.Exit()


@app.callback()
def _keyless(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version of Keyless and exit.",
        ),
    ] = False,
) -> None:
    """Only the options that come before any command."""


@app.command()
def init(
    data_dir: DataDirOption = None,
    store_url: Annotated[
        str | None,
        typer.Option(
            envvar="KEYLESS_STORE_URL",
            help="PostgreSQL URL; default: SQLite in the data directory.",
        ),
    ] = None,
    tls_name: Annotated[
        list[str] | None, typer.Option(help="Extra DNS name or IP for the server certificate.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTPS port the server will use.")] = None,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Loopback port of the token gateway that `serve` embeds (default 8389; 0: off).",
        ),
    ] = None,
) -> None:
    """Create the data directory, keys, local CA, default tenant and its first administrator."""
    from keyless.authority.bootstrap import initialise
    from keyless.store.engine import StoreUrlError

    os.umask(0o077)  # the store, keys and config are the user's alone
    try:
        report = initialise(
            data_dir or default_data_dir(), store_url, tls_name or [], port, gateway_port
        )
    except (StoreUrlError, NotADirectoryError) as exc:
        fail(str(exc))
    if report.changed:
        for line in report.created:
            note(f"created  {line}")
    else:
        note(f"nothing to do: {report.data_dir} is already initialised")
    emit(
        {
            "dataDir": str(report.data_dir),
            "tenant": report.tenant_id,
            "subscription": report.subscription_id,
            "administrator": report.admin,
            "changed": report.changed,
        }
    )


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


@app.command()
def serve(
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTPS port.")] = None,
    store_url: Annotated[str | None, typer.Option(envvar="KEYLESS_STORE_URL")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Server processes (default: one per CPU this process may use)."
        ),
    ] = None,
    federation_ca: Annotated[
        list[Path] | None,
        typer.Option(help="Extra CA file to trust when fetching federated issuers' keys."),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            help="info: a line per request (method, path, status, duration; never a query "
            "string, header or body); warning: only the start banner and problems.",
        ),
    ] = LogLevel.info,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Token gateway port (default: from init, 8389); 0: no gateway."
        ),
    ] = None,
) -> None:
    """Run the HTTPS server (token service, discovery, admin API), the local sign-in socket and
    the token gateway that PostgreSQL's `ldap` authentication asks."""
    from keyless.server.run import ServeError, ServeOptions
    from keyless.server.run import serve as run_server
    from keyless.store.engine import StoreUrlError

    os.umask(0o077)
    options = ServeOptions(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        store_url=store_url,
        workers=workers,
        federation_ca=federation_ca or [],
        log_level=log_level.value,
        gateway_port=gateway_port,
    )
    try:
        run_server(options)
    except (ServeError, StoreUrlError) as exc:
        fail(str(exc))


# `keyless login [--use-device-code]`, `keyless login approve CODE` and `keyless logout`.
app.add_typer(signin.login_app, name="login")
app.command()(signin.logout)
app.command()(shellenv.env)

# --output and --query on every command that prints a result; these print none.
add_global_options(
    app, raw=[serve, shellenv.env, signin.logout, gateway.serve, host.app_run, host.app_serve_imds]
)


def _plain(text: str | None) -> str | None:
    """Help text as click prints it: paragraphs re-flowed (a docstring's line breaks are not
    the reader's), and rich's escapes (`\\[default: ...]`) undone."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs).replace("\\[", "[")


def _tidy(command: Any) -> None:
    """Every command's help in click's plain layout: rich's option table cut long option
    names (`--resource-gro…`) and kept a docstring's line breaks in command lists."""
    # Duck-typed: Typer runs on its own copy of click, whose classes are not click's.
    command.help = _plain(command.help)
    # An explicit short help is shown whole (wrapped) in command lists, not cut at 45 columns.
    command.short_help = _plain(command.short_help) or (command.help or "").split("\n\n")[0]
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            param.help = _plain(param.help)
    for sub in (getattr(command, "commands", None) or {}).values():
        _tidy(sub)


def cli() -> Any:
    """The whole CLI as click runs it, `-h` as az's, help texts tidied."""
    command = typer.main.get_command(app)
    command.context_settings = {**command.context_settings, "help_option_names": ["-h", "--help"]}
    _tidy(command)
    return command


def main() -> None:
    cli()(prog_name="keyless")


if __name__ == "__main__":
    main()
