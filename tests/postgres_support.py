"""Where the PostgreSQL tests find their server, and a fresh schema per store.

The server is `FABULA_POSTGRES_URL` (default: the local one, trust auth).
Where none is reachable the tests skip, saying why; with
`FABULA_REQUIRE_POSTGRES=1` (as CI sets) they fail instead.
"""

import functools
import os
import uuid

import psycopg
import pytest

URL = os.environ.get("FABULA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRED = os.environ.get("FABULA_REQUIRE_POSTGRES") == "1"


@functools.cache
def unreachable() -> str | None:
    """Why the server cannot be used, or None."""
    try:
        with psycopg.connect(URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {URL}: {exc}".strip()
    return None


def require_postgres() -> str:
    """Return the server's URL, or skip (fail, if required) when there is none."""
    reason = unreachable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"FABULA_REQUIRE_POSTGRES=1, but {reason}")
        pytest.skip(reason)
    return URL


def new_schema() -> str:
    """A schema name no other test uses."""
    return f"fabula_test_{uuid.uuid4().hex[:16]}"


def drop_schemas(names: list[str]) -> None:
    """Drop the schemas a test made."""
    if not names:
        return
    with psycopg.connect(URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
