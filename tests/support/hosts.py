"""Vault host names resolved the way a user makes them resolve: a hosts line.

glibc with `hosts: files dns` (this machine, most containers) does not resolve
`{vault}.vault.localhost`, and docs/vault.md tells users to add `127.0.0.1
{vault}.vault.localhost` to /etc/hosts. A test must not edit the machine's /etc/hosts, so the
command runs in a private mount namespace (`unshare --mount`) where a temporary file, the
machine's /etc/hosts plus those lines, is bind-mounted over /etc/hosts. Everything started
inside (`keyless app run` and the app it starts) reads that file through the ordinary resolver;
nothing in them is patched, and the machine's own /etc/hosts is untouched.

Needs root (or a user namespace that allows mounts), `unshare` and `mount`; `skip_reason()`
says why not when they are missing, so the tests that need this skip saying so.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

# `$0` is the hosts file, "$@" the command: mount it, then become the command.
_SHELL = 'mount --bind "$0" /etc/hosts && exec "$@"'


def hosts_text(names: Sequence[str], base: Path = Path("/etc/hosts")) -> str:
    """The machine's hosts file with `127.0.0.1 NAME` lines added for `names`."""
    current = base.read_text() if base.exists() else ""
    if current and not current.endswith("\n"):
        current += "\n"
    return current + "".join(f"127.0.0.1 {name}\n" for name in names)


def with_hosts(command: Sequence[str], hosts_file: Path) -> list[str]:
    """`command` run in a private mount namespace that sees `hosts_file` as /etc/hosts.
    The mount is private: nothing of it propagates back to the machine."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _SHELL,
            str(hosts_file), *command]  # fmt: skip


@functools.cache
def skip_reason() -> str | None:
    """None when `with_hosts` works here; otherwise why not (for pytest.skip)."""
    for tool in ("unshare", "mount", "sh", "getent"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed; private hosts files need util-linux's unshare"
    probe = "probe-7f3a.vault.localhost"
    with tempfile.TemporaryDirectory() as tmp:
        hosts = Path(tmp) / "hosts"
        hosts.write_text(hosts_text([probe]))
        try:
            done = subprocess.run(
                with_hosts(["getent", "hosts", probe], hosts),
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`unshare --mount` could not run here ({exc})"
    if done.returncode != 0 or "127.0.0.1" not in done.stdout:
        why = " ".join(done.stderr.split())[:300] or f"exit {done.returncode}"
        return (
            "`unshare --mount` with a bind-mounted /etc/hosts does not work here (it needs root "
            f"or a user namespace that may mount): {why}"
        )
    return None
