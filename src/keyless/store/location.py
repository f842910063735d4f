"""Where the embedded store lives; free of SQLAlchemy so the CLI can name it cheaply."""

from __future__ import annotations

from pathlib import Path


def default_store_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'keyless.db'}"
