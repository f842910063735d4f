"""`keyless.identity` imports nothing server-side (issue #12).

The client library is what applications install and import; it must not pull in the store,
the token service or anything else of the server (their dependencies, their start-up cost,
their attack surface). Two checks: every import statement under src/keyless/identity/ stays
inside `keyless.identity` (read from the source, so an import inside a function counts too),
and importing the library's public modules loads no other `keyless` module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "keyless" / "identity"
ALLOWED = "keyless.identity"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def server_side_imports(path: Path, source: str) -> list[str]:
    """`file:line module` for each import of a `keyless` module outside keyless.identity."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                targets = [".".join([*base, node.module] if node.module else base)]
            else:
                targets = [node.module or ""]
        else:
            continue
        for target in targets:
            inside = target == ALLOWED or target.startswith(ALLOWED + ".")
            if (target == "keyless" or target.startswith("keyless.")) and not inside:
                found.append(f"{path.name}:{node.lineno} {target}")
    return found


def test_no_source_file_imports_server_side() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [hit for path in files for hit in server_side_imports(path, path.read_text())]
    assert found == [], f"keyless.identity must not import the server side: {found}"


def test_a_server_side_import_is_caught() -> None:
    """The check is not vacuous: absolute, relative and function-level imports are caught,
    and the library's own imports are not."""
    wrong = (
        "from . import _cache\n"
        "from ..aio import _base\n"
        "from keyless.identity._http import send_steps\n"
        "from keyless.authority import tokens\n"
        "def later():\n"
        "    from ...store import db\n"
        "    import keyless.server.app\n"
    )
    found = server_side_imports(PACKAGE / "aio" / "_example.py", wrong)
    assert found == [
        "_example.py:4 keyless.authority",
        "_example.py:6 keyless.store",
        "_example.py:7 keyless.server.app",
    ]


def test_importing_the_library_loads_no_server_module() -> None:
    code = (
        "import json, sys\n"
        "import keyless.identity, keyless.identity.aio, keyless.identity.postgres\n"
        "import keyless.identity.aio.postgres\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('keyless'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    assert "keyless.identity.postgres" in loaded
    assert [m for m in loaded if m != "keyless" and not m.startswith(ALLOWED)] == []
