"""Vault references in app settings, resolved by `keyless app run` with the app's own identity.

A setting whose value is one of

    @Keyless.Vault(SecretUri=https://{vault}.vault.{host}:{port}/secrets/{name}[/{version}])
    @Microsoft.KeyVault(SecretUri=https://{vault}.vault.{host}:{port}/secrets/{name}[/{version}])
    @Microsoft.KeyVault(VaultName={vault};SecretName={name}[;SecretVersion={version}])

(either prefix takes either form) holds the secret's value in the app's environment only: the
app resource keeps the reference. Without a version the reference follows the latest version.
The secret is read as the identity the app's `keyVaultReferenceIdentity` names (as in Azure:
the system-assigned identity unless it names a user-assigned one), with a token for
api://keyless/vault from the authority's `POST {app}/identityToken`, from the vault's REST API
over HTTPS with the Keyless CA (keyless.vault.client). A SecretUri must name a vault of the
server the CLI talks to: the app's token is never sent to a host a setting names.

Values are kept in memory only (and handed to the child's environment): never logged, printed,
written to a file or put in an error; `Resolved` leaves the value out of its repr.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from keyless.base.errors import KeylessError
from keyless.base.vault_domain import VaultDomain
from keyless.host.endpoint import Fetch, TokenError
from keyless.vault.client import SECRET_NAME, VAULT_NAME, VERSION, vault_error, vault_request

PREFIXES = ("@Keyless.Vault(", "@Microsoft.KeyVault(")
VAULT_RESOURCE = "api://keyless/vault"
SYSTEM_ASSIGNED = "SystemAssigned"
PARAMETERS = ("SecretUri", "VaultName", "SecretName", "SecretVersion")
FORMS = (
    "@Keyless.Vault(SecretUri=https://VAULT.{host}/secrets/NAME) (a version may follow the "
    "name: /secrets/NAME/VERSION) or @Microsoft.KeyVault(VaultName=VAULT;SecretName=NAME) "
    "(optionally ;SecretVersion=VERSION)"
)
_SHOWN = 300  # at most this much of a reference is quoted in a message


class MalformedReference(KeylessError, ValueError):
    """A setting looks like a vault reference but is not one; the message says what is wrong."""


@dataclass(frozen=True)
class VaultReference:
    setting: str
    text: str  # as the setting holds it
    vault: str
    secret: str
    version: str | None  # None: the latest

    @property
    def path(self) -> str:
        return f"/secrets/{self.secret}" + (f"/{self.version}" if self.version else "")


@dataclass(frozen=True)
class Resolved:
    reference: VaultReference
    value: str = field(repr=False)
    version: str


@dataclass(frozen=True)
class Unresolved:
    setting: str
    text: str
    why: str
    fix: str = ""

    def message(self) -> str:
        shown = self.text if len(self.text) <= _SHOWN else self.text[:_SHOWN] + "..."
        fix = f"; {self.fix}" if self.fix else ""
        return (
            f"app setting {self.setting}: the vault reference {shown} cannot be resolved: "
            f"{self.why}{fix}"
        )


# ----------------------------------------------------------------------------------- parsing


def looks_like_reference(value: str) -> bool:
    """Whether a setting is meant as a vault reference (and is then parsed strictly)."""
    return value.lstrip().lower().startswith(tuple(p[:-1].lower() for p in PREFIXES))


def parse(setting: str, text: str, domain: VaultDomain) -> VaultReference:
    """The reference a setting holds; MalformedReference says what is wrong with it."""

    def bad(why: str) -> MalformedReference:
        return MalformedReference(f"{why}; write it as {FORMS.format(host=_vault_host(domain))}")

    if text != text.strip():
        raise bad("it has spaces around it")
    prefix = next((p for p in PREFIXES if text.startswith(p)), None)
    if prefix is None:
        raise bad("it must start with @Keyless.Vault( or @Microsoft.KeyVault(, spelt so")
    if not text.endswith(")"):
        raise bad("it must end with ')'")
    inner = text[len(prefix) : -1]
    if not inner:
        raise bad("it names no secret")
    if any(c.isspace() for c in inner):
        raise bad("it must not contain spaces")
    given: dict[str, str] = {}
    for part in inner.split(";"):
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise bad(f"{part[:80]!r} is not NAME=VALUE")
        name = next((p for p in PARAMETERS if p.lower() == key.lower()), None)
        if name is None:
            raise bad(f"{key[:40]!r} is not a parameter of a reference ({', '.join(PARAMETERS)})")
        if name in given:
            raise bad(f"{name} is given twice")
        given[name] = value
    if "SecretUri" in given:
        if len(given) > 1:
            raise bad("SecretUri names the secret alone: give VaultName and SecretName without it")
        vault, secret, version = _parse_uri(given["SecretUri"], domain, bad)
    else:
        if "VaultName" not in given or "SecretName" not in given:
            raise bad("it needs SecretUri, or VaultName and SecretName")
        vault, secret = given["VaultName"], given["SecretName"]
        version = given.get("SecretVersion")
        if not domain.usable:
            raise bad(f"this Keyless server's address ({domain.host}) gives vaults no host names")
    if not VAULT_NAME.match(vault):
        raise bad(f"the vault name {vault[:60]!r} is not valid (3-24 letters, digits, hyphens)")
    if not SECRET_NAME.match(secret):
        raise bad(f"the secret name {secret[:60]!r} is not valid (letters, digits, hyphens)")
    if version is not None and not VERSION.match(version):
        raise bad(f"the version {version[:60]!r} is not valid (32 hexadecimal digits)")
    return VaultReference(
        setting, text, vault.lower(), secret, version.lower() if version else None
    )


AZURE_VAULT_SUFFIX = ".vault.azure.net"


def azure_vault(uri: str) -> str | None:
    """The vault NAME of an Azure Key Vault URI (`https://NAME.vault.azure.net/...`, as an app
    copied from Azure holds), or None. Such a reference reads the Keyless vault NAME: the app's
    token still goes only to this Keyless server."""
    try:
        parts = urlsplit(uri.strip())
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or port not in (None, 443) or not host.endswith(AZURE_VAULT_SUFFIX):
        return None
    label = host[: -len(AZURE_VAULT_SUFFIX)]
    return label if label and "." not in label else None


def azure_notices(settings: dict[str, str]) -> list[str]:
    """One line per setting whose vault reference names an Azure vault host, saying which
    Keyless vault it reads (printed once: at `appsettings set` and at `app run`)."""
    lines = []
    for name, text in sorted(settings.items()):
        if not looks_like_reference(text):
            continue
        match = re.search(r"SecretUri=([^;)\s]+)", text, re.IGNORECASE)
        vault = azure_vault(match.group(1)) if match else None
        if vault is not None:
            lines.append(
                f"app setting {name}: its reference names the Azure vault host "
                f"{vault}{AZURE_VAULT_SUFFIX}; Keyless reads it from its own vault {vault}"
            )
    return lines


def _vault_host(domain: VaultDomain) -> str:
    """`vault.localhost:8443`: what follows a vault's name in its host."""
    return domain.host + ("" if domain.port == 443 else f":{domain.port}")


