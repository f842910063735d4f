"""Options shared by every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keyless.authority.config import DataDir, default_data_dir
from keyless.cli.render import OutputFormat

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="KEYLESS_DATA_DIR",
        help="Keyless data directory \\[default: ~/.keyless].",
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        help="Output format (jsonc: json in colour; none: print nothing).",
        case_sensitive=False,
    ),
]


def paths_for(data_dir: Path | None) -> DataDir:
    return DataDir((data_dir or default_data_dir()).expanduser().resolve())
