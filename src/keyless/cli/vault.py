"""`keyless vault` and `keyless vault secret`: vaults (the resource manager, like `keyless
identity`) and their secrets (each vault's Key Vault data plane), in the shape of `az keyvault`.

Secret commands call `https://{vault}.vault.{host}:{port}/secrets/...` with a token for
api://keyless/vault. `*.vault.localhost` does not resolve everywhere, so the CLI connects to the
server's own address and names the vault in the TLS SNI and the Host header
(keyless.vault.client); the certificate is verified for the vault's host name against the
Keyless CA. A secret's value is printed only when asked (`show --show-value`), and can be given
from a file or stdin rather than the command line. `backup` writes the encrypted blob to a new
0600 file and never overwrites one; lists follow the vault's nextLinks to the last page.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer

from keyless.base.vault_domain import VaultDomain
from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import fail, note
from keyless.cli.resources import (
    AzCommand,
    GroupOption,
    NameOption,
    ResourceKind,
    SubscriptionOption,
    TagsOption,
    _tags,
    add_commands,
    app_json,
    resource_path,
    show,
    subscription_of,
)
from keyless.cli.session import (
    CliError,
    endpoint_for,
    http_client,
    is_remote,
    resource_token,
)
from keyless.cli.vaulthosts import warn_unresolved
from keyless.vault.client import (
    SECRET_NAME,
    VAULT_NAME,
    VERSION,
    vault_error,
    vault_request,
)

vault_app = typer.Typer(help="Vaults and their secrets.", no_args_is_help=True)
secret_app = typer.Typer(help="A vault's secrets (its data plane).", no_args_is_help=True)
vault_app.add_typer(secret_app, name="secret")

VAULT_TYPE = "Keyless.Vault/vaults"
VAULT_SCOPE = "api://keyless/vault/.default"


# ------------------------------------------------------------------------------------ vaults


def _vault_row(vault: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": vault["name"],
        "resourceGroup": vault.get("resourceGroup"),
        "location": vault.get("location"),
        "vaultUri": vault.get("properties", {}).get("vaultUri"),
    }


VAULT_COLUMNS = ["name", "resourceGroup", "location", "vaultUri"]


@vault_app.command("create", cls=AzCommand)
def vault_create(
    group: GroupOption,
    name: NameOption,
    location: Annotated[str | None, typer.Option("--location", "-l")] = None,
    retention_days: Annotated[
        int | None,
        typer.Option(
            "--retention-days",
            help="Days a deleted secret stays recoverable, 7 to 90 \\[default: 90].",
            show_default=False,
        ),
    ] = None,
    tags: TagsOption = None,
    subscription: SubscriptionOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Create a vault (or update one that exists). Reading and writing its secrets needs a
    Vault Secrets role on it, which `keyless role assignment create` gives."""
    sub = subscription_of(data_dir, subscription)
    body: dict[str, Any] = {"tags": _tags(tags) or {}, "properties": {}}
    if location is not None:
        body["location"] = location
    if retention_days is not None:
        body["properties"]["softDeleteRetentionInDays"] = retention_days
    created = call(data_dir, "PUT", resource_path(sub, group, VAULT_TYPE, name), body)
    show(app_json(created), output, VAULT_COLUMNS, _vault_row)
    vault_uri = created.get("properties", {}).get("vaultUri")
    if vault_uri:
        warn_unresolved([str(vault_uri)])


add_commands(
    vault_app,
    ResourceKind(
        type_name=VAULT_TYPE,
        to_json=app_json,
        columns=VAULT_COLUMNS,
        row=_vault_row,
        list_help="Vaults you may read.",
        show_help="One vault.",
        delete_help="Delete a vault.",
    ),
)


# ---------------------------------------------------------------------------- the data plane


def _vault_name(name: str) -> str:
    if not VAULT_NAME.match(name):
        fail(
            f"the vault name {name[:60]!r} is not valid: use 3-24 letters, digits and hyphens, "
            "starting with a letter, ending with a letter or digit, no '--'"
        )
    return name.lower()


