"""The in-memory store: the contract suite, plus what only it can show."""

import pytest

from fabula.memory import InMemoryEventStore
from fabula.testing import EventStoreContract, StoreFactory


class TestInMemoryEventStoreContract(EventStoreContract):
    """InMemoryEventStore passes the store contract."""

    @pytest.fixture
    def event_store_factory(self) -> StoreFactory:
        async def build() -> InMemoryEventStore:
            return InMemoryEventStore()

        return build
