"""Proving a client's identity at the token endpoint: a secret, a certificate assertion
(RFC 7523, as MSAL builds it) or a federated token from an external issuer.

Every failure raises an `OAuthError` whose description names the fault and the fix, never
the secret or assertion the caller sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import jwt
from jwt.algorithms import get_default_algorithms

from keyless.authority import errors
from keyless.authority.cache import CertificateInfo, ClientRecord
from keyless.authority.errors import invalid_client
from keyless.authority.federation import FederationError, IssuerKeys
from keyless.authority.validation import SIGNATURE_ONLY

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CERTIFICATE_ALGORITHMS = ["RS256", "PS256"]
FEDERATED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
LEEWAY_S = 300
MAX_CERTIFICATE_ASSERTION_LIFETIME_S = 3600
MAX_ASSERTION_BYTES = 16 * 1024


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Authenticated:
    client: ClientRecord
    method: str  # "client_secret" | "certificate" | "federated"
    credential_id: str
    replay_key: tuple[str, float] | None = None  # (jti, keep until)


def check_secret(client: ClientRecord, secret: str, now: float) -> Authenticated:
    presented = hash_secret(secret)
    matched = None
    # Compare against every secret, in constant time each, so timing says nothing about which.
    for info in client.secrets:
        if hmac.compare_digest(info.sha256, presented):
            matched = info
    if matched is None:
        if not client.secrets:
            raise invalid_client(
                f"the application {client.app_id} has no client secret; authenticate with "
                "its certificate or federated credential, or add a secret",
                errors.INVALID_SECRET,
            )
        raise invalid_client(
            f"the client secret presented for application {client.app_id} is not valid; "
            "check that it is the value shown when the secret was created, not its ID",
            errors.INVALID_SECRET,
        )
    if matched.expires_at <= now:
        raise invalid_client(
            f"the client secret {matched.key_id} of application {client.app_id} has expired; "
            "create a new one (or better, switch to a certificate or federated credential)",
            errors.EXPIRED_SECRET,
        )
    return Authenticated(client, "client_secret", matched.key_id)


def _b64url_sha(data: bytes, algorithm: str) -> str:
    digest = hashlib.new(algorithm, data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class UnverifiedAssertion:
    """A client assertion as PyJWT parsed it, before any check: the header and claims decide
    which key must verify it, and the signature is then checked without parsing it again."""

    token: str
    header: dict[str, object]
    claims: dict[str, object]
    signature: bytes

    def signature_verifies(self, key: object, algorithms: list[str]) -> bool:
        """The token's `alg` must be one of `algorithms` (fixed by the caller, never taken from
        the token alone: alg none or HS256 "signed" with a public key fail here)."""
        alg = self.header.get("alg")
        if not isinstance(alg, str) or alg not in algorithms:
            return False
        algorithm = _ALGORITHMS[alg]
        # The JWS signing input is everything before the last '.', over a compact
        # serialization that PyJWT has just checked has exactly three parts.
        signing_input = self.token.rsplit(".", 1)[0].encode("ascii")
        try:
            return bool(algorithm.verify(signing_input, algorithm.prepare_key(key), self.signature))
        except (jwt.InvalidKeyError, TypeError, ValueError):
            return False


_ALGORITHMS = get_default_algorithms()


def unverified_parts(assertion: str) -> UnverifiedAssertion:
    """Header and claims before any check, to decide which key should verify them."""
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise invalid_client("the client_assertion is larger than 16 KiB", errors.BAD_ASSERTION)
    try:
        # One parse for all parts (PyJWT checks each segment character by character, which
        # costs more than the RSA verification); the signature is checked later.
        parts = jwt.decode_complete(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise invalid_client(
            "the client_assertion is not a signed JWT (three base64url parts)",
            errors.BAD_ASSERTION,
        ) from None
    claims = parts["payload"]
    if not isinstance(claims, dict):
        raise invalid_client(
            "the client_assertion's payload is not a JSON object", errors.BAD_ASSERTION
        )
    return UnverifiedAssertion(assertion, dict(parts["header"]), claims, parts["signature"])


def _find_certificate(client: ClientRecord, header: dict[str, object]) -> CertificateInfo:
    # MSAL pads x5t with "=", which RFC 7515 base64url leaves out: compare without padding.
    x5t, x5t_s256 = _unpadded(header.get("x5t")), _unpadded(header.get("x5t#S256"))
    kid = header.get("kid")
    for cert in client.certificates:
        if (
            (x5t_s256 is not None and x5t_s256 == cert.x5t_s256)
            or (x5t is not None and x5t == cert.x5t)
            or (isinstance(kid, str) and kid.upper() in (cert.key_id.upper(), _hex(cert.x5t)))
        ):
            return cert
    raise invalid_client(
        f"the client_assertion was signed by a key that is not registered on application "
        f"{client.app_id} (matched by x5t, x5t#S256 or kid); upload the certificate with "
        f"`keyless ad sp credential reset --id {client.app_id} --cert @cert.pem` or sign with a "
        "registered one",
        errors.UNKNOWN_CERTIFICATE,
    )


def _unpadded(value: object) -> str | None:
    return value.rstrip("=") if isinstance(value, str) else None


def _hex(b64url: str) -> str:
    padded = b64url + "=" * (-len(b64url) % 4)
    return base64.urlsafe_b64decode(padded).hex().upper()


def _check_times(claims: dict[str, object], now: float, max_lifetime: int | None) -> None:
    iat = claims.get("iat")
    if iat is not None:
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise invalid_client("the client_assertion's iat is not a number", errors.BAD_ASSERTION)
        if iat - LEEWAY_S > now:
            raise invalid_client(
                "the client_assertion was issued in the future (iat is more than 5 minutes "
                "ahead of this server's clock); check the client machine's clock",
                errors.ISSUED_IN_FUTURE,
            )
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise invalid_client("the client_assertion has no numeric exp claim", errors.BAD_ASSERTION)
    if exp + LEEWAY_S <= now:
        raise invalid_client(
            "the client_assertion has expired; create a fresh one for each request",
            errors.ASSERTION_EXPIRED,
        )
    nbf = claims.get("nbf")
    if nbf is not None:
        if not isinstance(nbf, int | float) or isinstance(nbf, bool):
            raise invalid_client("the client_assertion's nbf is not a number", errors.BAD_ASSERTION)
        if nbf - LEEWAY_S > now:
            raise invalid_client(
                "the client_assertion is not valid yet (nbf is in the future); check the "
                "client machine's clock",
                errors.ASSERTION_NOT_YET_VALID,
            )
    if max_lifetime is not None and exp > now + max_lifetime + LEEWAY_S:
        raise invalid_client(
            "the client_assertion is valid for more than an hour; assertions must be short-lived",
            errors.BAD_ASSERTION,
        )


def check_certificate_assertion(
    client: ClientRecord, parsed: UnverifiedAssertion, audiences: set[str], now: float
) -> Authenticated:
    header, claims = parsed.header, parsed.claims
    alg = header.get("alg")
    if alg not in CERTIFICATE_ALGORITHMS:
        raise invalid_client(
            f"the client_assertion uses alg {str(alg)[:16]!r}; certificate assertions must be "
            "signed with RS256 or PS256",
            errors.ASSERTION_SIGNATURE,
        )
    cert = _find_certificate(client, header)
    if not cert.not_before - LEEWAY_S <= now <= cert.not_after + LEEWAY_S:
        raise invalid_client(
            f"the certificate {cert.key_id} registered on application {client.app_id} is "
            "outside its validity period; register a current certificate",
            errors.UNKNOWN_CERTIFICATE,
        )
    if not parsed.signature_verifies(cert.public_key, CERTIFICATE_ALGORITHMS):
        raise invalid_client(
            "the client_assertion's signature does not verify with the registered certificate",
            errors.ASSERTION_SIGNATURE,
        )
    if claims.get("iss") != client.app_id or claims.get("sub") != client.app_id:
        raise invalid_client(
            "a certificate assertion's iss and sub must both be the client ID",
            errors.BAD_ASSERTION,
        )
    _check_audience(claims, audiences)
    _check_times(claims, now, MAX_CERTIFICATE_ASSERTION_LIFETIME_S)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
        raise invalid_client(
            "the client_assertion has no jti (a unique ID of up to 128 characters), which "
            "Keyless needs to refuse replays",
            errors.BAD_ASSERTION,
        )
    exp = float(claims["exp"])  # type: ignore[arg-type]
    return Authenticated(client, "certificate", cert.key_id, (jti, exp + LEEWAY_S))


def single_audience(aud: object, what: str) -> str:
    """The one audience of an assertion: a string, or a list of exactly one string.

    An assertion meant for one server must not be reusable at another: a list naming this
    token endpoint and anything else is refused, whatever the other value is (the RFC 7523
    audience-injection guidance, draft-ietf-oauth-rfc7523bis). azure-identity, MSAL and the
    workload identity token files all send one audience.
    """
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if isinstance(aud, list) and len(aud) > 1:
        raise invalid_client(
            f"the {what}'s aud names {len(aud)} audiences; it must name exactly one (this "
            "tenant's token endpoint), so that it cannot be replayed at another server",
            errors.ASSERTION_AUDIENCE,
        )
    if not isinstance(aud, str) or not aud:
        raise invalid_client(
            f"the {what} has no aud; set aud to the token_endpoint of the discovery document",
            errors.ASSERTION_AUDIENCE,
        )
    return aud


def _check_audience(claims: dict[str, object], audiences: set[str]) -> None:
    aud = single_audience(claims.get("aud"), "client_assertion")
    if aud.rstrip("/") not in audiences:
        raise invalid_client(
            "the client_assertion's aud is not this tenant's token endpoint; set aud to the "
            "token_endpoint of the discovery document",
            errors.ASSERTION_AUDIENCE,
        )


def check_federated_assertion(
    client: ClientRecord,
    assertion: str,
    header: dict[str, object],
    claims: dict[str, object],
    issuer_keys: IssuerKeys,
    now: float,
    may_fetch: bool = True,
) -> Authenticated:
    """Raises FetchNeeded (not an OAuthError) when the issuer's keys are not cached and
    `may_fetch` is false: nothing was decided, the caller asks again where it may wait."""
    issuer, subject = claims.get("iss"), claims.get("sub")
    candidates = [f for f in client.federated if f.issuer == issuer and f.subject == subject]
    if not candidates:
        raise invalid_client(
            f"no federated identity credential on application {client.app_id} matches the "
            "presented token's issuer and subject; compare them with `keyless ad app "
            "federated-credential list` (both must match exactly)",
            errors.FEDERATION_NO_MATCH,
        )
    aud = single_audience(claims.get("aud"), "federated token")
    matched = next((f for f in candidates if aud in f.audiences), None)
    if matched is None:
        raise invalid_client(
            "the federated token's aud is not among the audiences of the matching federated "
            "identity credential (default api://AzureADTokenExchange)",
            errors.ASSERTION_AUDIENCE,
        )
    if header.get("alg") not in FEDERATED_ALGORITHMS:
        raise invalid_client(
            "the federated token is not signed with an asymmetric algorithm Keyless accepts",
            errors.ASSERTION_SIGNATURE,
        )
    kid = header.get("kid")
    try:
        keys = issuer_keys.keys_for(
            str(issuer), kid if isinstance(kid, str) else None, may_fetch=may_fetch
        )
    except FederationError as exc:
        raise invalid_client(
            f"could not get the signing keys of the federated issuer: {exc}",
            errors.FEDERATION_UNREACHABLE,
        ) from None
    key = next((k for k in keys.keys if kid is None or k.key_id == kid), None)
    if key is None:
        raise invalid_client(
            "the federated token was signed by a key its issuer does not publish",
            errors.ASSERTION_SIGNATURE,
        )
    try:
        jwt.decode(assertion, key, algorithms=FEDERATED_ALGORITHMS, options=SIGNATURE_ONLY)
    except jwt.InvalidTokenError:
        raise invalid_client(
            "the federated token's signature does not verify with its issuer's published keys",
            errors.ASSERTION_SIGNATURE,
        ) from None
    _check_times(claims, now, None)
    return Authenticated(client, "federated", matched.name)
