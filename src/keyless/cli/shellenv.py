"""`keyless env`: the shell exports that point Azure SDKs, curl and the CLI at this Keyless.

Besides the authority, tenant and CA, it decides whether azure-identity's Azure CLI credential
(which `DefaultAzureCredential` tries on a developer's machine) reaches Keyless: it puts
`{data dir}/bin`, holding a stand-in `az` (keyless.cli.azshim), first on PATH where no real
Azure CLI is installed. A real `az` is never shadowed unless the user asks (`--az-shim on`);
`--az-shim off` takes the stand-in off PATH again.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from keyless.authority.config import DataDir, ServerConfig
from keyless.cli.options import DataDirOption, paths_for
from keyless.cli.output import fail
from keyless.cli.session import endpoint_for
from keyless.cli.vaulthosts import warn_unresolved


class AzShim(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


def shim_dir(paths: DataDir) -> Path:
    return paths.root / "bin"


def shim_script(paths: DataDir) -> str:
    """The `az` stand-in: this Python, this data directory unless the caller names another.
    azure-identity runs it from /bin with the caller's environment."""
    python = shlex.quote(sys.executable)
    data = shlex.quote(str(paths.root))
    return (
        "#!/bin/sh\n"
        "# Keyless's stand-in for `az account get-access-token`, written by `keyless env`.\n"
        '# It answers nothing else. Off PATH: eval "$(keyless env --az-shim off)"\n'
        f': "${{KEYLESS_DATA_DIR:={data}}}"\n'
        "export KEYLESS_DATA_DIR\n"
        f'exec {python} -m keyless.cli.azshim "$@"\n'
    )


def write_shim(paths: DataDir) -> Path:
    directory = shim_dir(paths)
    directory.mkdir(mode=0o700, exist_ok=True)
    target = directory / "az"
    text = shim_script(paths)
    if not target.exists() or target.read_text() != text:
        tmp = directory / ".az.tmp"
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(target)
    return target


def _path_without(directory: Path, path: str) -> list[str]:
    return [p for p in path.split(os.pathsep) if p and Path(p) != directory]


def real_az(paths: DataDir) -> str | None:
    """The Azure CLI on PATH, ignoring Keyless's own stand-in."""
    rest = _path_without(shim_dir(paths), os.environ.get("PATH", ""))
    return shutil.which("az", path=os.pathsep.join(rest))


def path_export(paths: DataDir, mode: AzShim) -> tuple[str | None, str | None]:
    """(new PATH or None to leave it, a note for stderr or None)."""
    directory = shim_dir(paths)
    current = os.environ.get("PATH", "")
    rest = _path_without(directory, current)
    installed = real_az(paths)
    wanted = mode is AzShim.on or (mode is AzShim.auto and installed is None)
    message = None
    if mode is AzShim.auto and installed is not None:
        message = (
            f"note: the Azure CLI is installed ({installed}); Keyless leaves it alone, so "
            "DefaultAzureCredential uses your `az login`. To have it use your Keyless sign-in "
            'instead: eval "$(keyless env --az-shim on)" (undo: --az-shim off)'
        )
    if wanted:
        try:
            write_shim(paths)
        except OSError as exc:
            message = (
                f"note: cannot write Keyless's stand-in az into {directory} ({exc.strerror}); "
                "DefaultAzureCredential will not find your Keyless sign-in"
            )
            return None, message
        new = os.pathsep.join([str(directory), *rest])
    else:
        new = os.pathsep.join(rest)
    return (None if new == current else new), message


def env(
    data_dir: DataDirOption = None,
    az_shim: Annotated[
        AzShim,
        typer.Option(
            "--az-shim",
            help="Put Keyless's stand-in `az account get-access-token` on PATH, so "
            "azure-identity's DefaultAzureCredential uses your `keyless login`: auto (only "
            "where no Azure CLI is installed), on (also in front of a real one), off.",
        ),
    ] = AzShim.auto,
) -> None:
    """Print shell exports for this Keyless: `eval "$(keyless env)"`."""
    paths = paths_for(data_dir)
    if not paths.config.exists():
        fail(f"{paths.root} is not initialised; run `keyless init` first")
    endpoint = endpoint_for(paths)
    tenant, vault_urls = _tenant_and_vaults(paths, endpoint)
    ca = str(paths.ca_cert)
    exports = {
        "KEYLESS_DATA_DIR": str(paths.root),
        "KEYLESS_ENDPOINT": endpoint,
        "AZURE_AUTHORITY_HOST": endpoint,
        "AZURE_TENANT_ID": tenant,
        "REQUESTS_CA_BUNDLE": ca,
        "SSL_CERT_FILE": ca,
        "CURL_CA_BUNDLE": ca,  # curl reads this one, not REQUESTS_CA_BUNDLE
    }
    path, message = path_export(paths, az_shim)
    if path is not None:
        exports["PATH"] = path
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    if message:
        sys.stderr.write(message + "\n")
    warn_unresolved(vault_urls)


def _tenant_and_vaults(paths: DataDir, endpoint: str) -> tuple[str, list[str]]:
    """The default tenant, and the URL of every vault (whose host names must resolve here)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from keyless.base.vault_domain import VaultDomain
    from keyless.store.engine import open_engine
    from keyless.store.models import Tenant, Vault

    engine = open_engine(ServerConfig.load_or_default(paths).effective_store_url(paths))
    try:
        with Session(engine) as session:
            tenant = session.scalars(select(Tenant.id).where(Tenant.is_default)).first()
            vaults = list(session.scalars(select(Vault.name)))
    finally:
        engine.dispose()
    if tenant is None:
        fail("the store has no default tenant; run `keyless init`")
    domain = VaultDomain.from_endpoint(endpoint)
    return tenant, [domain.vault_url(name) for name in vaults] if domain.usable else []
