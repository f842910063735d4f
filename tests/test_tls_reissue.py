"""A data directory made before vaults: its server certificate has no `*.vault.{host}` name.
`keyless serve` reissues it once, from the same local CA, so clients that trust the CA reach
vault hosts with nothing new to install; a second start leaves the new certificate alone.

Real parts: `keyless init` and `keyless serve` as subprocesses, TLS handshakes over loopback.
The old certificate is made as the old `init` made it: the CA's own issuing code with the names
it used then (localhost, 127.0.0.1, ::1).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509

from keyless.authority.config import DataDir
from keyless.authority.masterkey import MasterKey
from keyless.authority.tls import (
    DEFAULT_TLS_NAMES,
    TlsFiles,
    issue_server_certificate,
    server_certificate_names,
)
from tests.support.server import KeylessServer

VAULT_HOST = "shop-vault.vault.localhost"


def _handshake(server: KeylessServer, name: str) -> x509.Certificate:
    """The certificate the running server presents to a client that asks for `name` (SNI)
    and verifies it against the Keyless CA; ssl raises if it does not cover `name`."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_serve_reissues_an_old_certificate_once_from_the_same_ca(tmp_path: Path) -> None:
    server = KeylessServer(tmp_path / "data")
    server.init()
    files = TlsFiles.in_dir(server.data_dir)
    master = MasterKey.load(DataDir(server.data_dir).master_key)
    issue_server_certificate(files, master, list(DEFAULT_TLS_NAMES))  # as before vaults
    old = files.server_cert.read_bytes()
    ca = files.ca_cert.read_bytes()
    assert not any(".vault." in n for n in server_certificate_names(files))

    try:
        server.serve()
        reissued = files.server_cert.read_bytes()
        assert reissued != old
        names = server_certificate_names(files)
        assert "*.vault.localhost" in names
        assert {"localhost", "127.0.0.1", "::1"} <= set(names)  # the old names are kept
        assert files.ca_cert.read_bytes() == ca  # the same CA: clients trust it already
        ca_cert = x509.load_pem_x509_certificate(ca)
        new_cert = x509.load_pem_x509_certificate(reissued)
        new_cert.verify_directly_issued_by(ca_cert)  # raises unless the CA signed it
        # The running server presents it, and a client that trusts only the CA accepts it for
        # a vault host and for the server's own name.
        assert _handshake(server, VAULT_HOST) == new_cert
        assert _handshake(server, "localhost") == new_cert
    finally:
        server.stop()

    try:
        server.serve()  # a second start: the certificate already has every name
        assert files.server_cert.read_bytes() == reissued
        assert _handshake(server, VAULT_HOST) == new_cert
    finally:
        server.stop()
