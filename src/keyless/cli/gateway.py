"""`keyless gateway`: the token gateway that PostgreSQL's `ldap` authentication delegates to."""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.authority.config import default_data_dir
from keyless.cli.options import DataDirOption
from keyless.cli.output import fail

app = typer.Typer(
    help="The token gateway: LDAP simple binds checked against Keyless access tokens.",
    no_args_is_help=True,
)


@app.command("serve")
def serve(
    data_dir: DataDirOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs --tls.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8389,
    tls: Annotated[
        bool, typer.Option("--tls", help="LDAPS with Keyless's server certificate.")
    ] = False,
    store_url: Annotated[str | None, typer.Option(envvar="KEYLESS_STORE_URL")] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(help="The authority's public URL (token issuer); default: from init."),
    ] = None,
) -> None:
    """Check PostgreSQL logins: bind DN cn=ROLE,ou=SERVER,dc=keyless, password = access token."""
    import os

    from keyless.gateway.run import GatewayOptions
    from keyless.gateway.run import serve as run_gateway
    from keyless.gateway.settings import GatewaySettingsError
    from keyless.store.engine import StoreUrlError

    os.umask(0o077)
    options = GatewayOptions(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        tls=tls,
        store_url=store_url,
        endpoint=endpoint,
    )
    try:
        run_gateway(options)
    except (GatewaySettingsError, StoreUrlError) as exc:
        fail(str(exc))
