"""The quickstart's sample app: a to-do list in PostgreSQL, reached with no password.

It is run by `keyless app run`, which gives it the app's settings (the connection string that
`keyless app connection create postgres` wrote: host, database, role, and no password) and the
managed identity endpoint. `keyless.identity.postgres.connect()` reads the one, gets a token
from the other and hands the token to PostgreSQL as the password; the token gateway checks it.
"""

from __future__ import annotations

import os
import sys

from keyless.identity.postgres import connect


def no_password_in_environment() -> None:
    """Show that nothing in the app's environment is a database password."""
    suspicious = [
        name
        for name, value in os.environ.items()
        if name in ("PGPASSWORD", "PGPASSFILE")
        or "password=" in value.lower()
        or name.endswith(("PASSWORD", "_PWD"))
    ]
    print(f"connection string: {os.environ.get('AZURE_POSTGRESQL_CONNECTIONSTRING', '(none)')}")
    if suspicious:
        print(f"the environment holds passwords: {', '.join(suspicious)}", file=sys.stderr)
        raise SystemExit(1)
    print("no password in the app's environment (checked every variable)")


def main() -> None:
    no_password_in_environment()
    with connect() as conn:
        user = conn.execute("SELECT current_user").fetchone()
        print(f"connected as database role {user[0] if user else '?'} with a Keyless token")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS todo (id serial PRIMARY KEY, title text NOT NULL, "
            "done boolean NOT NULL DEFAULT false)"
        )
        print("created table todo (if it was not there)")
        for title in ("connect without a password", "rotate nothing", "ship it"):
            conn.execute("INSERT INTO todo (title) VALUES (%s)", (title,))
        print("inserted 3 rows")
        conn.execute("UPDATE todo SET done = true WHERE title = 'connect without a password'")
        rows = conn.execute("SELECT id, title, done FROM todo ORDER BY id").fetchall()
        print(f"read {len(rows)} rows:")
        for row_id, title, done in rows:
            print(f"  {row_id:>3} [{'x' if done else ' '}] {title}")


if __name__ == "__main__":
    main()
