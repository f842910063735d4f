"""`--query` and `--output` as az scripts use them, on every command.

The formats' rules are checked on their own (pure functions); then real `keyless` processes run
against a real server, including through a real shell for the tutorial's
`X=$(keyless identity create ... --query id --output tsv)` idiom.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from keyless.cli.main import app
from keyless.cli.render import as_tsv, as_yaml, table_of
from tests.support.server import KEYLESS, KeylessServer
from tests.test_cli_resources import kl, q, refused, run, unique

IDENTITY = "Keyless.ManagedIdentity/userAssignedIdentities"


# ------------------------------------------------------------------------- the formats' rules


def test_tsv_prints_scalars_bare_and_one_line_per_list_item() -> None:
    assert as_tsv("/subscriptions/s/x") == "/subscriptions/s/x\n"
    assert as_tsv(["a", "b"]) == "a\nb\n"
    assert as_tsv(3) == "3\n"
    assert as_tsv(True) == "true\n"  # a bare boolean as az prints it
    rows = [
        {"name": "a", "n": 1, "tags": {"x": "y"}, "ids": ["p", "q"], "on": True, "gone": None},
        {"name": "b", "n": 2, "tags": {}, "ids": [], "on": False, "gone": None},
    ]
    # Fields in the object's order; a nested object is an empty field, a nested list its
    # length, Python's spellings inside a line: the columns line up whatever the values are.
    assert as_tsv(rows) == "a\t1\t\t2\tTrue\tNone\nb\t2\t\t0\tFalse\tNone\n"
    assert as_tsv([["a", 1], ["b", 2]]) == "a\t1\nb\t2\n"


def test_yaml_keeps_the_apis_field_order() -> None:
    data = {"name": "x", "id": "/a", "tags": {"b": "1", "a": "2"}, "list": [1, 2]}
    text = as_yaml(data)
    assert yaml.safe_load(text) == data
    assert text.index("name:") < text.index("id:") < text.index("tags:")


def test_table_columns_reach_into_nested_fields_and_show_their_values() -> None:
    # The defect of `connection list -o table`: dotted columns were looked up as flat keys,
    # so they were always empty.
    rows = [
        {
            "name": "c1",
            "properties": {"targetService": {"type": "postgres"}, "authInfo": {"authType": "sys"}},
        }
    ]
    table = table_of(
        rows, ["name", "properties.targetService.type", "properties.authInfo.authType"]
    )
    assert [c.header for c in table.columns] == ["name", "type", "authType"]
    assert [list(c.cells) for c in table.columns] == [["c1"], ["postgres"], ["sys"]]


def test_table_without_columns_shows_first_level_scalars_as_az_does() -> None:
    table = table_of([{"name": "a", "tags": {"x": 1}, "n": None}, {"name": "b", "n": 2}])
    assert [c.header for c in table.columns] == ["name", "n"]
    assert [list(c.cells) for c in table.columns] == [["a", "b"], ["", "2"]]
    scalars = table_of(["x", "y"])
    assert [c.header for c in scalars.columns] == ["Result"]
    assert list(scalars.columns[0].cells) == ["x", "y"]


def test_every_command_that_prints_a_result_takes_query_and_output() -> None:
    """Added in one place, so a new command cannot miss them."""
    raw = {"serve", "env", "logout", "gateway serve", "app run", "app serve-imds"}
    missing: list[str] = []
    seen = 0

    def walk(command: Any, path: str) -> None:
        nonlocal seen
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}".strip())
            return
        names = {opt for param in command.params for opt in param.opts}
        seen += 1
        if path in raw:
            assert "--query" not in names, path
        elif not {"--query", "--output", "-o"} <= names:
            missing.append(path)

    walk(get_command(app), "")
    assert seen > 60
    assert missing == []


def test_version() -> None:
    from importlib.metadata import version

    out = subprocess.run([*KEYLESS, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"keyless {version('keyless')}\n"


def test_completion_installs_with_one_command_and_completes(tmp_path: Path) -> None:
    script = subprocess.run(
        [*KEYLESS, "--show-completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    assert "_KEYLESS_COMPLETE=complete_bash" in script and "complete " in script

    # As the README says: one command, then a new shell completes `keyless ...` on Tab.
    bin_dir = str(Path(KEYLESS[0]).parent)
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    installed = subprocess.run(
        [*KEYLESS, "--install-completion"], env=env, capture_output=True, text=True, check=True
    )
    assert "bash completion installed" in installed.stdout
    for words, cword, expected in (
        ("keyless gro", 1, "group"),
        ("keyless identity cr", 2, "create"),
        ("keyless identity create --qu", 3, "--query"),
    ):
        shell = (
            "source ~/.bashrc\n"
            f"COMP_WORDS=({words}); COMP_CWORD={cword}\n"
            "_keyless_completion keyless\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run(
            ["bash", "-c", shell], env=env, capture_output=True, text=True, check=True
        )
        assert expected in done.stdout.split(), (words, done.stdout, done.stderr)


# ------------------------------------------------------------------- against a real server


@pytest.fixture
def group(keyless_server: KeylessServer) -> str:
    name = unique("rg")
    kl(keyless_server, f"group create -n {name}")
    return name


def test_tutorial_idiom_captures_the_id_in_a_real_shell(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    name = unique("id")
    bin_dir = str(Path(KEYLESS[0]).parent)
    script = (
        f"IDENTITY_RESOURCE_ID=$(keyless identity create -g {q(group)} -n {q(name)} "
        "--query id --output tsv)\n"
        'printf "%s|" "$IDENTITY_RESOURCE_ID"\n'
        f"CLIENT_ID=$(keyless identity show -g {q(group)} -n {q(name)} --query clientId -o tsv)\n"
        'printf "%s" "$CLIENT_ID"\n'
    )
    env = server.env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    captured_id, client_id = done.stdout.split("|")
    shown = kl(server, f"identity show -g {group} -n {name}")
    assert captured_id == shown["id"]  # no quotes, no newline, no decoration
    assert captured_id.endswith(f"/providers/{IDENTITY}/{name}")
    assert client_id == shown["clientId"]


def test_query_then_each_output_format(keyless_server: KeylessServer, group: str) -> None:
    server = keyless_server
    names = sorted(unique("id") for _ in range(2))
    for name in names:
        kl(server, f"identity create -g {group} -n {name} --tags env=dev")
    listed = kl(server, f"identity list -g {group}")

    lines = run(server, f'identity list -g {group} --query "[].name" -o tsv').stdout
    assert sorted(lines.splitlines()) == names
    rows = run(server, f'identity list -g {group} --query "[].[name, clientId]" -o tsv').stdout
    assert sorted(line.split("\t") for line in rows.splitlines()) == sorted(
        [i["name"], i["clientId"]] for i in listed
    )
    # Without a query, tsv is each object's fields in order (nested ones as empty fields).
    plain = run(server, f"identity show -g {group} -n {names[0]} -o tsv").stdout
    shown = kl(server, f"identity show -g {group} -n {names[0]}")
    assert plain.rstrip("\n").split("\t")[:3] == [shown["id"], shown["name"], shown["type"]]

    as_yaml_ = run(server, f"identity list -g {group} -o yaml").stdout
    assert yaml.safe_load(as_yaml_) == listed
    assert (
        run(server, f"identity list -g {group} -o jsonc").stdout
        == json.dumps(listed, indent=2) + "\n"
    )  # not a terminal: plain json, as az does
    projected = kl(server, f"identity list -g {group} --query \"[?name=='{names[1]}'].tags\"")
    assert projected == [{"env": "dev"}]
    # A query that selects nothing prints nothing (az does the same).
    assert run(server, f"identity list -g {group} --query missing").stdout == ""

    table = run(
        server, f'identity list -g {group} --query "[].{{who:name, cid:clientId}}" -o table'
    ).stdout
    assert "who" in table and "cid" in table
    for item in listed:
        assert item["name"] in table and item["clientId"] in table


def test_output_none_does_the_write_and_prints_nothing(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    name = unique("id")
    done = run(server, f"identity create -g {group} -n {name} -o none")
    assert done.stdout == ""
    assert kl(server, f"identity show -g {group} -n {name}")["name"] == name
    # A command with no --output of its own gets the global one too.
    display = unique("team")
    created = run(server, f"ad group create --display-name {display} --query displayName -o tsv")
    assert created.stdout == f"{display}\n"


def test_a_bad_query_says_what_is_wrong_and_writes_nothing(
    keyless_server: KeylessServer, group: str
) -> None:
    server = keyless_server
    name = unique("id")
    message = refused(server, f'identity create -g {group} -n {name} --query "id["')
    assert "--query 'id[' is not valid JMESPath" in message
    assert "column 3" in message and "nothing was done" in message
    message = refused(server, f'identity create -g {group} -n {name} --query "[].{{a:name"')
    assert "is not valid JMESPath" in message and "column 10" in message
    message = refused(server, f"identity create -g {group} -n {name} --query 'a ~ b'")
    assert "'~' is not a JMESPath token" in message and "column 2" in message
    message = refused(server, f"identity create -g {group} -n {name} --query ''")
    assert "--query is empty" in message
    # A misspelt function parses; it is caught before the command runs all the same.
    message = refused(server, f'identity create -g {group} -n {name} --query "lenght(@)"')
    assert "calls lenght(), which JMESPath does not have" in message and "length" in message
    # None of them created the identity.
    assert kl(server, f'identity list -g {group} --query "[].name"') == []

    bad = run(server, f"identity create -g {group} -n {name} -o xml", check=False)
    assert bad.returncode == 2 and "'xml' is not one of" in bad.stderr
    assert kl(server, f'identity list -g {group} --query "length(@)"') == 0


def test_jsonc_is_coloured_on_a_terminal(keyless_server: KeylessServer, group: str) -> None:
    main, child = pty.openpty()
    try:
        process = subprocess.Popen(
            [*KEYLESS, "group", "show", "-n", group, "-o", "jsonc"],
            env=keyless_server.env(TERM="xterm-256color"),
            stdin=subprocess.DEVNULL,
            stdout=child,
            stderr=subprocess.PIPE,
        )
        os.close(child)
        chunks: list[bytes] = []
        while True:
            ready, _, _ = select.select([main], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=30) == 0
    finally:
        os.close(main)
    text = b"".join(chunks).decode()
    assert "\x1b[" in text  # coloured
    assert f'"{group}"' in text
