"""CertificateCredential: a service principal proving itself with a certificate's private key.

It sends an RS256 client assertion (RFC 7523) whose header names the certificate by `x5t`
(base64url SHA-1 of its DER), audience the token endpoint, a unique `jti` and a 5-minute life.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._base import HttpCredential
from ._caching import HookT, HttpCore
from ._flow import JWT_BEARER, ClientCredentialsFlow, fingerprint
from ._http import RequestHook

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

ASSERTION_LIFETIME_S = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LoadedCertificate:
    """A private key and the certificate for it (plus the rest of the chain, if any)."""

    def __init__(
        self, key: RSAPrivateKey, certificate: x509.Certificate, chain: list[x509.Certificate]
    ) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        self.key = key
        self.certificate = certificate
        self.der = certificate.public_bytes(Encoding.DER)
        self.x5t = _b64url(hashlib.sha1(self.der).digest())  # noqa: S324 - x5t is SHA-1 by spec
        self.x5c = [
            base64.b64encode(c.public_bytes(Encoding.DER)).decode()
            for c in [certificate, *[c for c in chain if c != certificate]]
        ]


def _parse(data: bytes, password: bytes | None) -> tuple[Any, list[x509.Certificate]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    if b"-----BEGIN" in data:
        certificates = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
        if b"PRIVATE KEY-----" not in data:
            return None, certificates
        return serialization.load_pem_private_key(data, password), certificates
    key, first, extra = pkcs12.load_key_and_certificates(data, password)
    return key, ([first] if first is not None else []) + list(extra)


def load_certificate(data: bytes, password: bytes | None, source: str) -> LoadedCertificate:
    """PEM (certificate and private key in one file, as `keyless ad sp create-for-rbac
    --create-cert` writes) or PKCS#12."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    expected = (
        f"{source} must hold a certificate and its private key: a PEM file (as "
        "`keyless ad sp create-for-rbac --name NAME --create-cert` writes) or a PKCS#12 (.pfx) file"
    )
    try:
        key, certificates = _parse(data, password)
    except TypeError:  # cryptography: a password is missing, or given for a plain key
        if password is None:
            raise ValueError(
                f"the private key in {source} is encrypted: pass password= "
                "(AZURE_CLIENT_CERTIFICATE_PASSWORD)"
            ) from None
        raise ValueError(f"the private key in {source} is not encrypted: omit password") from None
    except ValueError:
        if password is not None:
            raise ValueError(
                f"could not read {source}: the password is wrong or the file is damaged. "
                + expected
            ) from None
        raise ValueError(f"could not read {source}. {expected}") from None
    if key is None:
        raise ValueError(f"{source} has no private key. {expected}")
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(
            f"the private key in {source} is {type(key).__name__}; Keyless certificate "
            "credentials sign RS256 assertions and need an RSA key"
        )

    def spki(public: Any) -> bytes:
        return bytes(
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    own = spki(key.public_key())
    matching = [c for c in certificates if spki(c.public_key()) == own]
    if not matching:
        raise ValueError(f"{source} has no certificate for its private key. {expected}")
    return LoadedCertificate(key, matching[0], certificates)


class CertificateFlow(ClientCredentialsFlow):
    kind = "certificate"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        certificate_path: str | None,
        certificate_data: bytes | None,
        password: str | bytes | None,
        authority: str | None,
        send_certificate_chain: bool = False,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(tenant_id, client_id, authority, additionally_allowed_tenants)
        if (certificate_path is None) == (certificate_data is None):
            raise ValueError(
                "pass exactly one of certificate_path (AZURE_CLIENT_CERTIFICATE_PATH) or "
                "certificate_data: the service principal's certificate with its private key"
            )
        if certificate_path is not None:
            source = f"certificate_path {certificate_path!r}"
            try:
                data = Path(certificate_path).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read {source}: {exc.strerror}") from None
        else:
            assert certificate_data is not None
            source, data = "certificate_data", certificate_data
        secret = password.encode() if isinstance(password, str) else password
        self.certificate = load_certificate(data, secret, source)
        self.send_certificate_chain = send_certificate_chain
        self.cache_id = (
            f"certificate|{self.authority}|{client_id}|{self.certificate.x5t}|"
            f"{fingerprint(client_id)}"
        )

    def assertion(self, token_url: str) -> str:
        import jwt

        now = int(time.time())
        headers: dict[str, Any] = {"typ": "JWT", "x5t": self.certificate.x5t}
        if self.send_certificate_chain:
            headers["x5c"] = self.certificate.x5c
        claims = {
            "aud": token_url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_S,
        }
        return jwt.encode(claims, self.certificate.key, algorithm="RS256", headers=headers)

    def client_auth(self, token_url: str) -> tuple[dict[str, str], tuple[str, ...]]:
        assertion = self.assertion(token_url)
        return (
            {"client_assertion_type": JWT_BEARER, "client_assertion": assertion},
            (assertion,),
        )


class CertificateArguments(HttpCore[HookT]):
    """CertificateCredential's arguments, the same for the sync and the async class."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        certificate_path: str | None = None,
        *,
        certificate_data: bytes | None = None,
        password: str | bytes | None = None,
        authority: str | None = None,
        send_certificate_chain: bool = False,
        additionally_allowed_tenants: tuple[str, ...] | list[str] = (),
        request_hook: HookT | None = None,
    ) -> None:
        flow = CertificateFlow(
            tenant_id,
            client_id,
            certificate_path,
            certificate_data,
            password,
            authority,
            send_certificate_chain,
            additionally_allowed_tenants,
        )
        self._use(flow, request_hook)


class CertificateCredential(CertificateArguments[RequestHook], HttpCredential):
    """Authenticates a service principal with a certificate (no shared secret crosses the wire).

    :param tenant_id: the Keyless tenant's ID.
    :param client_id: the service principal's application (client) ID.
    :param certificate_path: a PEM file with the certificate and its private key (as
        ``keyless ad sp create-for-rbac --create-cert`` writes), or a PKCS#12 file.
    :keyword certificate_data: the same as bytes, instead of a path.
    :keyword password: the private key's password, if it is encrypted.
    :param authority: the Keyless server; default ``AZURE_AUTHORITY_HOST``. Must be https.
    :keyword send_certificate_chain: also send the certificate (``x5c``) in the assertion.
    """
