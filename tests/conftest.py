"""Shared fixtures and the hypothesis profiles.

Fixtures that open stores close them at teardown, whatever the test did:
a failed assertion never leaks a writer thread or a connection.

`HYPOTHESIS_PROFILE=ci` (set by `.ci/run` through nox) runs more examples,
derandomised so a CI failure reproduces.
"""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import fabula
from fabula import default_registry
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.testing import register_contract_events

from .support.postgres import drop_schemas, new_schema, require_postgres
from .support.stores import OpenSQLite
from .support.telemetry import meters, provider, spans  # noqa: F401 - fixtures for every test

# Tests of our own store the contract suite's events too.
register_contract_events(default_registry)

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
async def open_sqlite(tmp_path: Path) -> AsyncIterator[OpenSQLite]:
    """Open SQLite stores (on `tmp_path / "e.db"` by default), each closed at teardown."""
    opened: list[SQLiteEventStore] = []

    def open_store(path: str | Path | None = None, **options: Any) -> SQLiteEventStore:
        store = SQLiteEventStore(tmp_path / "e.db" if path is None else path, **options)
        opened.append(store)
        return store

    yield open_store
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def sqlite_store(open_sqlite: OpenSQLite) -> SQLiteEventStore:
    """A SQLiteEventStore on a fresh file, closed at teardown."""
    return open_sqlite()


@pytest.fixture
async def memory_store() -> AsyncIterator[InMemoryEventStore]:
    """A fresh InMemoryEventStore, closed at teardown."""
    store = InMemoryEventStore()
    yield store
    await store.close()


@pytest.fixture
def schemas() -> Iterator[list[str]]:
    """PostgreSQL schemas a test made (append to it), dropped at teardown."""
    made: list[str] = []
    yield made
    drop_schemas(made)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def each_store(
    request: pytest.FixtureRequest, tmp_path: Path, schemas: list[str]
) -> AsyncIterator[fabula.Store]:
    """A fresh store of each kind (in memory, a SQLite file, a PostgreSQL schema), closed after."""
    built: fabula.Store
    if request.param == "memory":
        built = InMemoryEventStore()
    elif request.param == "sqlite":
        built = SQLiteEventStore(tmp_path / "e.db")
    else:
        schemas.append(new_schema())
        pg = PostgresEventStore(require_postgres(), schema=schemas[-1], poll_interval=0.05)
        await pg.open()
        built = pg
    yield built
    await built.close()
