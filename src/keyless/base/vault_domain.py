"""Where vaults answer: `https://{vault}.vault.{public host}:{port}`, and the audience the Key
Vault client checks those hosts against. Imports nothing of Keyless, so the authority and the
TLS setup can use it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Key Vault's naming rules, for every module that checks a name before using it.
VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VERSION = re.compile(r"^[0-9A-Fa-f]{32}$")


@dataclass(frozen=True)
class VaultDomain:
    """`vault.localhost` and port 8443 give vault URLs `https://{name}.vault.localhost:8443`
    and the audience `https://vault.localhost:8443` that the Key Vault client checks the vault
    host against (it must end with `.` + the audience's host and port)."""

    host: str
    port: int

    @classmethod
    def from_endpoint(cls, endpoint: str) -> VaultDomain:
        parts = urlsplit(endpoint)
        return cls(f"vault.{(parts.hostname or 'localhost').lower()}", parts.port or 443)

    @property
    def usable(self) -> bool:
        """Vault host names need a DNS public host (`x.vault.127.0.0.1` is no name)."""
        try:
            ipaddress.ip_address(self.host.removeprefix("vault."))
        except ValueError:
            return True
        return False

    @property
    def _port_suffix(self) -> str:
        return "" if self.port == 443 else f":{self.port}"

    @property
    def audience(self) -> str:
        return f"https://{self.host}{self._port_suffix}"

    @property
    def tls_name(self) -> str:
        return f"*.{self.host}"

    def vault_url(self, name: str) -> str:
        return f"https://{name.lower()}.{self.host}{self._port_suffix}"

    def vault_of(self, host_header: str) -> str | None:
        """The vault a request's Host header names, or None when it names no vault."""
        host = host_header.lower()
        if host.startswith("["):
            return None
        host = host.rsplit(":", 1)[0] if ":" in host else host
        suffix = "." + self.host
        if not host.endswith(suffix):
            return None
        label = host[: -len(suffix)]
        return label if label and "." not in label else None


def tls_names_for(endpoint: str) -> list[str]:
    domain = VaultDomain.from_endpoint(endpoint)
    return [domain.tls_name] if domain.usable else []
