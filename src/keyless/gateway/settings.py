"""Where the gateway listens, with what TLS, and the bounds on every connection.

The TLS rule: plain LDAP only on a loopback address (the token never leaves the machine);
anywhere else the gateway speaks LDAPS with Keyless's server certificate (signed by the local
CA that `keyless init` made), and refuses to start without it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from keyless.authority.masterkey import MasterKey
from keyless.authority.tls import TlsFiles, server_key_password
from keyless.base.errors import KeylessError
from keyless.gateway.names import is_loopback

DEFAULT_PORT = 8389


class GatewaySettingsError(KeylessError, ValueError):
    """The gateway cannot listen as asked; the message says how to fix it."""


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * 1024  # a token is at most 16 KiB; a bind is far below this
    message_timeout_s: float = 10.0  # a whole request must arrive within this
    write_timeout_s: float = 10.0
    tls_handshake_timeout_s: float = 10.0
    max_requests: int = 100  # per connection; PostgreSQL sends one bind and an unbind
    max_connections: int = 512  # beyond this, new connections get a notice and are closed
    bind_threads: int = 4  # binds are decided off the event loop (store read, RSA verify)


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: ssl.SSLContext | None = None
    limits: Limits = field(default_factory=Limits)

    def check(self) -> None:
        if self.tls is None and not is_loopback(self.host):
            raise GatewaySettingsError(
                f"refusing to listen on {self.host} without TLS: access tokens would cross the "
                "network in clear. Listen on 127.0.0.1 (plain LDAP), or add --tls for LDAPS "
                "with Keyless's server certificate"
            )
        if not 0 <= self.port <= 65535:
            raise GatewaySettingsError(f"port {self.port} is not a TCP port (0-65535)")

    @property
    def scheme(self) -> str:
        return "ldap" if self.tls is None else "ldaps"


def server_tls_context(data_dir: Path, master: MasterKey) -> ssl.SSLContext:
    """LDAPS with the server certificate `keyless init` issued (its names: `--tls-name`)."""
    files = TlsFiles.in_dir(data_dir)
    if not files.server_cert.exists() or not files.server_key.exists():
        raise GatewaySettingsError(
            f"{data_dir} has no server certificate; run `keyless init` (add --tls-name for the "
            "name PostgreSQL will connect to)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(
        str(files.server_cert), str(files.server_key), password=server_key_password(master)
    )
    return context
