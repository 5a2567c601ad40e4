"""Where the PostgreSQL tests find their server, and a fresh schema per store.

The server is `FABULA_POSTGRES_URL` (default: the local one, trust auth).
Where none is reachable the tests skip, saying why; with
`FABULA_REQUIRE_POSTGRES=1` (as CI sets) they fail instead.
"""

import functools
import os
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import fabula
from fabula import ExpectedVersion
from fabula._stored import prepare_append
from fabula.postgres import PostgresEventStore, Tx
from fabula.testing import Deposited, register_contract_events

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


def horizon_holders() -> list[tuple[object, ...]]:
    """The sessions whose transactions hold the cluster's horizon back, oldest first.

    For failure messages: a PostgreSQL reader sees an event only once every
    older transaction in the cluster has ended, so a test that times out
    waiting for one names who was in the way.
    """
    with psycopg.connect(URL, autocommit=True) as conn:
        mine = conn.info.backend_pid
        rows = conn.execute(
            "SELECT pid, application_name, state, backend_xid, backend_xmin, "
            "now() - xact_start AS open_for, left(query, 80) "
            "FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL "
            "ORDER BY xact_start"
        ).fetchall()
    return [tuple(row) for row in rows if row[0] != mine]


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


register_contract_events(fabula.default_registry)  # Balances reads the suite's events


class Balances(fabula.Projection[Tx]):
    """Per-account balances, in a table beside the events."""

    name = "balances"
    tables = ("balances",)

    def __init__(self, *, fail_on: Decimal | None = None, kill_on: Decimal | None = None) -> None:
        self.fail_on = fail_on
        self.kill_on = kill_on  # the first time: the handler's own connection is killed

    def setup(self, tx: Tx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, total numeric NOT NULL)"
        )

    @fabula.handles
    def _deposited(self, event: Deposited, tx: Tx) -> None:
        if event.amount == self.fail_on:
            msg = f"cannot project {event.amount}"
            raise RuntimeError(msg)
        if event.amount == self.kill_on:
            self.kill_on = None
            tx.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        tx.execute(
            "INSERT INTO balances VALUES (%s, %s) "
            "ON CONFLICT (account) DO UPDATE SET total = balances.total + excluded.total",
            (str(event.aggregate_id), event.amount),
        )


class HeldWriter:
    """An append whose transaction stays open after it drew its positions."""

    def __init__(
        self, store: PostgresEventStore, stream_id: str, registry: list["HeldWriter"]
    ) -> None:
        registry.append(self)
        self.store = store
        self.stream_id = stream_id
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.results: list[fabula.AppendResult] = []

    async def begin(self, events: list[Deposited]) -> None:
        self.conn = await psycopg.AsyncConnection.connect(require_postgres())
        parts = prepare_append(self.stream_id, events, ExpectedVersion.ANY, self.store.serializer)
        # The store's own write path, on a connection whose transaction we hold.
        self.results, _ = await self.store._appender._write(self.conn, parts)

    async def commit(self) -> None:
        assert self.conn is not None
        await self.conn.commit()
        await self.conn.close()
