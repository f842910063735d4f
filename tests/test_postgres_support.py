"""Prove the throwaway PostgreSQL helper gives a real server that enforces passwords over TCP."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.postgres import PostgresServer


def _connect(server: PostgresServer, dbname: str, password: str | None) -> psycopg.Connection:
    """Connect over TCP (never the Unix socket, where auth is trust)."""
    conninfo = make_conninfo(
        host=server.host,
        port=server.port,
        user=server.superuser,
        dbname=dbname,
        connect_timeout=10,
        password=password,  # None is dropped, so libpq sends no password at all
    )
    return psycopg.connect(conninfo)


def test_server_accepts_password_and_rejects_passwordless(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make sure libpq cannot pick up a password from the environment or a ~/.pgpass file.
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")

    postgres_server.create_database("keyless_probe")
    assert postgres_server.sqlalchemy_url("keyless_probe").startswith("postgresql+psycopg://")

    with _connect(postgres_server, "keyless_probe", postgres_server.password) as conn:
        assert conn.execute("select 1, current_database()").fetchone() == (1, "keyless_probe")

    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        _connect(postgres_server, "keyless_probe", None).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(postgres_server, "keyless_probe", "wrong-" + postgres_server.password).close()


def test_stop_is_idempotent_and_cleans_up() -> None:
    server = PostgresServer().start()
    data_dir = server.data_dir
    assert data_dir.is_dir() and server.log_path.exists()
    with _connect(server, "postgres", server.password) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    server.stop()
    server.stop()
    assert not data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        _connect(server, "postgres", server.password).close()
