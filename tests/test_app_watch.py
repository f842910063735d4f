"""`keyless app run --watch` and its restarts, on the paths the rotation test does not take.

A new version with the same value must not restart the app; a re-read that fails (the role
removed) is reported and changes nothing; an app that ignores SIGTERM is killed after the grace
period and started again with the new environment. Real processes throughout: the session
server, the `keyless` CLI, apps started by `keyless app run`, and for the grace period real
children of `run_child`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from keyless.host.runner import Restarts, run_child
from tests.test_host import RUN_TIMEOUT_S, WAIT_S, Background, wait_for
from tests.test_vault_references import (
    GET_SECRET,
    World,
    app_with_identity,
    grant,
    secret_value,
    sha,
    squeeze,
    unique,
    watched_run,
    world,  # noqa: F401  (the module-scoped fixture, shared)
)


def reads_of(w: World, principal_id: str, secret: str) -> int:
    """How many reads of `secret` by `principal_id` the audit log holds, granted or not."""
    records = json.loads(
        w.server.cli("audit", "list", "--actor", principal_id, "--limit", "1000").stdout
    )
    return sum(
        1
        for r in records
        if r["action"] == GET_SECRET and r["target"].split("/secrets/")[-1] == secret
    )


def wait_for_reads(w: World, principal_id: str, secret: str, at_least: int) -> None:
    """Waits (bounded) until the watcher has re-read `secret` `at_least` times in all: a
    read that starts after an event and ends is then certain to have happened."""
    deadline = time.monotonic() + WAIT_S
    while reads_of(w, principal_id, secret) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"the watcher did not re-read {secret} within {WAIT_S}s")
        time.sleep(0.2)


def watched_app(w: World, secret: str, value: str) -> tuple[str, str]:
    """A new app with a system identity that may read the vault, whose setting WATCHED
    follows the latest version of `secret`; (app name, its principal ID)."""
    w.set_secret(secret, value)
    name = unique("watch")
    principal = app_with_identity(w, name)["identity"]["principalId"]
    grant(w, principal)
    w.settings(name, WATCHED=f"@Microsoft.KeyVault(VaultName={w.vault_name};SecretName={secret})")
    return name, principal


def stopped(w: World, run: Background) -> tuple[str, str]:
    """Ends `keyless app run` as a user does (SIGTERM, forwarded to the app); its output,
    once it exited 0."""
    run.process.send_signal(signal.SIGTERM)
    stdout, stderr = run.process.communicate(timeout=RUN_TIMEOUT_S)
    w.outputs += [stdout, stderr]
    assert run.process.returncode == 0, stderr
    return stdout, stderr


def test_a_new_version_with_the_same_value_does_not_restart(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    value = secret_value()
    secret = unique("same")
    app, principal = watched_app(world, secret, value)
    with watched_run(world, tmp_path, ["WATCHED"], app) as (run, out):
        started = wait_for(out, run)
        assert started["seen"] == {"WATCHED": sha(value)}
        version = world.set_secret(secret, value)
        wait_for_reads(world, principal, secret, reads_of(world, principal, secret) + 2)
        assert not out.exists(), "the app was started again"
        assert run.process.poll() is None
        stdout, stderr = stopped(world, run)
    message = squeeze(stderr)
    assert squeeze(f"has a new version ({version}) with the same value") in message
    assert squeeze("the app is not restarted") in message
    assert "restarting the app" not in stderr
    assert value not in stderr and value not in stdout


def test_a_failing_re_read_is_reported_once_and_the_app_keeps_running(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    value = secret_value()
    secret = unique("lost")
    app, principal = watched_app(world, secret, value)
    with watched_run(world, tmp_path, ["WATCHED"], app) as (run, out):
        started = wait_for(out, run)
        assert started["seen"] == {"WATCHED": sha(value)}
        world.cli(
            "role", "assignment", "delete", "--assignee", principal,
            "--role", "Vault Secrets User", "--scope", world.vault["id"],
        )  # fmt: skip
        before = reads_of(world, principal, secret)
        wait_for_reads(world, principal, secret, before + 3)  # several refused re-reads
        assert not out.exists(), "the app was restarted"
        assert run.process.poll() is None, "keyless app run ended"
        _, stderr = stopped(world, run)
    message = squeeze(stderr)
    report = squeeze("re-checking; the app keeps its current value")
    assert message.count(report) == 1, stderr  # once, not at every poll
    assert squeeze(GET_SECRET) in message and "403" in stderr
    assert "restarting the app" not in stderr


# ------------------------------------------------------------------ the grace period, directly

# Ignores SIGTERM (as a stuck app would), says its pid and what it sees, then sleeps.
STUBBORN = """
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "generation": os.environ["GENERATION"]}) + "\\n")
time.sleep(60)
sys.exit(99)
"""

# Says its pid, then exits 7 at SIGTERM.
POLITE = """
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "generation": os.environ["GENERATION"]}) + "\\n")
time.sleep(60)
sys.exit(99)
"""


def _lines(path: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(lines)} of {count} starts within {WAIT_S}s")
        time.sleep(0.05)


def _run_with_driver(
    body: str, tmp_path: Path, restarts: Restarts, drive: Any
) -> tuple[int, list[int], Path]:
    """`run_child` in this (main) thread, as `keyless app run` runs it (it installs signal
    handlers, which only the main thread may); `drive(out)` acts on it from another thread.
    Whatever was started is killed at the end, whatever happened."""
    out = tmp_path / "starts.jsonl"
    script = tmp_path / "child.py"
    script.write_text(body)
    pids: list[int] = []
    failure: list[BaseException] = []

    def driver() -> None:
        try:
            drive(out)
        except BaseException as exc:
            failure.append(exc)
            for pid in pids:
                subprocess.run(["kill", "-9", str(pid)], capture_output=True, check=False)

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    try:
        code = run_child(
            [sys.executable, str(script), str(out)],
            {"PATH": "/usr/bin:/bin", "GENERATION": "1"},
            None,
            pids.append,
            restarts,
        )
    finally:
        for pid in pids:
            subprocess.run(["kill", "-9", str(pid)], capture_output=True, check=False)
        thread.join(timeout=RUN_TIMEOUT_S)
    if failure:
        raise failure[0]
    return code, pids, out


@pytest.mark.skipif(sys.platform != "linux", reason="process signals as on Linux")
def test_an_app_that_ignores_sigterm_is_killed_after_the_grace_and_restarted(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    restarts = Restarts(grace=0.5, say=said.append)

    def drive(out: Path) -> None:
        (first,) = _lines(out, 1)
        assert first["generation"] == "1"
        assert restarts.request({"PATH": "/usr/bin:/bin", "GENERATION": "2"})
        _, second = _lines(out, 2)
        assert second["generation"] == "2" and second["pid"] != first["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)  # killed, and reaped by run_child
        os.kill(second["pid"], signal.SIGKILL)

    code, pids, out = _run_with_driver(STUBBORN, tmp_path, restarts, drive)
    assert said == ["the app did not end within 0.5s of SIGTERM; killing it"]
    assert len(pids) == 2 and len(_lines(out, 2)) == 2
    assert code == 128 + signal.SIGKILL  # the last process's end, as a shell reports it


@pytest.mark.skipif(sys.platform != "linux", reason="process signals as on Linux")
def test_a_polite_app_is_not_killed_and_only_the_last_exit_code_counts(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    restarts = Restarts(grace=30, say=said.append)

    def drive(out: Path) -> None:
        _lines(out, 1)
        assert restarts.request({"PATH": "/usr/bin:/bin", "GENERATION": "2"})
        _, second = _lines(out, 2)
        assert second["generation"] == "2"
        # The user's SIGTERM (to `keyless app run`): it reaches the app, and ends the run.
        os.kill(os.getpid(), signal.SIGTERM)

    code, pids, out = _run_with_driver(POLITE, tmp_path, restarts, drive)
    assert code == 7  # the second app's exit code at SIGTERM
    assert len(pids) == 2 and len(_lines(out, 2)) == 2  # never a third start
    assert not restarts.request({"PATH": "/usr/bin:/bin", "GENERATION": "3"})
    assert said == []
