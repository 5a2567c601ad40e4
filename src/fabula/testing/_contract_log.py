"""The EventStore contract, part two: the global log, subscriptions and concurrent writers.

`EventStoreContract` (in `fabula.testing`) combines the parts; subclass it.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest

from fabula._store import EventStore, ExpectedVersion, RecordedEvent
from fabula.exceptions import (
    ConcurrencyError,
)
from fabula.testing._contract_events import Withdrawn
from fabula.testing._suite import deposit, store_test

__all__ = ["ConcurrencyContract", "LogContract"]

_store_test = store_test("event_store_factory")


def _ids(recorded: list[RecordedEvent]) -> list[Any]:
    return [r.event.event_id for r in recorded]


class LogContract:
    """The global log in position order, and subscriptions that catch up then follow."""

    # -- the global log --------------------------------------------------------

    @_store_test
    async def test_read_all_is_in_position_order(self, store: EventStore) -> None:
        """read_all returns every event once, positions strictly increasing."""
        for n in range(5):
            await store.append(f"acc-{n % 2}", [deposit(n)], expected_version=ExpectedVersion.ANY)
        log = await store.read_all()
        positions = [r.position for r in log]
        assert len(log) == 5
        assert positions == sorted(set(positions))
        assert [r.event.amount for r in log] == [0, 1, 2, 3, 4]  # type: ignore[attr-defined]

    @_store_test
    async def test_read_all_after_and_limit(self, store: EventStore) -> None:
        """read_all pages through the log with after and limit."""
        await store.append("acc-1", [deposit(n) for n in range(7)], expected_version=0)
        seen: list[RecordedEvent] = []
        after = 0
        while page := await store.read_all(after=after, limit=3):
            assert len(page) <= 3
            seen.extend(page)
            after = page[-1].position
        assert [r.event.version for r in seen] == list(range(1, 8))

    @_store_test
    async def test_read_all_filters_by_event_type(self, store: EventStore) -> None:
        """read_all with event_types returns only those types, by class or by name."""
        await store.append(
            "acc-1",
            [deposit(), Withdrawn(amount=Decimal(1)), deposit(), Withdrawn(amount=Decimal(2))],
            expected_version=0,
        )
        by_class = await store.read_all(event_types=[Withdrawn])
        by_name = await store.read_all(event_types={"fabula.testing.Withdrawn"})
        assert [r.event.version for r in by_class] == [2, 4]
        assert by_name == by_class
        assert await store.read_all(event_types=[Withdrawn], limit=1) == by_class[:1]
        assert await store.read_all(event_types=[]) == []

    # -- subscriptions -----------------------------------------------------------

    @_store_test
    async def test_subscribe_catches_up_then_follows_live(self, store: EventStore) -> None:
        """Subscribe yields stored events after `after`, then new ones as they commit."""
        await store.append("acc-1", [deposit(1), deposit(2), deposit(3)], expected_version=0)
        first = (await store.read_all())[0].position
        received: list[RecordedEvent] = []
        six = asyncio.Event()

        async def consume() -> None:
            async for recorded in store.subscribe(after=first):
                received.append(recorded)
                if len(received) == 4:
                    six.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await store.append("acc-2", [deposit(4)], expected_version=0)
        await store.append("acc-1", [deposit(5)], expected_version=3)
        await asyncio.wait_for(six.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r.event.amount for r in received] == [2, 3, 4, 5]  # type: ignore[attr-defined]
        positions = [r.position for r in received]
        assert positions == sorted(set(positions))

    @_store_test
    async def test_subscribe_filters_by_event_type(self, store: EventStore) -> None:
        """Subscribe with event_types yields only those types."""
        got: list[RecordedEvent] = []
        done = asyncio.Event()

        async def consume() -> None:
            async for recorded in store.subscribe(event_types=[Withdrawn]):
                got.append(recorded)
                done.set()

        task = asyncio.create_task(consume())
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        await store.append("acc-1", [Withdrawn(amount=Decimal(7))], expected_version=2)
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        assert [type(r.event) for r in got] == [Withdrawn]

    @_store_test
    async def test_subscribe_by_stored_name(self, store: EventStore) -> None:
        """Subscriptions accept stored names as well as classes."""
        await store.append("acc-1", [deposit(), Withdrawn(amount=Decimal(1))], expected_version=0)
        subscription = store.subscribe(event_types={"fabula.testing.Withdrawn"})
        first = await asyncio.wait_for(anext(aiter(subscription)), 10)
        assert (type(first.event), first.event.version) == (Withdrawn, 2)

    @_store_test
    async def test_subscription_ends_when_the_store_closes(self, store: EventStore) -> None:
        """An idle subscription ends (without error) when its store is closed."""
        await store.append("acc-1", [deposit()], expected_version=0)

        async def consume() -> int:
            return len([r async for r in store.subscribe()])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        await store.close()
        assert await asyncio.wait_for(task, 10) == 1


class ConcurrencyContract:
    """Concurrent writers: one winner per version, nothing lost, nothing skipped."""

    # -- concurrency -------------------------------------------------------------

    @_store_test
    async def test_concurrent_writers_one_stream_one_winner_per_version(
        self, store: EventStore
    ) -> None:
        """Of many writers expecting the same version, exactly one wins each round."""
        writers = 20
        for version in range(5):
            gate = asyncio.Event()

            async def write(gate: asyncio.Event = gate, version: int = version) -> bool:
                await gate.wait()
                try:
                    await store.append("hot", [deposit()], expected_version=version)
                except ConcurrencyError:
                    return False
                return True

            tasks = [asyncio.create_task(write()) for _ in range(writers)]
            await asyncio.sleep(0)
            gate.set()
            assert sum(await asyncio.gather(*tasks)) == 1
        assert [r.event.version for r in await store.read_stream("hot")] == [1, 2, 3, 4, 5]

    @_store_test
    async def test_concurrent_writers_with_retries_lose_nothing(self, store: EventStore) -> None:
        """Writers that retry on conflict all land; every acknowledged event is stored once."""
        acknowledged: list[Any] = []

        async def writer(n: int) -> None:
            rng = random.Random(n)  # noqa: S311 - jitter, not cryptography
            for _ in range(5):
                event = deposit(n)
                while True:
                    version = len(await store.read_stream("hot"))
                    try:
                        await store.append("hot", [event], expected_version=version)
                    except ConcurrencyError:
                        await asyncio.sleep(rng.random() / 1000)
                        continue
                    acknowledged.append(event.event_id)
                    break

        await asyncio.gather(*(writer(n) for n in range(10)))
        stored = await store.read_stream("hot")
        assert sorted(_ids(stored), key=str) == sorted(acknowledged, key=str)
        assert [r.event.version for r in stored] == list(range(1, 51))

    @_store_test
    async def test_concurrent_writers_many_streams_all_land(self, store: EventStore) -> None:
        """Writers on separate streams all succeed; global positions are unique and ordered."""

        async def writer(n: int) -> list[int]:
            positions = []
            for version in range(10):
                result = await store.append(f"s-{n}", [deposit(n)], expected_version=version)
                positions.append(result.position)
            return positions

        per_writer = await asyncio.gather(*(writer(n) for n in range(25)))
        log = []
        after = 0
        while page := await store.read_all(after=after, limit=100):
            log.extend(page)
            after = page[-1].position
        positions = [r.position for r in log]
        assert len(log) == 250
        assert positions == sorted(set(positions))
        assert sorted(p for ps in per_writer for p in ps) == positions
        for n in range(25):
            assert [r.event.version for r in await store.read_stream(f"s-{n}")] == list(
                range(1, 11)
            )

    @_store_test
    async def test_checkpointing_reader_sees_every_event_once(self, store: EventStore) -> None:
        """A reader paging by last position during writes sees each event once, in order."""
        writers, appends = 8, 15
        total = writers * appends

        async def writer(n: int) -> None:
            for version in range(appends):
                await store.append(f"w-{n}", [deposit(n)], expected_version=version)
                await asyncio.sleep(0)

        async def reader() -> list[RecordedEvent]:
            seen: list[RecordedEvent] = []
            while len(seen) < total:
                after = seen[-1].position if seen else 0
                page = await store.read_all(after=after, limit=7)
                seen.extend(page)
                if not page:
                    await asyncio.sleep(0.001)
            return seen

        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(writers)))
        seen = await asyncio.wait_for(reading, 30)
        assert len(seen) == total
        assert len({r.event.event_id for r in seen}) == total
        assert [r.position for r in seen] == sorted({r.position for r in seen})
