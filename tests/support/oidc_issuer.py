"""A real OpenID Connect issuer for federation tests, like a Kubernetes cluster's
service-account issuer: HTTPS on a loopback port, a discovery document, a JWKS, and tokens
minted on demand.

Everything secret is made at run time: a throwaway CA (its certificate is `ca_file`, for
`keyless serve --federation-ca`), a server certificate for `localhost` signed by it, and RSA
signing keys. `rotate_key()` starts signing with a new key (new `kid`) while still publishing
the old one, as real issuers do.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import anyio.to_thread
import jwt
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.server import free_port

START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 10
GATE_TIMEOUT_S = 60
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        n = _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
        e = _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
        # RFC 7638 thumbprint, as Kubernetes and most issuers use for kid.
        canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
        return cls(_b64url(hashlib.sha256(canonical.encode()).digest()), key)

    def jwk(self) -> dict[str, str]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}


def _write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (certificate only kept) and a `localhost` server certificate it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test OIDC issuer CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server-key.pem",
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class OidcIssuer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.issuer = f"https://localhost:{self.port}"
        self.ca_file, self._cert_file, self._key_file = _write_tls_files(directory)
        self._lock = threading.Lock()
        self._current = SigningKey.generate()
        self._published = [self._current]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.requests: list[str] = []  # paths served, to see when Keyless fetched
        # While `gate` is clear, the discovery document is held back (a slow issuer); `held`
        # is set once a fetch is waiting at the gate.
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()

    @property
    def kid(self) -> str:
        return self._current.kid

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [key.jwk() for key in self._published]}

    def rotate_key(self) -> str:
        """Sign with a new key from now on; the old one stays published. Returns the new kid."""
        new = SigningKey.generate()
        with self._lock:
            self._current = new
            self._published = [new, *self._published]
        return new.kid

    def issue(
        self,
        subject: str,
        audience: str | list[str] = DEFAULT_AUDIENCE,
        lifetime: int = 600,
        **overrides: Any,
    ) -> str:
        """A federated token as a Kubernetes projected service-account token looks.
        `overrides` replace claims; an override of None removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": [audience] if isinstance(audience, str) else audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "workload"}},
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        with self._lock:
            key = self._current
        return jwt.encode(
            claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"}
        )

    def _app(self) -> Starlette:
        async def openid_configuration(request: Request) -> JSONResponse:
            self.requests.append(request.url.path)
            if not self.gate.is_set():
                self.held.set()
                await anyio.to_thread.run_sync(self.gate.wait, GATE_TIMEOUT_S)
            return JSONResponse(self.discovery())

        async def jwks(request: Request) -> JSONResponse:
            self.requests.append(request.url.path)
            return JSONResponse(self.jwks())

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", openid_configuration),
                Route("/jwks", jwks),
            ]
        )

    def start(self) -> None:
        config = uvicorn.Config(
            self._app(),
            ssl_certfile=str(self._cert_file),
            ssl_keyfile=str(self._key_file),
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
        )
        self._server = uvicorn.Server(config)
        self._sock = _bind_loopback(self.port)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="oidc-issuer",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the test OIDC issuer did not start in {START_TIMEOUT_S}s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None


def _bind_loopback(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


@contextlib.contextmanager
def running_issuer(directory: Path) -> Iterator[OidcIssuer]:
    issuer = OidcIssuer(directory)
    try:
        issuer.start()
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture(scope="session")
def oidc_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcIssuer]:
    with running_issuer(tmp_path_factory.mktemp("oidc-issuer")) as issuer:
        yield issuer
