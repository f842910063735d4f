"""PostgreSQL connections with an access token as the password, configured by the keys that a
Service Connector connection writes into the app's environment.

    from keyless.identity import postgres
    with postgres.connect() as conn:           # psycopg 3, token from DefaultCredential
        conn.execute("SELECT 1")
    engine = postgres.create_engine()          # SQLAlchemy: a fresh token per new connection

Keys (``AZURE_POSTGRESQL`` is the default prefix; a second connection to PostgreSQL has its own,
``AZURE_POSTGRESQL_<CONNECTION>``, chosen with ``connection="name"``):

- ``{prefix}_CONNECTIONSTRING``: ``dbname=<db> host=<host> port=<port> sslmode=<mode> user=<role>``
  (the python, go and "none" client types); a ``postgresql://`` URL is accepted too;
- or the split keys: ``{prefix}_HOST``, ``_USER``, ``_NAME`` or ``_DATABASE``, ``_PORT``, and
  ``_SSLMODE`` or ``_SSL`` (``true``/``false``, or a mode) - the django and nodejs client types;
- ``{prefix}_CLIENTID``: the user-assigned identity to use (``DefaultCredential``'s
  ``managed_identity_client_id``).

There is never a password in them: the password is a token for the PostgreSQL resource API,
which the token gateway checks when PostgreSQL asks it (see the README's token gateway section).
PostgreSQL checks a password only when a connection is made, so an established connection
outlives its token and only new connections need a current one; the SQLAlchemy engines ask the
credential at every new connection (its cache answers while the token is good, and refreshes
it well before expiry).

psycopg and SQLAlchemy are imported only when a function here is called. Bad or missing keys
raise `ConnectionSettingsError` before any token is requested; no message or log line here
contains a token, and none echoes a connection string (it might hold a secret by mistake).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ._tokens import AccessTokenLike, AsyncTokenCredentialLike, TokenCredentialLike

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ._base import Credential
    from .aio._base import AsyncCredential

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SCOPE",
    "ConnectionSettingsError",
    "connect",
    "connect_async",
    "create_async_engine",
    "create_engine",
]

_LOG = logging.getLogger("keyless.identity")

DEFAULT_PREFIX = "AZURE_POSTGRESQL"
# Azure's name for the PostgreSQL audience, which Azure-written code asks for; Keyless maps it
# to its PostgreSQL resource API (api://keyless/postgres), so either name works.
DEFAULT_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"

_WRITER = (
    "`keyless app connection create postgres` writes these keys into the app's settings "
    "(`keyless app run` passes them to the app)"
)
_EXAMPLE = "dbname=<db> host=<host> port=5432 sslmode=require user=<role>"
_SSLMODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_CONNECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_OPTION_NAME = re.compile(r'invalid connection option "([A-Za-z_]{1,40})"')
# Keywords that would put a secret next to the token, or replace it.
_SECRET_KEYWORDS = ("password", "passfile")
_REQUIRED = (("host", "HOST"), ("user", "USER"), ("dbname", "NAME"))


class ConnectionSettingsError(ValueError):
    """The connection keys are missing or malformed; the message names the variable to set."""


AnyTokenCredential = TokenCredentialLike | AsyncTokenCredentialLike


# --------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _Settings:
    """libpq keywords from the environment, and where each came from (for error messages)."""

    prefix: str
    params: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    client_id: str | None = None


def _prefix(prefix: str, connection: str | None) -> str:
    if not prefix:
        raise ConnectionSettingsError("prefix= is empty; the default is AZURE_POSTGRESQL")
    if connection is None:
        return prefix
    if not _CONNECTION_NAME.match(connection):
        raise ConnectionSettingsError(
            f"connection={connection[:100]!r} is not a connection name: use letters, digits, "
            "'_', '.' and '-' (the name given to `keyless app connection create`)"
        )
    # Environment variable names carry only letters, digits and '_'.
    return f"{prefix}_{connection.upper().replace('-', '_').replace('.', '_')}"


def _value(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _read_settings(
    prefix: str,
    connection: str | None,
    environ: Mapping[str, str] | None,
    *,
    client_id_only: bool = False,
) -> _Settings:
    """The connection keys; with `client_id_only` (an engine given its URL), only _CLIENTID."""
    full = _prefix(prefix, connection)
    environ = os.environ if environ is None else environ
    client_id = _value(environ, f"{full}_CLIENTID")
    if client_id_only:
        return _Settings(full, {}, {}, client_id)
    name = f"{full}_CONNECTIONSTRING"
    text = _value(environ, name)
    if text is not None:
        params = _parse_connection_string(name, text)
        sources = {key: f"{name} ({key}=...)" for key in params}
        return _Settings(full, params, sources, client_id)
    params, sources = _split_keys(full, environ)
    return _Settings(full, params, sources, client_id)


def _parse_connection_string(name: str, text: str) -> dict[str, Any]:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if text.lower().startswith("jdbc:"):
        raise ConnectionSettingsError(
            f"{name} is a JDBC URL (the java client type); this helper needs the python form "
            f"'{_EXAMPLE}', which a connection made with `keyless app connection create "
            "postgres -g <group> -n <app> --server <server> --database <database> "
            "--system-identity --client-type python` (or none) writes"
        )
    try:
        params = conninfo_to_dict(text)
    except ProgrammingError as exc:
        # libpq's message can quote a word of the string, which could be a secret: only an
        # option name is repeated.
        if ";" in text and "=" in text:
            reason = "it looks like the dotnet form (Server=...;Database=...;)"
        elif match := _OPTION_NAME.search(str(exc)):
            reason = f"{match.group(1)!r} is not a libpq keyword"
        else:
            reason = "it is not keyword=value pairs separated by spaces (or a quote is unclosed)"
        raise ConnectionSettingsError(
            f"{name} is not a libpq connection string: {reason}. Expected '{_EXAMPLE}'; {_WRITER}"
        ) from None
    if not params:
        raise ConnectionSettingsError(f"{name} is empty; expected '{_EXAMPLE}'. {_WRITER}")
    for keyword in _SECRET_KEYWORDS:
        if keyword in params:
            raise ConnectionSettingsError(
                f"{name} contains {keyword}=...: remove it. A passwordless connection has no "
                "password anywhere; the password is an access token the credential gets"
            )
    for key in ("port", "sslmode"):
        if key in params:
            params[key] = _check(key, str(params[key]), f"{name} ({key}=...)")
    return params


def _split_keys(prefix: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    params: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def take(keyword: str, *suffixes: str) -> None:
        for suffix in suffixes:
            name = f"{prefix}_{suffix}"
            value = _value(environ, name)
            if value is None:
                continue
            if keyword in params and params[keyword] != value:
                raise ConnectionSettingsError(
                    f"{sources[keyword]} and {name} are both set, to different values; keep one"
                )
            if keyword not in params:
                params[keyword], sources[keyword] = value, name

    take("host", "HOST")
    take("user", "USER")
    take("dbname", "NAME", "DATABASE")
    take("port", "PORT")
    take("sslmode", "SSLMODE")
    ssl_name = f"{prefix}_SSL"
    ssl = _value(environ, ssl_name)
    if ssl is not None and "sslmode" not in params:
        params["sslmode"], sources["sslmode"] = _ssl_flag(ssl_name, ssl), ssl_name
    for key in ("port", "sslmode"):
        if key in params:
            params[key] = _check(key, str(params[key]), sources[key])
    return params, sources


def _ssl_flag(name: str, value: str) -> str:
    """nodejs's `_SSL` is a flag; a mode name is taken as is."""
    lowered = value.lower()
    if lowered in _TRUE:
        return "require"
    if lowered in _FALSE:
        return "disable"
    return _check("sslmode", value, name)