def _secret_name(name: str) -> str:
    if not SECRET_NAME.match(name):
        fail(f"the secret name {name[:60]!r} is not valid: use 1-127 letters, digits and hyphens")
    return name


def _version(version: str | None) -> str:
    if version is None:
        return ""
    if not VERSION.match(version):
        fail(f"the version {version[:60]!r} is not valid: a version is 32 hexadecimal digits")
    return f"/{version}"


class VaultCallError(CliError):
    """A data plane request failed; `status` is the HTTP status (0: no answer), `code` Key
    Vault's error code (the inner one when there is one)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


class VaultData:
    """The vault data plane as the signed-in user: `data(vault, method, path, body)` returns
    the JSON answer (None for no content) or raises VaultCallError. For callers that must undo
    their earlier steps on a failure (the connector) rather than exit."""

    def __init__(self, data_dir: Any) -> None:
        self._paths = paths_for(data_dir)

    def __call__(
        self, vault: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Any:
        if not VAULT_NAME.match(vault):
            raise VaultCallError(
                f"the vault name {vault[:60]!r} is not valid: use 3-24 letters, digits and "
                "hyphens, starting with a letter, ending with a letter or digit, no '--'"
            )
        name = vault.lower()
        token, record = resource_token(self._paths, VAULT_SCOPE)
        remote = is_remote(record)
        endpoint = str(record["endpoint"]) if remote else endpoint_for(self._paths)
        ca = (record.get("caFile") if remote else None) or os.environ.get("KEYLESS_CA_FILE")
        if not ca and self._paths.ca_cert.exists():
            ca = str(self._paths.ca_cert)
        domain = VaultDomain.from_endpoint(endpoint)
        if not domain.usable:
            raise VaultCallError(
                f"vaults need a DNS name for the server ({domain.host} is not one); use an "
                "endpoint such as https://localhost:PORT"
            )
        with http_client(endpoint, str(ca) if ca else None) as http:
            try:
                response = vault_request(
                    http, domain, name, method, path, str(token["accessToken"]), body
                )
            except httpx.HTTPError as exc:
                raise VaultCallError(
                    f"cannot reach the vault {name} at {endpoint} ({type(exc).__name__}: {exc}); "
                    "is the Keyless server running?"
                ) from None
        if response.status_code >= 400:
            code, message = vault_error(response)
            raise VaultCallError(
                f"{message} (HTTP {response.status_code})", response.status_code, code
            )
        return response.json() if response.content else None


def vault_call(
    data_dir: Any,
    vault: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    """A data plane request to `vault`, as the signed-in user; its JSON (None for no content)."""
    name = _vault_name(vault)
    try:
        return VaultData(data_dir)(name, method, path, body)
    except CliError as exc:
        fail(str(exc))


def vault_list_all(data_dir: Any, vault: str, path: str) -> list[dict[str, Any]]:
    """Every item of a vault list, following its `nextLink`s (a page holds at most 25)."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    result = vault_call(data_dir, vault, "GET", path)
    while True:
        page = list(result.get("value") or [])
        ids = {str(item.get("id")) for item in page}
        if ids & seen:  # a page seen before must not loop us for ever
            fail(f"the vault {vault} sent a page of its list twice; the list is incomplete")
        seen |= ids
        items.extend(page)
        link = result.get("nextLink")
        if not link:
            return items
        # Same vault, same connection: only the path and query of the link are used.
        parts = urlsplit(str(link))
        result = vault_call(data_dir, vault, "GET", f"{parts.path}?{parts.query}")


