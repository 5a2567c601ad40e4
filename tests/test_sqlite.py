"""The SQLite store: the contract suite on a file and in memory, plus what only it can show."""

from pathlib import Path

import pytest

from fabula.sqlite import SQLiteEventStore
from fabula.testing import EventStoreContract, StoreFactory


class TestSQLiteFileContract(EventStoreContract):
    """A file-backed SQLiteEventStore passes the store contract."""

    @pytest.fixture
    def event_store_factory(self, tmp_path: Path) -> StoreFactory:
        count = 0

        async def build() -> SQLiteEventStore:
            nonlocal count
            count += 1
            return SQLiteEventStore(tmp_path / f"events-{count}.db")

        return build


class TestSQLiteMemoryContract(EventStoreContract):
    """An in-memory SQLiteEventStore passes the store contract."""

    @pytest.fixture
    def event_store_factory(self) -> StoreFactory:
        async def build() -> SQLiteEventStore:
            return SQLiteEventStore(":memory:")

        return build
