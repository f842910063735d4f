"""The layers of docs/architecture.md hold, and the contracts that enforce them really bite.

`lint-imports` (import-linter) checks the contracts in pyproject.toml. Kept contracts prove
little unless a broken one is caught, so the other tests copy the source tree, add one
deliberately wrong import to the copy, and check that `lint-imports` fails and names it.
"""

from __future__ import annotations

import ast
import builtins
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the copy is found before the installed (editable) keyless.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def tree_with(tmp_path: Path, module: str, source: str) -> Path:
    """A copy of src/keyless and pyproject.toml, plus one module `module` holding `source`."""
    shutil.copytree(
        ROOT / "src" / "keyless",
        tmp_path / "src" / "keyless",
        ignore=shutil.ignore_patterns("__pycache__", "migrations"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "src" / Path(*module.split(".")).with_suffix(".py")
    path.write_text(source)
    return tmp_path


def test_the_contracts_hold_on_the_tree() -> None:
    result = lint_imports(ROOT, ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "imported", "contract"),
    [
        # The bottom layer reaching for the composition at the top.
        ("keyless.base._upward", "keyless.server.app", "Keyless parts import only"),
        # The access layer reaching into the resources above it (what the lookup hook avoids).
        ("keyless.access._upward", "keyless.resources.manager", "Keyless parts import only"),
        # Two services of one layer that must stay independent.
        ("keyless.vault._sideways", "keyless.gateway.names", "Keyless parts import only"),
        # The client library importing server code.
        ("keyless.identity._server", "keyless.base.errors", "keyless.identity, the client"),
    ],
)
def test_a_wrong_import_breaks_a_contract(
    tmp_path: Path, module: str, imported: str, contract: str
) -> None:
    tree = tree_with(tmp_path, module, f"import {imported}  # deliberately wrong\n")
    result = lint_imports(tree, tree / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract}" in result.stdout
    assert "BROKEN" in result.stdout
    # The report names the offending import, so whoever broke it knows where to look.
    assert f"{module} -> {imported}" in result.stdout


def test_no_class_is_named_like_a_builtin() -> None:
    """`class PermissionError_` reads as the builtin at a glance and hides it from grep."""

    shadowing = []
    for path in (ROOT / "src" / "keyless").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and hasattr(builtins, node.name.strip("_")):
                shadowing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert shadowing == []


# Control flow between two functions of one part, never shown to anyone: not errors.
SIGNALS = {"keyless.authority.federation.FetchNeeded", "keyless.host.sock_diag.Unavailable"}


def test_every_error_derives_from_keyless_error() -> None:
    """One hierarchy: a boundary can catch every deliberate refusal with `except KeylessError`,
    and each carries the HTTP status and the code a client branches on."""
    import importlib
    import inspect
    import pkgutil

    import keyless
    from keyless.base.errors import KeylessError

    outside = []
    for info in pkgutil.walk_packages(keyless.__path__, "keyless."):
        if info.name.startswith(("keyless.identity", "keyless.store.migrations")):
            continue  # the client library stands alone; migrations are scripts
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
                and f"{info.name}.{name}" not in SIGNALS
                and not issubclass(value, KeylessError)
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []
    # The classes carry their status and code; an instance may narrow them.
    from keyless.authority.errors import invalid_client
    from keyless.base.scopes import ScopeError

    assert (ScopeError.status, ScopeError.code) == (400, "InvalidResourceId")
    error = invalid_client("no such client", 700016)
    assert isinstance(error, KeylessError)
    assert (error.status, error.code) == (401, 700016)


def test_scope_checks_refuse_until_the_resources_layer_registers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """access asks resources whether a scope exists through a hook the server fills; a server
    composed without it must refuse assignments, not let one through at an unchecked scope."""
    from keyless.access import existence
    from keyless.base.scopes import parse_scope

    monkeypatch.setattr(existence, "_registered", None)
    scope = parse_scope(f"/subscriptions/{uuid.uuid4()}/resourceGroups/g")
    with pytest.raises(existence.LookupsMissing, match=r"keyless\.server\.app\.create_app") as err:
        existence.require_resource(None, "tenant", scope)  # type: ignore[arg-type]
    assert err.value.status == 500