def _parse_uri(
    uri: str, domain: VaultDomain, bad: Callable[[str], MalformedReference]
) -> tuple[str, str, str | None]:
    try:
        parts = urlsplit(uri)
        port = parts.port or 443
    except ValueError:
        raise bad(f"SecretUri {uri[:100]!r} is not a URL") from None
    if parts.scheme != "https":
        raise bad("SecretUri must be an https:// URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise bad("SecretUri must have no user name, query or fragment")
    vault = domain.vault_of(parts.netloc) if domain.usable else None
    if vault is None and domain.usable:
        vault = azure_vault(uri)
        port = domain.port if vault is not None else port
    if vault is None or port != domain.port:
        raise bad(
            f"SecretUri names the host {parts.netloc[:100]}, which is no vault of this Keyless "
            f"server (its vaults are https://VAULT.{_vault_host(domain)})"
        )
    match = re.fullmatch(r"/secrets/([^/]+)(?:/([^/]*))?", parts.path)
    if match is None:
        raise bad("SecretUri's path must be /secrets/NAME or /secrets/NAME/VERSION")
    return vault, match.group(1), match.group(2) or None  # a trailing "/" means the latest


# --------------------------------------------------------------------------------- resolving


class _Failure(Exception):
    def __init__(self, why: str, fix: str = "") -> None:
        super().__init__(why)
        self.why, self.fix = why, fix


class Resolver:
    """Reads referenced secrets as one identity of the app: its system-assigned identity, or
    the user-assigned one `reference_identity` names. Keeps the vault token until its refresh
    time. `app_args` is `-g GROUP -n APP`, for the fixes it suggests."""

    def __init__(
        self,
        fetch: Fetch,
        http: httpx.Client,
        domain: VaultDomain,
        reference_identity: str | None,
        app_args: str,
    ) -> None:
        self._fetch = fetch
        self._http = http
        self._domain = domain
        self._app_args = app_args
        user = reference_identity and reference_identity.lower() != SYSTEM_ASSIGNED.lower()
        self.selector = {"mi_res_id": str(reference_identity)} if user else {}
        self.identity = (
            f"the user-assigned identity {reference_identity} (the app's keyVaultReferenceIdentity)"
            if user
            else "the app's system-assigned identity"
        )
        self._token: tuple[str, str, float] | None = None  # token, object ID, refresh at
        self._lock = threading.Lock()

    def _access_token(self, renew: bool = False) -> tuple[str, str]:
        with self._lock:
            if self._token is not None and not renew and time.time() < self._token[2]:
                return self._token[0], self._token[1]
            try:
                answer = self._fetch(VAULT_RESOURCE, self.selector)
            except TokenError as exc:
                raise _Failure(
                    f"{self.identity} gets no token for the vault: {exc.message}",
                    self._identity_fix(),
                ) from None
            except Exception as exc:  # the authority unreachable or failing; never a token
                raise _Failure(
                    f"no token for {self.identity} from the Keyless authority ({exc})",
                    "is the Keyless server running? try again",
                ) from None
            token, principal = str(answer["access_token"]), str(answer.get("object_id", ""))
            expires_in = int(answer.get("expires_in", 0))
            refresh_in = int(answer.get("refresh_in", expires_in // 2))
            self._token = (token, principal, time.time() + refresh_in)
            return token, principal

    def _identity_fix(self) -> str:
        if self.selector:
            return (
                "assign that identity to the app (`keyless app identity assign "
                f"{self._app_args} --identities ID`), or name another one for references "
                f"(`keyless app create {self._app_args} --key-vault-reference-identity "
                "NAME_OR_ID`, or [system])"
            )
        return (
            f"enable it (`keyless app identity assign {self._app_args}`), or name a "
            "user-assigned identity of the app for references (`keyless app create "
            f"{self._app_args} --key-vault-reference-identity NAME_OR_ID`)"
        )

    def resolve(self, ref: VaultReference) -> Resolved | Unresolved:
        def unresolved(why: str, fix: str = "") -> Unresolved:
            return Unresolved(ref.setting, ref.text, why, fix)

        try:
            token, principal = self._access_token()
            response = self._get(ref, token)
            if response.status_code == 401:  # the cached token outlived its key: once more
                token, principal = self._access_token(renew=True)
                response = self._get(ref, token)
        except _Failure as failure:
            return unresolved(failure.why, failure.fix)
        if response.status_code == 200:
            try:
                body = response.json()
                value = body["value"]
                version = str(body.get("id", "")).rstrip("/").rsplit("/", 1)[-1]
            except (ValueError, KeyError, TypeError, AttributeError):
                value = None
            if not isinstance(value, str):
                return unresolved("the vault's answer holds no value")
            return Resolved(ref, value, version)
        return unresolved(*self._explain(ref, response, principal))

    def _get(self, ref: VaultReference, token: str) -> httpx.Response:
        try:
            return vault_request(self._http, self._domain, ref.vault, "GET", ref.path, token)
        except httpx.HTTPError as exc:
            raise _Failure(
                f"cannot reach the vault {ref.vault} at {self._http.base_url} "
                f"({type(exc).__name__})",
                "is the Keyless server running?",
            ) from None

    def _explain(
        self, ref: VaultReference, response: httpx.Response, principal: str
    ) -> tuple[str, str]:
        """(why, how to fix) for a refusal; the vault's own message names the cause."""
        code, message = vault_error(response)
        why = f"{message} (HTTP {response.status_code}{', ' + code if code else ''})"
        at = f"--vault-name {ref.vault} --name {ref.secret}"
        if code == "VaultNotFound":
            return why, (
                "check the vault's name (`keyless vault list`), or create the vault (`keyless "
                f"vault create -g GROUP -n {ref.vault}`) and set the secret in it"
            )
        if code == "SecretNotFound":
            if ref.version:
                return why, (
                    f"name an existing version (`keyless vault secret list-versions {at}`), "
                    "or drop the version to follow the latest"
                )
            return why, (
                f"set the secret (`keyless vault secret set {at} --file FILE`), recover it if "
                f"it was deleted (`keyless vault secret recover {at}`), or fix the name "
                f"(`keyless vault secret list --vault-name {ref.vault}`)"
            )
        if code == "ForbiddenByRbac" or (
            response.status_code == 403 and not code.startswith("Secret")
        ):
            action = re.search(r"data action (\S+)", message)
            scope = re.search(r"over scope (\S+?)(?:/secrets/\S*)?;", message)
            vault_id = scope.group(1) if scope else "VAULT_ID"
            if action is None:  # not the vault's RBAC refusal: its own words
                return why, ""
            why = (
                f"{self.identity} ({principal}) may not perform the data action "
                f"{action.group(1)} on the secret (HTTP 403, {code or 'Forbidden'})"
            )
            how = (
                "give it a role that includes it, at the vault's scope: `keyless role "
                f'assignment create --assignee {principal} --role "Vault Secrets User" '
                f"--scope {vault_id}`"
            )
            if not scope:
                how += f" (`keyless vault show -g GROUP -n {ref.vault}` prints VAULT_ID)"
            return why, how
        if code == "SecretDisabled":
            then = " and refer to it" if ref.version else ""
            return why, (
                "enable that version (its attributes.enabled), or set a new version "
                f"(`keyless vault secret set {at} --file FILE`){then}"
            )
        if code == "SecretExpired":
            return why, f"set a new version (`keyless vault secret set {at} --file FILE`)"
        if code == "SecretNotYetValid":
            return why, "wait until its activation time (attributes.nbf), or change it"
        return why, ""


# ------------------------------------------------------------------------------- app settings


@dataclass
class Resolution:
    settings: dict[str, str]  # what the app gets: values in place of the resolved references
    references: dict[str, VaultReference]  # by setting, the well-formed ones
    resolved: dict[str, Resolved]
    unresolved: list[Unresolved]


def resolve_settings(
    settings: dict[str, str], domain: VaultDomain, resolver: Resolver | None
) -> Resolution:
    """Every reference among `settings` resolved (or not, and why). An unresolved setting keeps
    its literal reference, as in Azure. With no references `resolver` is not used."""
    out = dict(settings)
    references: dict[str, VaultReference] = {}
    resolved: dict[str, Resolved] = {}
    unresolved: list[Unresolved] = []
    for name, text in sorted(settings.items()):
        if not looks_like_reference(text):
            continue
        try:
            references[name] = parse(name, text, domain)
        except MalformedReference as exc:
            unresolved.append(Unresolved(name, text, f"it is malformed: {exc}"))
    for name, ref in references.items():
        assert resolver is not None, "references need a resolver"
        result = resolver.resolve(ref)
        if isinstance(result, Resolved):
            resolved[name] = result
            out[name] = result.value
        else:
            unresolved.append(result)
    unresolved.sort(key=lambda u: u.setting)
    return Resolution(out, references, resolved, unresolved)


def has_references(settings: dict[str, str]) -> bool:
    return any(looks_like_reference(v) for v in settings.values())


# ----------------------------------------------------------------------------------- watching


Restart = Callable[[dict[str, str], list[str]], bool]


class ReferenceWatch:
    """`keyless app run --watch`: every `interval` seconds, re-reads the references that name
    no version (a versioned one cannot change) and, when a value changed (a new version was
    set, or a reference resolves that did not), calls `restart(settings, reasons)` with the
    app's new settings. A failure to re-read is reported (once, until it changes) and changes
    nothing: the app keeps running with what it has."""

    def __init__(
        self,
        resolution: Resolution,
        resolver: Resolver | None,
        interval: float,
        restart: Restart,
        say: Callable[[str], None],
    ) -> None:
        self._settings = dict(resolution.settings)
        self._current: dict[str, Resolved | None] = {
            name: resolution.resolved.get(name)
            for name, ref in resolution.references.items()
            if ref.version is None
        }
        self._references = {n: resolution.references[n] for n in self._current}
        self._resolver = resolver
        self._interval = interval
        self._restart = restart
        self._say = say
        self._failing: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def watched(self) -> list[str]:
        return sorted(self._references)

    def poll(self) -> None:
        if self._resolver is None:
            return
        settings = dict(self._settings)
        changed: dict[str, Resolved] = {}
        reasons = []
        for name, ref in sorted(self._references.items()):
            result = self._resolver.resolve(ref)
            if isinstance(result, Unresolved):
                message = result.message()
                if self._failing.get(name) != message:
                    self._failing[name] = message
                    self._say(f"{message} (re-checking; the app keeps its current value)")
                continue
            if self._failing.pop(name, None) is not None:
                self._say(f"app setting {name}: its vault reference resolves again")
            before = self._current.get(name)
            if before is None:
                changed[name] = result
                reasons.append(
                    f"app setting {name}: its vault reference now resolves (version "
                    f"{result.version})"
                )
            elif before.value != result.value:
                changed[name] = result
                reasons.append(
                    f"app setting {name}: the secret {ref.secret} in {ref.vault} has a new "
                    f"version ({result.version}, was {before.version})"
                )
            elif before.version != result.version:
                self._current[name] = result
                self._say(
                    f"app setting {name}: the secret {ref.secret} has a new version "
                    f"({result.version}) with the same value; the app is not restarted"
                )
        if not changed:
            return
        for name, result in changed.items():
            settings[name] = result.value
        if self._restart(settings, reasons):
            self._settings = settings
            self._current.update(changed)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as exc:  # never a value: only the kind of failure is shown
                self._say(
                    f"warning: re-checking the vault references failed ({type(exc).__name__})"
                )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="keyless-references", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def describe(resolution: Resolution) -> list[str]:
    """One line per resolved reference (never the value), for the operator."""
    return [
        f"app setting {name}: resolved from {r.reference.vault}/{r.reference.secret} "
        f"(version {r.version})"
        for name, r in sorted(resolution.resolved.items())
    ]
