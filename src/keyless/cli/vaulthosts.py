"""Whether this machine resolves a vault's host name, and the one command that makes it.

`SecretClient` connects to `https://{vault}.vault.localhost:8443` by name. `*.localhost` is
loopback by RFC 6761, but glibc with `hosts: files dns` (containers, minimal installs) does not
resolve it, and the SDK then fails far from the cause. `keyless vault create` and `keyless env`
check each vault's host and print the fix (docs/vault.md, "Vault host names on your machine").
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "  # root may have no sudo at all


def fix_for(host: str) -> str:
    """The command (or, for a DNS name, the record) that makes `host` resolve."""
    if host == "localhost" or host.endswith(".localhost"):
        return f"echo '127.0.0.1 {host}' | {_sudo()}tee -a /etc/hosts"
    suffix = host.split(".", 1)[1] if "." in host else host
    return f"a DNS record *.{suffix} pointing at the Keyless server"


def unresolved_hosts(vault_urls: list[str]) -> list[str]:
    hosts = [(urlsplit(url).hostname or "").lower() for url in vault_urls]
    return [host for host in dict.fromkeys(hosts) if host and not resolves(host)]


def warn_unresolved(vault_urls: list[str]) -> None:
    """One warning per vault host this machine cannot resolve, with its fix on a line of its
    own (unwrapped: it is meant to be copied)."""
    for host in unresolved_hosts(vault_urls):
        lines = [
            f"warning: {host} does not resolve on this machine, so SecretClient cannot reach "
            "the vault. Fix:",
            f"  {fix_for(host)}",
        ]
        if host.endswith(".localhost"):
            lines.append(
                f"(or, once for all *.localhost names: {_sudo()}apt-get install libnss-myhostname; "
                'see docs/vault.md, "Vault host names on your machine")'
            )
        sys.stderr.write("\n".join(lines) + "\n")