def _iso(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
    return value


_TIMES = ("created", "updated", "nbf", "exp")


def secret_json(item: dict[str, Any], show_value: bool = False) -> dict[str, Any]:
    """As `az keyvault secret show` prints it: name beside the id, times in ISO 8601, and the
    value only when asked for."""
    parts = urlsplit(str(item.get("id", ""))).path.split("/")
    attributes = {
        k: _iso(v) if k in _TIMES else v for k, v in dict(item.get("attributes") or {}).items()
    }
    out: dict[str, Any] = {
        "id": item.get("id"),
        "name": parts[2] if len(parts) > 2 else None,
        "attributes": attributes,
        "contentType": item.get("contentType"),
        "tags": item.get("tags"),
    }
    for key in ("recoveryId", "deletedDate", "scheduledPurgeDate"):
        if key in item:
            out[key] = _iso(item[key])
    if show_value and "value" in item:
        out["value"] = item["value"]
    return out


def _row(item: dict[str, Any]) -> dict[str, Any]:
    attributes = item.get("attributes") or {}
    return {
        "name": item.get("name"),
        "enabled": attributes.get("enabled"),
        "updated": attributes.get("updated"),
        "id": item.get("id"),
    }


SECRET_COLUMNS = ["name", "enabled", "updated", "id"]

VaultNameOption = Annotated[str, typer.Option("--vault-name", help="The vault's name.")]
SecretNameOption = Annotated[str, typer.Option("--name", "-n", help="The secret's name.")]
VersionOption = Annotated[
    str | None,
    typer.Option("--version", "-v", help="A version \\[default: the latest].", show_default=False),
]


def _read_value(value: str | None, file: Path | None) -> str:
    if (value is None) == (file is None):
        fail("give the value with --value VALUE, --value - (read stdin) or --file FILE")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read --file {file}: {exc}")
    if value == "-":
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            fail(f"cannot read the value from stdin: {exc}")
        return text[:-1] if text.endswith("\n") else text
    assert value is not None
    return value


@secret_app.command("set")
def secret_set(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    value: Annotated[
        str | None,
        typer.Option(
            "--value",
            help="The value; '-' reads it from stdin (one trailing newline dropped). A value "
            "typed here stays in the shell history: prefer --file or '-'.",
        ),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the value from this file, as is.")
    ] = None,
    content_type: Annotated[str | None, typer.Option("--content-type")] = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Set a secret: a new version with this value. The value is not printed."""
    path = f"/secrets/{_secret_name(name)}"
    body: dict[str, Any] = {"value": _read_value(value, file)}
    if content_type is not None:
        body["contentType"] = content_type
    result = vault_call(data_dir, vault_name, "PUT", path, body)
    show(secret_json(result), output, SECRET_COLUMNS, _row)


@secret_app.command("show")
def secret_show(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    version: VersionOption = None,
    show_value: Annotated[
        bool, typer.Option("--show-value", help="Print the value too (it is hidden otherwise).")
    ] = False,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """A secret's attributes; its value only with --show-value."""
    path = f"/secrets/{_secret_name(name)}{_version(version)}"
    result = vault_call(data_dir, vault_name, "GET", path)
    columns = [*SECRET_COLUMNS, "value"] if show_value else SECRET_COLUMNS

    def row(item: dict[str, Any]) -> dict[str, Any]:
        return {**_row(item), **({"value": item.get("value")} if show_value else {})}

    show(secret_json(result, show_value), output, columns, row)


@secret_app.command("list")
def secret_list(
    vault_name: VaultNameOption,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The vault's secrets (not deleted ones), without values."""
    items = vault_list_all(data_dir, vault_name, "/secrets")
    show([secret_json(i) for i in items], output, SECRET_COLUMNS, _row)


@secret_app.command("list-versions")
def secret_list_versions(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """A secret's versions, oldest first, without values."""
    path = f"/secrets/{_secret_name(name)}/versions"
    items = vault_list_all(data_dir, vault_name, path)
    show([secret_json(i) for i in items], output, SECRET_COLUMNS, _row)


@secret_app.command("delete")
def secret_delete(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Delete a secret (all its versions); it stays recoverable for the vault's retention."""
    result = vault_call(data_dir, vault_name, "DELETE", f"/secrets/{_secret_name(name)}")
    show(secret_json(result), output, SECRET_COLUMNS, _row)


@secret_app.command("recover")
def secret_recover(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Bring a deleted secret back, with all its versions."""
    path = f"/deletedsecrets/{_secret_name(name)}/recover"
    result = vault_call(data_dir, vault_name, "POST", path)
    show(secret_json(result), output, SECRET_COLUMNS, _row)


@secret_app.command("purge")
def secret_purge(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    data_dir: DataDirOption = None,
) -> None:
    """Erase a deleted secret for good (it must be deleted first)."""
    vault_call(data_dir, vault_name, "DELETE", f"/deletedsecrets/{_secret_name(name)}")
    note(f"purged the secret {name} from {vault_name}")


def _time(option: str, value: str | None) -> int | None:
    """An ISO 8601 time (UTC unless it says otherwise) as the epoch seconds Key Vault takes."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(
            f"{option} {value[:60]!r} is not a time: write an ISO 8601 UTC time such as "
            "2027-01-31T00:00:00Z"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def _enabled(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        fail(f"--enabled {value[:20]!r} is not valid: write true or false")
    return value.lower() == "true"


@secret_app.command("set-attributes", cls=AzCommand)
def secret_set_attributes(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    version: VersionOption = None,
    enabled: Annotated[
        str | None,
        typer.Option("--enabled", help="true or false: whether the value may be read."),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Expiry, ISO 8601 UTC (2027-01-31T00:00:00Z)."),
    ] = None,
    not_before: Annotated[
        str | None,
        typer.Option("--not-before", help="Not valid before, ISO 8601 UTC."),
    ] = None,
    content_type: Annotated[str | None, typer.Option("--content-type")] = None,
    tags: TagsOption = None,
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Change a version's attributes (the latest unless --version): enabled, expiry,
    not-before, content type, tags (which replace the old ones). The value never changes: set
    the secret for a new one."""
    path = f"/secrets/{_secret_name(name)}{_version(version)}"
    attributes: dict[str, Any] = {}
    if (flag := _enabled(enabled)) is not None:
        attributes["enabled"] = flag
    if (exp := _time("--expires", expires)) is not None:
        attributes["exp"] = exp
    if (nbf := _time("--not-before", not_before)) is not None:
        attributes["nbf"] = nbf
    body: dict[str, Any] = {"attributes": attributes} if attributes else {}
    if content_type is not None:
        body["contentType"] = content_type
    if tags is not None:
        body["tags"] = _tags(tags) or {}
    if not body:
        fail("nothing to change: give --enabled, --expires, --not-before, --content-type or --tags")
    result = vault_call(data_dir, vault_name, "PATCH", path, body)
    show(secret_json(result), output, SECRET_COLUMNS, _row)


@secret_app.command("backup")
def secret_backup(
    vault_name: VaultNameOption,
    name: SecretNameOption,
    file: Annotated[
        Path, typer.Option("--file", "-f", help="Write the backup here (a new file, mode 0600).")
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Back up a secret, all its versions, to a file. The backup is encrypted: only a vault of
    this tenant on this Keyless server can restore it (`keyless vault secret restore`)."""
    if file.exists() or file.is_symlink():
        fail(f"--file {file} exists; choose a new path (a backup never overwrites a file)")
    result = vault_call(data_dir, vault_name, "POST", f"/secrets/{_secret_name(name)}/backup")
    encoded = str((result or {}).get("value") or "")
    try:
        blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        fail(f"the vault {vault_name} answered a backup that is not base64url")
    try:
        # O_EXCL: never follow a link or replace a file; 0600 from the start, not chmod after.
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
    except OSError as exc:
        fail(f"cannot write --file {file}: {exc.strerror or exc}")
    note(f"backed up the secret {name} of {vault_name} to {file} ({len(blob)} bytes)")


@secret_app.command("restore")
def secret_restore(
    vault_name: VaultNameOption,
    file: Annotated[
        Path, typer.Option("--file", "-f", help="A backup that `secret backup` wrote.")
    ],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Restore a backed-up secret, with all its versions, into a vault of the same tenant.
    Its name must be free there: neither a secret nor a deleted one."""
    try:
        blob = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read --file {file}: {exc.strerror or exc}")
    if not blob:
        fail(f"--file {file} is empty; give a file that `keyless vault secret backup` wrote")
    body = {"value": base64.urlsafe_b64encode(blob).rstrip(b"=").decode()}
    result = vault_call(data_dir, vault_name, "POST", "/secrets/restore", body)
    show(secret_json(result), output, SECRET_COLUMNS, _row)