def _check(keyword: str, value: str, source: str) -> str:
    if keyword == "port":
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConnectionSettingsError(
                f"{source} is {value[:20]!r}, which is not a port number (1-65535)"
            )
        return value
    if value.lower() not in _SSLMODES:
        raise ConnectionSettingsError(
            f"{source} is {value[:20]!r}, which is not an sslmode; use one of "
            + ", ".join(sorted(_SSLMODES))
        )
    return value.lower()


def _refuse_secrets(overrides: Mapping[str, Any], where: str) -> None:
    for keyword in _SECRET_KEYWORDS:
        if keyword in overrides:
            raise ConnectionSettingsError(
                f"{where} has {keyword}=: leave it out. The password is an access token from "
                "the credential (pass credential= to choose whose)"
            )


def _conninfo(settings: _Settings, overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The keywords to connect with: the environment's, then `overrides` (explicit wins)."""
    _refuse_secrets(overrides, where)
    params = {**settings.params, **overrides}
    missing = [key for key, _suffix in _REQUIRED if params.get(key) in (None, "")]
    if missing:
        raise ConnectionSettingsError(_missing_message(settings, missing))
    return params


def _missing_message(settings: _Settings, missing: list[str]) -> str:
    prefix = settings.prefix
    string = f"{prefix}_CONNECTIONSTRING"
    if not settings.params:
        return (
            f"no PostgreSQL connection settings: set {string} to '{_EXAMPLE}', or "
            f"{prefix}_HOST, {prefix}_USER and {prefix}_NAME (+ {prefix}_PORT, "
            f"{prefix}_SSLMODE). {_WRITER}"
        )
    if any(source.startswith(string) for source in settings.sources.values()):
        keywords = " and ".join(f"{key}=" for key in missing)
        return f"{string} has no {keywords}; expected '{_EXAMPLE}'. {_WRITER}"
    suffixes = dict(_REQUIRED)
    names = " and ".join(f"{prefix}_{suffixes[key]}" for key in missing)
    verb = "is" if len(missing) == 1 else "are"
    also = f" (or {prefix}_DATABASE)" if "dbname" in missing else ""
    return f"{names} {verb} not set{also}. {_WRITER}"


def _default_credential(client_id: str | None) -> Credential:
    from ._default import DefaultCredential

    return DefaultCredential(managed_identity_client_id=client_id)


def _async_default_credential(client_id: str | None) -> AsyncCredential:
    from .aio import DefaultCredential

    return DefaultCredential(managed_identity_client_id=client_id)


def _require_sync(credential: object) -> None:
    if inspect.iscoroutinefunction(getattr(credential, "get_token", None)):
        raise TypeError(
            f"{type(credential).__name__}.get_token is async; use connect_async or "
            "create_async_engine with it, or pass a sync credential"
        )


def _token(credential: AnyTokenCredential, scope: str) -> str:
    result: Any = credential.get_token(scope)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: close it rather than leave a warning behind
        raise TypeError(
            f"{type(credential).__name__}.get_token is async; use connect_async or "
            "create_async_engine with an async credential, or pass a sync credential"
        )
    return cast(AccessTokenLike, result).token


async def _token_async(credential: AnyTokenCredential, scope: str) -> str:
    result: Any = credential.get_token(scope)
    if inspect.isawaitable(result):
        result = await result
    return cast(AccessTokenLike, result).token


def _log_connect(params: Mapping[str, Any], scope: str) -> None:
    _LOG.debug(
        "connecting to PostgreSQL at %s:%s, database %s, as %s with a token for %s",
        params.get("host"),
        params.get("port", 5432),
        params.get("dbname"),
        params.get("user"),
        scope,
    )


# ------------------------------------------------------------------------------ psycopg 3


def connect(
    credential: TokenCredentialLike | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    connection: str | None = None,
    environ: Mapping[str, str] | None = None,
    scope: str | None = None,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """A psycopg 3 connection from the environment's connection keys, with a token as password.

    :param credential: anything with azure-core's ``get_token``; default ``DefaultCredential``
        (with ``{prefix}_CLIENTID``, when set, as its user-assigned identity).
    :keyword prefix: the keys' prefix (``--customized-keys`` may have changed it).
    :keyword connection: a second connection's name: keys ``{prefix}_{CONNECTION}_*``.
    :keyword environ: where the keys are read (default ``os.environ``); the default credential
        still reads its own settings from ``os.environ``.
    :keyword scope: default ``https://ossrdbms-aad.database.windows.net/.default``.
    :param kwargs: to ``psycopg.connect``; libpq keywords here override the environment's.
    :raises ConnectionSettingsError: keys missing or malformed (before any token is requested).
    """
    import psycopg

    if credential is not None:
        _require_sync(credential)
    settings = _read_settings(prefix, connection, environ)
    params = _conninfo(settings, kwargs, "connect()")
    scope = scope or DEFAULT_SCOPE
    if credential is None:
        with _default_credential(settings.client_id) as default:
            token = _token(default, scope)
    else:
        token = _token(credential, scope)
    _log_connect(params, scope)
    return psycopg.connect(**params, password=token)


async def connect_async(
    credential: AnyTokenCredential | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    connection: str | None = None,
    environ: Mapping[str, str] | None = None,
    scope: str | None = None,
    **kwargs: Any,
) -> psycopg.AsyncConnection[Any]:
    """The async twin of `connect`: a ``psycopg.AsyncConnection``.

    The credential may be async (``keyless.identity.aio``, the default's kind) or sync.
    """
    import psycopg

    settings = _read_settings(prefix, connection, environ)
    params = _conninfo(settings, kwargs, "connect_async()")
    scope = scope or DEFAULT_SCOPE
    if credential is None:
        async with _async_default_credential(settings.client_id) as default:
            token = await _token_async(default, scope)
    else:
        token = await _token_async(credential, scope)
    _log_connect(params, scope)
    return await psycopg.AsyncConnection.connect(**params, password=token)


# ------------------------------------------------------------------------------- SQLAlchemy


def _engine_url(url: str | URL | None, settings: _Settings, connect_args: Mapping[str, Any]) -> URL:
    """`url` with the psycopg driver, or one built from the environment's keys; never with a
    password."""
    from sqlalchemy import URL
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url is not None:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # a message might repeat the URL and its password
            raise ConnectionSettingsError(
                "url is not a SQLAlchemy URL; use postgresql+psycopg://<role>@<host>:<port>/<db>"
            ) from None
        if parsed.get_backend_name() != "postgresql":
            raise ConnectionSettingsError(
                f"url is for {parsed.get_backend_name()!r}; these engines connect to PostgreSQL "
                "(postgresql+psycopg://<role>@<host>:<port>/<db>)"
            )
        if parsed.password is not None:
            raise ConnectionSettingsError(
                "url has a password: leave it out (postgresql+psycopg://<role>@<host>/<db>). "
                "The password is an access token the credential gets for each new connection"
            )
        _refuse_secrets(connect_args, "connect_args")
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    params = _conninfo(settings, connect_args, "connect_args")
    query = {
        key: str(value)
        for key, value in settings.params.items()
        if key not in ("host", "user", "dbname", "port")
    }
    port = params.get("port")
    return URL.create(
        "postgresql+psycopg",
        username=str(params["user"]),
        host=str(params["host"]),
        port=int(port) if port not in (None, "") else None,
        database=str(params["dbname"]),
        query=query,
    )


def create_engine(
    url: str | URL | None = None,
    credential: TokenCredentialLike | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    connection: str | None = None,
    environ: Mapping[str, str] | None = None,
    scope: str | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """A SQLAlchemy engine (``postgresql+psycopg``) whose every new connection logs in with a
    current token.

    The URL is ``url`` (without a password) or built from the environment's keys, as `connect`
    reads them. A ``do_connect`` listener puts ``credential.get_token(scope)`` in as the
    password each time the pool opens a connection. PostgreSQL checks a password only at
    login, so connections already in the pool keep working after their token expires; a new
    one needs a current token, and the credential's cache gives the cached one while it is good
    and refreshes it before it expires. So no ``pool_recycle`` is needed for tokens, and a pool
    never logs in with an expired one.

    :param credential: as for `connect`; default ``DefaultCredential``, made once per engine.
    :param engine_kwargs: to ``sqlalchemy.create_engine``; ``connect_args`` override the
        environment's keywords.
    """
    import sqlalchemy
    from sqlalchemy import event

    if "creator" in engine_kwargs:
        raise TypeError("create_engine opens connections itself (with a token); no creator=")
    if credential is not None:
        _require_sync(credential)
    settings = _read_settings(prefix, connection, environ, client_id_only=url is not None)
    connect_args = dict(engine_kwargs.get("connect_args") or {})
    engine_url = _engine_url(url, settings, connect_args)
    scope = scope or DEFAULT_SCOPE
    source = credential if credential is not None else _default_credential(settings.client_id)

    def provide_token(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        cparams["password"] = _token(source, scope)
        _log_connect(cparams, scope)

    engine = sqlalchemy.create_engine(engine_url, **engine_kwargs)
    event.listen(engine, "do_connect", provide_token)
    return engine


def create_async_engine(
    url: str | URL | None = None,
    credential: AnyTokenCredential | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    connection: str | None = None,
    environ: Mapping[str, str] | None = None,
    scope: str | None = None,
    **engine_kwargs: Any,
) -> AsyncEngine:
    """The async twin of `create_engine`: a SQLAlchemy ``AsyncEngine`` (needs ``greenlet``,
    as SQLAlchemy's asyncio extension does).

    A sync ``do_connect`` listener cannot await an async credential, so the engine gets an
    ``async_creator`` instead: it awaits a token, then opens the ``psycopg.AsyncConnection``
    with the keywords SQLAlchemy derived from the URL and ``connect_args``. The reason and the
    effect are the same: one current token per new pooled connection.

    :param credential: async (default ``keyless.identity.aio.DefaultCredential``) or sync.
    """
    import psycopg
    from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_async_engine

    if "async_creator" in engine_kwargs or "creator" in engine_kwargs:
        raise TypeError("create_async_engine opens connections itself (with a token); no creator")
    settings = _read_settings(prefix, connection, environ, client_id_only=url is not None)
    connect_args = dict(engine_kwargs.pop("connect_args", None) or {})
    engine_url = _engine_url(url, settings, connect_args)
    scope = scope or DEFAULT_SCOPE
    source = credential if credential is not None else _async_default_credential(settings.client_id)
    params: dict[str, Any] = {}

    async def open_connection() -> psycopg.AsyncConnection[Any]:
        token = await _token_async(source, scope)
        _log_connect(params, scope)
        return await psycopg.AsyncConnection.connect(**params, password=token)

    creator: Callable[[], Awaitable[Any]] = open_connection
    engine = sqlalchemy_async_engine(engine_url, async_creator=creator, **engine_kwargs)
    _cargs, derived = engine.sync_engine.dialect.create_connect_args(engine.url)
    params.update(derived, **connect_args)
    return engine
