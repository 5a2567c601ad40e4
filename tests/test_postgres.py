"""PostgresEventStore against a real server: the contract, and readers that never skip."""

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

import fabula
from fabula import ExpectedVersion, RecordedEvent
from fabula.postgres import PostgresEventStore
from fabula.testing import Deposited, EventStoreContract, StoreFactory

from .postgres_support import drop_schemas, new_schema, require_postgres


@pytest.fixture
def schemas() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    drop_schemas(made)


@pytest.fixture
async def store(schemas: list[str]) -> AsyncIterator[PostgresEventStore]:
    url = require_postgres()
    schemas.append(new_schema())
    async with PostgresEventStore(url, schema=schemas[-1], poll_interval=0.2) as opened:
        yield opened


@pytest.fixture
async def holds(schemas: list[str]) -> AsyncIterator[list["HeldWriter"]]:
    """Held writers, rolled back at the end if a failing test left them open.

    (An open transaction would block dropping the test's schema for ever.)
    """
    del schemas  # requested so that this tears down before the schemas are dropped
    writers: list[HeldWriter] = []
    yield writers
    for writer in writers:
        if writer.conn is not None and not writer.conn.closed:
            await writer.conn.close()


class TestPostgresContract(EventStoreContract):
    """PostgresEventStore passes the store contract unchanged."""

    @pytest.fixture
    def event_store_factory(self, schemas: list[str]) -> StoreFactory:
        url = require_postgres()

        async def build() -> PostgresEventStore:
            schemas.append(new_schema())
            store = PostgresEventStore(url, schema=schemas[-1], poll_interval=0.1)
            await store.open()
            return store

        return build


def deposit(amount: int) -> Deposited:
    return Deposited(amount=Decimal(amount), note="")


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
        assert self.store._conninfo is not None
        self.conn = await psycopg.AsyncConnection.connect(self.store._conninfo)
        batch = tuple(events)
        encoded = [
            (
                self.stream_id,
                batch,
                ExpectedVersion.ANY,
                tuple(self.store.serializer.encode(e) for e in batch),
            )
        ]
        # The store's own write path, on a connection whose transaction we hold.
        self.results = await self.store._write(self.conn, encoded)  # type: ignore[arg-type]

    async def commit(self) -> None:
        assert self.conn is not None
        await self.conn.commit()
        await self.conn.close()


async def collect(
    store: PostgresEventStore, expected: int, seen: list[RecordedEvent]
) -> list[RecordedEvent]:
    async for recorded in store.subscribe():
        seen.append(recorded)
        if len(seen) == expected:
            break
    return seen


class TestNoSkippedEvents:
    async def test_a_held_transaction_is_delivered_when_it_commits(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """Later positions commit first; the subscriber still sees the held event, once."""
        held = HeldWriter(store, "held", holds)
        await held.begin([deposit(1)])
        held_position = held.results[0].position
        later = [await store.append(f"s-{n}", [deposit(n)], expected_version=0) for n in range(5)]
        assert all(result.position > held_position for result in later)  # the trap is set

        seen: list[RecordedEvent] = []
        reader = asyncio.create_task(collect(store, 6, seen))
        await asyncio.sleep(0.3)
        assert seen == []  # nothing is readable past the open transaction

        page = await store.read_log(after=0)
        assert page.events == []
        assert page.position < held_position

        await held.commit()
        delivered = await asyncio.wait_for(reader, timeout=10)
        positions = [r.position for r in delivered]
        assert positions == sorted(positions)
        assert positions[0] == held_position
        assert sorted(positions) == sorted({held_position, *(r.position for r in later)})

    async def test_random_interleavings_deliver_everything_once_in_order(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """Writers held open and committed in random order; a reader paging by position."""
        rng = random.Random(7)
        committed: set[int] = set()  # filled in once every writer has committed
        seen: list[RecordedEvent] = []
        stop = asyncio.Event()

        async def read() -> None:
            after = 0
            while not stop.is_set() or len(seen) < len(committed):
                page = await store.read_log(after=after, limit=rng.randint(1, 7))
                seen.extend(page.events)
                after = page.position
                await asyncio.sleep(rng.uniform(0, 0.003))

        reader = asyncio.create_task(read())
        traps = 0
        for round_number in range(15):
            held = [
                HeldWriter(store, f"h-{round_number}-{n}", holds) for n in range(rng.randint(1, 3))
            ]
            for writer in held:
                await writer.begin([deposit(n) for n in range(rng.randint(1, 3))])
            later = [
                await store.append(f"w-{round_number}-{n}", [deposit(n)], expected_version=0)
                for n in range(rng.randint(0, 4))
            ]
            traps += sum(
                1
                for writer in held
                for result in later
                if result.position > writer.results[0].position
            )
            rng.shuffle(held)
            for writer in held:
                await asyncio.sleep(rng.uniform(0, 0.01))
                await writer.commit()
        assert traps > 0  # later positions did commit before earlier, held ones
        committed = {r.position for r in await store.read_all(limit=10_000)}
        stop.set()
        await asyncio.wait_for(reader, timeout=20)
        positions = [r.position for r in seen]
        assert positions == sorted(positions), "delivered out of order"
        assert len(positions) == len(set(positions)), "delivered twice"
        assert set(positions) == committed, "skipped events"
