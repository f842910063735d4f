"""`keyless ad ...`: the directory, in the shape of `az ad`."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from keyless.cli.admin import call
from keyless.cli.options import DataDirOption, OutputOption, paths_for
from keyless.cli.output import emit, fail, note

app = typer.Typer(help="The directory: service principals, users, groups.", no_args_is_help=True)
sp_app = typer.Typer(help="Service principals.", no_args_is_help=True)
sp_credential_app = typer.Typer(help="A service principal's credentials.", no_args_is_help=True)
app_app = typer.Typer(help="Applications.", no_args_is_help=True)
fic_app = typer.Typer(help="Federated identity credentials.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
group_app = typer.Typer(help="Groups.", no_args_is_help=True)
member_app = typer.Typer(help="Group members.", no_args_is_help=True)
app.add_typer(sp_app, name="sp")
sp_app.add_typer(sp_credential_app, name="credential")
app.add_typer(app_app, name="app")
app_app.add_typer(fic_app, name="federated-credential")
api_app = typer.Typer(
    help="Resource APIs: the audiences tokens are issued for.", no_args_is_help=True
)
app.add_typer(api_app, name="api")
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
group_app.add_typer(member_app, name="member")

SP = "/admin/v1/servicePrincipals"


def _read_at_file(value: str, what: str) -> str:
    """`@path` reads a file, as az does; anything else is the value itself."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read the {what} file {path}: {exc.strerror}")


