"""The in-memory store: the contract suite, plus what only it can show."""

import asyncio

import pytest

from fabula import EventStore, RecordedEvent
from fabula.exceptions import InvalidAppendError, InvalidReadError, StoreClosedError
from fabula.memory import InMemoryEventStore
from fabula.testing import (
    EventStoreContract,
    IdempotencyStoreContract,
    ProjectionStoreContract,
    ReactionStoreContract,
    SnapshotStoreContract,
    StoreFactory,
    TimerStoreContract,
    deposit,
)


class TestInMemoryEventStoreContract(
    EventStoreContract,
    ProjectionStoreContract,
    SnapshotStoreContract,
    IdempotencyStoreContract,
    ReactionStoreContract,
    TimerStoreContract,
):
    """InMemoryEventStore passes every capability's contract."""

    @pytest.fixture
    def event_store_factory(self) -> StoreFactory:
        async def build() -> InMemoryEventStore:
            return InMemoryEventStore()

        return build


class CountingStore(InMemoryEventStore):
    """Counts how often the log is scanned, to see whether a subscriber polls."""

    scans: int = 0

    async def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        type(self).scans += 1
        return await super()._scan(after, limit, names)


class TestInMemoryEventStore:
    async def test_idle_subscriber_does_not_poll(self) -> None:
        """An idle subscription waits for a wake-up instead of re-reading the log."""
        store = CountingStore()
        await store.append("acc-1", [deposit()], expected_version=0)
        received: list[RecordedEvent] = []

        async def consume() -> None:
            async for recorded in store.subscribe():
                received.append(recorded)  # noqa: PERF401 - must see each event as it arrives

        task = asyncio.create_task(consume())
        for _ in range(50):
            await asyncio.sleep(0)
        idle_scans = CountingStore.scans
        for _ in range(200):
            await asyncio.sleep(0)
        assert CountingStore.scans == idle_scans
        await store.append("acc-1", [deposit()], expected_version=1)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(received) == 2
        task.cancel()
        await store.close()

    async def test_closed_store_refuses_work(self) -> None:
        """Every operation after close() raises StoreClosedError."""
        store = InMemoryEventStore()
        await store.close()
        await store.close()
        with pytest.raises(StoreClosedError):
            await store.append("acc-1", [deposit()], expected_version=0)
        with pytest.raises(StoreClosedError):
            await store.read_all()
        with pytest.raises(StoreClosedError):
            await store.read_stream("acc-1")
        with pytest.raises(StoreClosedError):
            await anext(store.subscribe())

    async def test_repr_counts_rather_than_lists(self) -> None:
        """The repr shows how much is stored, not the events."""
        store = InMemoryEventStore()
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        assert repr(store) == "<InMemoryEventStore: 2 events in 1 streams>"

    async def test_append_many_refuses_non_stream_appends(self) -> None:
        """append_many takes StreamAppend items only."""
        store = InMemoryEventStore()
        with pytest.raises(InvalidAppendError, match="not a StreamAppend"):
            await store.append_many([("acc-1", [deposit()])])  # type: ignore[list-item]

    async def test_event_types_must_be_a_collection(self) -> None:
        """A bare class or name as event_types is refused, not iterated."""
        store = InMemoryEventStore()
        with pytest.raises(InvalidReadError, match="event_types"):
            await store.read_all(event_types="fabula.testing.Deposited")
        with pytest.raises(InvalidReadError, match="event_types"):
            await store.read_all(event_types=[42])  # type: ignore[arg-type]

    async def test_it_is_an_event_store(self) -> None:
        """InMemoryEventStore satisfies the EventStore protocol."""
        assert isinstance(InMemoryEventStore(), EventStore)
