"""The local certificate authority and the server certificate it signs.

Azure's SDK refuses plain-http authorities and vaults, so Keyless is HTTPS everywhere. `init`
creates a CA that the user trusts once (`REQUESTS_CA_BUNDLE`/`SSL_CERT_FILE`, or the system
store), and a server certificate for the names the server answers on. Both private keys are
PEM-encrypted with passwords derived from the master key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyless.authority.masterkey import MasterKey

DEFAULT_TLS_NAMES = ("localhost", "127.0.0.1", "::1")
_CA_PURPOSE = "tls-ca-key"
_SERVER_PURPOSE = "tls-server-key"
_SERVER_VALIDITY = dt.timedelta(days=397)
_RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> TlsFiles:
        return cls(
            ca_cert=data_dir / "ca.pem",
            ca_key=data_dir / "ca-key.pem",
            server_cert=data_dir / "server.pem",
            server_key=data_dir / "server-key.pem",
        )


def server_key_password(master: MasterKey) -> str:
    return master.derive_password(_SERVER_PURPOSE).decode()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _encrypted_pem(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def create_ca(files: TlsFiles, master: MasterKey, label: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Keyless local CA ({label})")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _encrypted_pem(key, master.derive_password(_CA_PURPOSE)))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.ca_cert.chmod(0o644)


def issue_server_certificate(files: TlsFiles, master: MasterKey, names: list[str]) -> None:
    key, cert = _issue(files, master, names)
    _write_private(files.server_key, _encrypted_pem(key, server_key_password(master).encode()))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue_service_certificate(
    files: TlsFiles, master: MasterKey, names: list[str]
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) from the Keyless CA for a service Keyless starts
    that cannot unlock an encrypted key (a PostgreSQL cluster of `postgres server create`):
    the caller writes the key where only that service's account reads it."""
    key, cert = _issue(files, master, names)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


def _issue(
    files: TlsFiles, master: MasterKey, names: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(
        files.ca_key.read_bytes(), master.derive_password(_CA_PURPOSE)
    )
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the local CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _SERVER_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def server_certificate_names(files: TlsFiles) -> list[str]:
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


def server_certificate_needs_renewal(files: TlsFiles, names: list[str]) -> bool:
    """True when the certificate is close to expiry or misses a name the server must answer."""
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE:
        return True
    have = {n.lower() for n in server_certificate_names(files)}
    return any(
        str(ipaddress.ip_address(n)) not in have if _is_ip(n) else n.lower() not in have
        for n in names
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