def _self_signed(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_cert_file(path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    """The private key never leaves this machine: it is written here 0600, like az does, and
    only the certificate goes to the server."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _new_cert_path(data_dir: Path | None, name: str, explicit: Path | None) -> Path:
    if explicit is not None:
        if explicit.exists():
            fail(f"{explicit} exists; choose another --cert-file, Keyless never overwrites keys")
        return explicit
    base = paths_for(data_dir).cli_dir / "certs"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60] or "sp"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return base / f"{safe}-{stamp}.pem"


@sp_app.command("create-for-rbac")
def create_for_rbac(
    name: Annotated[str, typer.Option("--name", "-n", help="Display name.")],
    create_cert: Annotated[
        bool, typer.Option("--create-cert", help="Make a key pair here; upload the certificate.")
    ] = False,
    cert: Annotated[
        str | None, typer.Option("--cert", help="Certificate to register: PEM text or @file.")
    ] = None,
    secret: Annotated[
        bool, typer.Option("--secret", help="Create a client secret (shown once).")
    ] = False,
    years: Annotated[float, typer.Option(help="Secret lifetime in years.")] = 1.0,
    cert_file: Annotated[
        Path | None, typer.Option(help="Where --create-cert writes the key and certificate.")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an application with its service principal and, if asked, one credential. As
    az: if an application of that name exists it is updated, and a credential asked for
    replaces its certificates and secrets (a reset)."""
    if sum([create_cert, cert is not None, secret]) > 1:
        fail("choose one of --create-cert, --cert or --secret")
    body: dict[str, Any] = {"displayName": name, "updateExisting": True}
    created: tuple[Path, rsa.RSAPrivateKey, x509.Certificate] | None = None
    if create_cert:
        key, certificate = _self_signed(name)
        created = (_new_cert_path(data_dir, name, cert_file), key, certificate)
        body["certificate"] = certificate.public_bytes(serialization.Encoding.PEM).decode()
    elif cert is not None:
        body["certificate"] = _read_at_file(cert, "certificate")
    elif secret:
        body["createSecret"] = True
        body["secretYears"] = years
    result = call(data_dir, "POST", SP, body)
    if result.get("existing"):
        changed = (
            "its credentials were replaced"
            if (create_cert or cert or secret)
            else ("no credential was changed")
        )
        note(f"Found the existing application {result['appId']} named {name!r}: {changed}.")
    output: dict[str, Any] = {
        "appId": result["appId"],
        "displayName": result["displayName"],
        "tenant": result["tenant"],
    }
    if created is not None:
        path, key, certificate = created
        _write_cert_file(path, key, certificate)
        output["fileWithCertAndPrivateKey"] = str(path)
    if "certificate" in result:
        output["certificateThumbprint"] = result["certificate"]["thumbprint"]
    if secret:
        output["password"] = result["password"]
        note(
            "The password is shown once and stored only as a hash. Keep it in a vault, or "
            "better, use a certificate or federated credential."
        )
    if not (create_cert or cert or secret or result.get("existing")):
        note(
            "No credential was created. Add one with `keyless ad app federated-credential "
            "create` (no secret at all) or `keyless ad sp credential reset`."
        )
    emit(output)


@sp_app.command("list")
def sp_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Service principals in the tenant."""
    emit(
        call(data_dir, "GET", SP)["value"],
        output,
        ["displayName", "appId", "id", "servicePrincipalType"],
    )


@sp_app.command("show")
def sp_show(
    id: Annotated[str, typer.Option("--id", help="appId, object ID or display name.")],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """One service principal."""
    emit(call(data_dir, "GET", f"{SP}/{id}"), output)


@sp_app.command("delete")
def sp_delete(
    id: Annotated[str, typer.Option("--id", help="appId, object ID or display name.")],
    data_dir: DataDirOption = None,
) -> None:
    """Delete an application, its service principal and all its credentials."""
    emit(call(data_dir, "DELETE", f"{SP}/{id}"))


@sp_credential_app.command("reset")
def sp_credential_reset(
    id: Annotated[str, typer.Option("--id", help="appId, object ID or display name.")],
    create_cert: Annotated[bool, typer.Option("--create-cert")] = False,
    cert: Annotated[str | None, typer.Option("--cert", help="PEM text or @file.")] = None,
    years: Annotated[float, typer.Option(help="Secret lifetime in years.")] = 1.0,
    cert_file: Annotated[Path | None, typer.Option()] = None,
    append: Annotated[
        bool, typer.Option("--append", help="Keep the existing certificates and secrets.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Replace the certificates and secrets with a new certificate (--cert / --create-cert) or,
    by default, a new secret; --append keeps the old ones."""
    if create_cert and cert is not None:
        fail("choose --create-cert or --cert, not both")
    body: dict[str, Any] = {"secretYears": years}
    created = None
    if create_cert:
        key, certificate = _self_signed(id)
        created = (_new_cert_path(data_dir, id, cert_file), key, certificate)
        body = {"certificate": certificate.public_bytes(serialization.Encoding.PEM).decode()}
    elif cert is not None:
        body = {"certificate": _read_at_file(cert, "certificate")}
    body["append"] = append
    result = call(data_dir, "POST", f"{SP}/{id}/credentials", body)
    if created is not None:
        path, key, certificate = created
        _write_cert_file(path, key, certificate)
        result["fileWithCertAndPrivateKey"] = str(path)
    emit(result)


@fic_app.command("create")
def fic_create(
    id: Annotated[str, typer.Option("--id", help="The application's appId or name.")],
    parameters: Annotated[
        str | None, typer.Option(help="JSON or @file with name, issuer, subject, audiences.")
    ] = None,
    name: Annotated[str | None, typer.Option()] = None,
    issuer: Annotated[str | None, typer.Option()] = None,
    subject: Annotated[str | None, typer.Option()] = None,
    audiences: Annotated[list[str] | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Trust tokens from an external OIDC issuer for this application (no secret at all)."""
    body: dict[str, Any] = {}
    if parameters is not None:
        try:
            loaded = json.loads(_read_at_file(parameters, "parameters"))
        except ValueError:
            fail("--parameters is not valid JSON")
        if not isinstance(loaded, dict):
            fail("--parameters must be a JSON object")
        body.update(loaded)
    for key, value in (
        ("name", name),
        ("issuer", issuer),
        ("subject", subject),
        ("audiences", audiences),
        ("description", description),
    ):
        if value:
            body[key] = value
    emit(call(data_dir, "POST", f"{SP}/{id}/federatedIdentityCredentials", body))


@fic_app.command("list")
def fic_list(
    id: Annotated[str, typer.Option("--id")],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """The application's federated identity credentials."""
    emit(
        call(data_dir, "GET", f"{SP}/{id}/federatedIdentityCredentials")["value"],
        output,
        ["name", "issuer", "subject", "audiences"],
    )


@fic_app.command("delete")
def fic_delete(
    id: Annotated[str, typer.Option("--id")],
    federated_credential_id: Annotated[str, typer.Option(help="Its name or ID.")],
    data_dir: DataDirOption = None,
) -> None:
    """Remove a federated identity credential."""
    emit(
        call(
            data_dir, "DELETE", f"{SP}/{id}/federatedIdentityCredentials/{federated_credential_id}"
        )
    )


@api_app.command("list")
def api_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Resource APIs and the names (Keyless and Azure) that resolve to each."""
    emit(
        call(data_dir, "GET", "/admin/v1/resourceApis")["value"],
        output,
        ["name", "audience", "identifierUris"],
    )


@user_app.command("list")
def user_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Users in the tenant."""
    emit(call(data_dir, "GET", "/admin/v1/users")["value"], output)


@group_app.command("create")
def group_create(
    display_name: Annotated[str, typer.Option("--display-name")],
    data_dir: DataDirOption = None,
) -> None:
    """Create a group."""
    emit(call(data_dir, "POST", "/admin/v1/groups", {"displayName": display_name}))


@group_app.command("list")
def group_list(data_dir: DataDirOption = None, output: OutputOption = "json") -> None:
    """Groups in the tenant."""
    emit(call(data_dir, "GET", "/admin/v1/groups")["value"], output)


@member_app.command("add")
def member_add(
    group: Annotated[str, typer.Option("--group", "-g", help="Group name or object ID.")],
    member_id: Annotated[str, typer.Option(help="Object ID of a user, group or SP.")],
    data_dir: DataDirOption = None,
) -> None:
    """Add a user, group or service principal to a group."""
    emit(call(data_dir, "POST", f"/admin/v1/groups/{group}/members", {"memberId": member_id}))


@member_app.command("list")
def member_list(
    group: Annotated[str, typer.Option("--group", "-g")],
    data_dir: DataDirOption = None,
    output: OutputOption = "json",
) -> None:
    """Direct members of a group."""
    emit(call(data_dir, "GET", f"/admin/v1/groups/{group}/members")["value"], output)
