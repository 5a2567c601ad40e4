"""Projections: read models equal a pure fold, exactly once, across batches and restarts."""

import asyncio
import contextlib
import inspect
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fabula
from fabula import Projection, Projector, RecordedEvent, Repository, handles
from fabula.exceptions import CheckpointError, ProjectionError, StoreClosedError
from fabula.memory import InMemoryEventStore
from fabula.sqlite import SQLiteEventStore

from .support.domain import ADDRESS, Order, OrderCreated, OrderItemAdded, OrderSubmitted
from .support.leases import LeasingMemoryStore
from .support.read_models import OrderSummary, Summary, fold, read_summary
from .support.stores import OpenSQLite

PRODUCTS = [UUID(int=n) for n in range(1, 4)]


class MemorySummary(Projection[None]):
    """The same read model as a dict, for the in-memory store."""

    name = "order_summary"

    def __init__(self) -> None:
        self.rows: Summary = {}

    @handles
    def _created(self, event: OrderCreated, tx: None) -> None:
        del tx
        self.rows[str(event.aggregate_id)] = ("draft", 0, Decimal(0))

    @handles
    def _item_added(self, event: OrderItemAdded, tx: None) -> None:
        del tx
        status, count, total = self.rows[str(event.aggregate_id)]
        self.rows[str(event.aggregate_id)] = (
            status,
            count + event.quantity,
            total + event.quantity * event.unit_price,
        )

    @handles
    def _submitted(self, event: OrderSubmitted, tx: None) -> None:
        del tx
        _, count, total = self.rows[str(event.aggregate_id)]
        self.rows[str(event.aggregate_id)] = ("submitted", count, total)


async def all_events(store: fabula.EventStore) -> list[RecordedEvent]:
    return await store.read_all(limit=100_000)


# A history is a list of steps: ("create",), ("add", order index, product, quantity), ("submit", i)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("create")),
        st.tuples(st.just("add"), st.integers(0, 5), st.sampled_from(PRODUCTS), st.integers(1, 9)),
        st.tuples(st.just("submit"), st.integers(0, 5)),
    ),
    max_size=40,
)


async def play(repo: Repository, history: list[tuple[Any, ...]], orders: list[UUID]) -> None:
    """Carry out a history through the aggregates, skipping steps their rules refuse."""
    for step in history:
        if step[0] == "create":
            order = Order.create(uuid4(), ADDRESS)
            await repo.save(order)
            orders.append(order.id)
            continue
        if not orders:
            continue
        order = await repo.get(Order, orders[step[1] % len(orders)])
        try:
            if step[0] == "add":
                order.add_item(step[2], step[3], Decimal("1.25"))
            else:
                order.submit()
        except fabula.DomainError:
            continue
        await repo.save(order)


class FailingMemorySummary(MemorySummary):
    """MemorySummary that cannot project a quantity of 13."""

    @handles
    def _item_added(self, event: OrderItemAdded, tx: None) -> None:
        if event.quantity == 13:
            msg = "cannot project quantity 13"
            raise RuntimeError(msg)
        super()._item_added(event, tx)


class TestStopping:
    async def test_a_task_that_swallows_its_cancellation_is_still_stopped(self) -> None:
        """The projector's own tasks stop even if something inside them ate the first cancel.

        On Python 3.11, asyncio.wait_for (used by connection pools) can drop
        a cancellation; a standby loop then ran on, and the projector waited
        for it for ever.
        """
        from fabula._tasks import cancel_and_wait  # noqa: PLC0415 - the helper under test

        async def stubborn() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)  # the first cancellation is lost here
            await asyncio.sleep(30)

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await cancel_and_wait(task)
        assert task.cancelled()


class TestExactlyOnce:
    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(steps, min_size=1, max_size=4), st.lists(st.integers(1, 7), min_size=4, max_size=4)
    )
    def test_sqlite_read_model_equals_the_fold(
        self, chunks: list[list[tuple[Any, ...]]], batch_sizes: list[int]
    ) -> None:
        """Whatever the batch size and however often the projector restarts, rows == fold."""

        async def scenario() -> None:
            async with SQLiteEventStore(":memory:") as store:
                repo, orders = Repository(store), list[UUID]()
                for chunk, batch_size in zip(chunks, batch_sizes, strict=False):
                    await play(repo, chunk, orders)
                    # A fresh projector each round: a restart from the stored checkpoint.
                    await Projector(store, [OrderSummary()], batch_size=batch_size).catch_up()
                events = [r.event for r in await all_events(store)]
                assert read_summary(store) == fold(events)

        asyncio.run(scenario())

    @settings(max_examples=30, deadline=None)
    @given(st.lists(steps, min_size=1, max_size=4), st.integers(1, 7))
    def test_memory_read_model_equals_the_fold(
        self, chunks: list[list[tuple[Any, ...]]], batch_size: int
    ) -> None:
        """The in-memory store's projections reach the same read model."""

        async def scenario() -> None:
            store = InMemoryEventStore()
            projection = MemorySummary()
            projector = Projector(store, [projection], batch_size=batch_size)
            repo, orders = Repository(store), list[UUID]()
            for chunk in chunks:
                await play(repo, chunk, orders)
                await projector.catch_up()
            assert projection.rows == fold(r.event for r in await all_events(store))

        asyncio.run(scenario())

    async def test_two_projectors_never_apply_a_batch_twice(self, tmp_path: Path) -> None:
        """Racing catch-ups of one projection: a lost batch is not applied, the loser goes on."""
        async with SQLiteEventStore(tmp_path / "e.db") as store:
            repo = Repository(store)
            await play(repo, [("create",), ("add", 0, PRODUCTS[0], 2)] * 20, [])
            projectors = [Projector(store, [OrderSummary()], batch_size=5) for _ in range(3)]
            await asyncio.gather(*(p.catch_up() for p in projectors))
            assert read_summary(store) == fold(r.event for r in await all_events(store))
            head = await store.head_position()
            assert [(await p.status())[0].checkpoint for p in projectors] == [head] * 3

    async def test_wait_for_sees_a_checkpoint_another_projector_moved(self, tmp_path: Path) -> None:
        """A projector that lost the race reloads the checkpoint; its waiters see it too."""
        async with SQLiteEventStore(tmp_path / "e.db") as store:
            repo = Repository(store)
            projectors = [Projector(store, [OrderSummary()], batch_size=3) for _ in range(3)]
            runs = [asyncio.create_task(p.run()) for p in projectors]
            await play(repo, [("create",), ("add", 0, PRODUCTS[0], 2)] * 15, [])
            head = await store.head_position()
            try:
                await asyncio.gather(*(p.wait_for(head, timeout=10) for p in projectors))
            finally:
                for run in runs:
                    run.cancel()
                await asyncio.gather(*runs, return_exceptions=True)
            assert read_summary(store) == fold(r.event for r in await all_events(store))


class TestFailures:
    async def test_a_failing_handler_stops_at_that_event(self) -> None:
        """The projection halts at exactly the failing position; fixed, it applies it once."""
        async with SQLiteEventStore(":memory:") as store:
            repo, orders = Repository(store), list[UUID]()
            history = [("create",), ("add", 0, PRODUCTS[0], 2), ("add", 0, PRODUCTS[1], 13)]
            await play(repo, [*history, ("add", 0, PRODUCTS[2], 3), ("submit", 0)], orders)
            failing = Projector(store, [OrderSummary(fail_on_quantity=13)], batch_size=10)
            with pytest.raises(ProjectionError) as info:
                await failing.catch_up()
            assert (info.value.position, info.value.event_class) == (3, "OrderItemAdded")
            (status,) = await failing.status()
            assert (status.checkpoint, status.state, status.lag) == (2, "failing", 3)
            assert status.last_error is not None
            assert "cannot project quantity 13" in status.last_error.traceback
            assert read_summary(store) == {str(orders[0]): ("draft", 2, Decimal("2.50"))}

            fixed = Projector(store, [OrderSummary()], batch_size=10)
            await fixed.catch_up()
            events = [r.event for r in await all_events(store)]
            assert read_summary(store) == fold(events)
            assert read_summary(store)[str(orders[0])] == ("submitted", 18, Decimal("22.50"))

    @pytest.mark.parametrize("kind", ["sqlite", "memory"])
    async def test_an_operator_can_skip_the_failing_event_only(
        self, kind: str, open_sqlite: OpenSQLite
    ) -> None:
        """Skipping is explicit, only of the event stopped at, and recorded with a reason."""
        store: SQLiteEventStore | InMemoryEventStore = (
            open_sqlite(":memory:") if kind == "sqlite" else InMemoryEventStore()
        )
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13), ("submit", 0)], [])
        projection: Projection[Any] = (
            OrderSummary(fail_on_quantity=13) if kind == "sqlite" else FailingMemorySummary()
        )
        projector = Projector(store, [projection])
        with pytest.raises(ProjectionError):
            await projector.catch_up()
        with pytest.raises(CheckpointError):
            await projector.skip("order_summary", 3, reason="wrong position")
        with pytest.raises(ValueError, match="reason"):
            await projector.skip("order_summary", 2, reason=" ")
        await projector.skip("order_summary", 2, reason="bad data, see ticket 42")
        await projector.catch_up()
        (status,) = await projector.status()
        assert (status.checkpoint, status.state, status.last_error) == (3, "stopped", None)
        (skipped,) = await store.load_skips("order_summary")
        assert (skipped.position, skipped.event_class, skipped.reason) == (
            2,
            "OrderItemAdded",
            "bad data, see ticket 42",
        )

    async def test_a_running_projector_retries_until_fixed(self) -> None:
        """While following, a failing event is retried with backoff until its handler works."""
        async with SQLiteEventStore(":memory:") as store:
            await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
            projection = OrderSummary(fail_on_quantity=13)
            projector = Projector(store, [projection], retry_delay=0.005, max_retry_delay=0.02)
            running = asyncio.create_task(projector.run())
            for _ in range(200):
                (status,) = await projector.status()
                if status.last_error is not None and status.last_error.attempts >= 3:
                    break
                await asyncio.sleep(0.01)
            assert (status.state, status.checkpoint) == ("failing", 1)
            projection.fail_on_quantity = None
            await projector.wait_for(2, timeout=5)
            (status,) = await projector.status()
            assert (status.state, status.last_error, status.lag) == ("running", None, 0)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

    async def test_a_failure_while_keeping_the_prefix_is_retried_too(self) -> None:
        """An earlier event failing while a failed batch's prefix is re-applied is retried too."""
        failures = {5: 1, 2: 1}  # fail once at position 5, then once at position 2

        class Flaky(OrderSummary):
            def handle(self, recorded: RecordedEvent, tx: sqlite3.Connection) -> None:
                if failures.get(recorded.position, 0) > 0 and (
                    recorded.position == 5 or failures[5] == 0
                ):
                    failures[recorded.position] -= 1
                    msg = f"transient failure at {recorded.position}"
                    raise RuntimeError(msg)
                super().handle(recorded, tx)

        async with SQLiteEventStore(":memory:") as store:
            await play(Repository(store), [("create",)] + [("add", 0, PRODUCTS[0], 1)] * 6, [])
            projector = Projector(store, [Flaky()], batch_size=10, retry_delay=0.001)
            running = asyncio.create_task(projector.run())
            await projector.wait_for(await store.head_position(), timeout=5)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            assert failures == {5: 0, 2: 0}
            assert read_summary(store) == fold(r.event for r in await all_events(store))

    async def test_other_projections_go_on(self) -> None:
        """One projection failing does not stop the others."""

        class Counter(Projection[sqlite3.Connection]):
            name = "counter"
            seen = 0

            @handles
            def _any(self, event: OrderItemAdded, tx: sqlite3.Connection) -> None:
                del event, tx
                Counter.seen += 1

        async with SQLiteEventStore(":memory:") as store:
            await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
            projector = Projector(store, [OrderSummary(fail_on_quantity=13), Counter()])
            with pytest.raises(ProjectionError):
                await projector.catch_up()
            assert Counter.seen == 1
            states = {s.name: s.state for s in await projector.status()}
            assert states["order_summary"] == "failing"


async def stopped_at_position_2(
    open_sqlite: OpenSQLite,
) -> tuple[SQLiteEventStore, Projector[sqlite3.Connection]]:
    """A store of two events, and a projector stopped (failing) at the second."""
    store = open_sqlite(":memory:")
    await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
    projector = Projector(store, [OrderSummary(fail_on_quantity=13)])
    with pytest.raises(ProjectionError):
        await projector.catch_up()
    return store, projector


class TestAfterFailures:
    """What status, the checkpoint and wait_for say after failures, skips and rebuilds."""

    async def test_each_failed_attempt_is_counted(self, open_sqlite: OpenSQLite) -> None:
        """Every catch-up that stops at the same event adds one to its failure's attempts."""
        store = open_sqlite(":memory:")
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
        projector = Projector(store, [OrderSummary(fail_on_quantity=13)])
        for attempt in (1, 2, 3):
            with pytest.raises(ProjectionError):
                await projector.catch_up()
            (status,) = await projector.status()
            assert status.last_error is not None
            assert (status.last_error.position, status.last_error.attempts) == (2, attempt)
            assert status.last_error.event_class == "OrderItemAdded"
            assert (status.checkpoint, status.state) == (1, "failing")

    def test_retries_back_off_doubling_up_to_the_maximum(self) -> None:
        """The pause after n attempts is retry_delay * 2**(n-1), capped at max_retry_delay."""
        projector = Projector(InMemoryEventStore(), [], retry_delay=0.05, max_retry_delay=1.0)
        pauses = [projector.retry_pause(n) for n in (1, 2, 3, 4, 5, 6, 20)]
        assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    async def test_a_skip_moves_the_checkpoint_and_releases_waiters(
        self, open_sqlite: OpenSQLite
    ) -> None:
        """After skip(): checkpoint at the event, no failure, and a wait_for on it returns."""
        store, projector = await stopped_at_position_2(open_sqlite)
        waiting = asyncio.create_task(projector.wait_for(2, timeout=5))
        await asyncio.sleep(0)
        assert not waiting.done()
        await projector.skip("order_summary", 2, reason="bad data")
        await asyncio.wait_for(waiting, 1)
        (status,) = await projector.status()
        assert (status.checkpoint, status.state, status.last_error, status.lag) == (
            2,
            "stopped",
            None,
            0,
        )
        assert await store.load_checkpoint("order_summary") == 2

    async def test_a_rebuild_clears_the_failure_and_releases_waiters(
        self, open_sqlite: OpenSQLite
    ) -> None:
        """After rebuild() with a fixed handler: the new checkpoint, no failure, waiters done."""
        store = open_sqlite(":memory:")
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
        projection = OrderSummary(fail_on_quantity=13)
        projector = Projector(store, [projection])
        with pytest.raises(ProjectionError):
            await projector.catch_up()
        waiting = asyncio.create_task(projector.wait_for(2, timeout=5))
        projection.fail_on_quantity = None
        await projector.rebuild("order_summary")
        await asyncio.wait_for(waiting, 1)
        (status,) = await projector.status()
        assert (status.checkpoint, status.last_error) == (2, None)
        assert read_summary(store) == fold(r.event for r in await all_events(store))

    async def test_an_earlier_failure_while_keeping_the_prefix_is_the_one_recorded(
        self, open_sqlite: OpenSQLite
    ) -> None:
        """If re-applying a failed batch's prefix fails earlier, that earlier event is reported."""
        fail_at = {5}

        class Flaky(OrderSummary):
            def handle(self, recorded: RecordedEvent, tx: sqlite3.Connection) -> None:
                if recorded.position in fail_at:
                    fail_at.add(2)  # the next time round, position 2 fails as well
                    msg = f"failure at {recorded.position}"
                    raise RuntimeError(msg)
                super().handle(recorded, tx)

        store = open_sqlite(":memory:")
        await play(Repository(store), [("create",)] + [("add", 0, PRODUCTS[0], 1)] * 5, [])
        projector = Projector(store, [Flaky()], batch_size=10)
        with pytest.raises(ProjectionError) as raised:
            await projector.catch_up()
        assert raised.value.position == 2
        (status,) = await projector.status()
        assert status.last_error is not None
        assert status.last_error.position == 2
        assert "failure at 2" in status.last_error.error
        assert status.checkpoint == 0  # the prefix could not be kept either


class TestStatus:
    async def test_a_projector_not_yet_started_reports_position_zero(self) -> None:
        """Before any catch-up, each projection is stopped at 0 with the whole log as lag."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 1)], [])
        (status,) = await Projector(store, [MemorySummary()]).status()
        assert (status.checkpoint, status.lag, status.state, status.last_error) == (
            0,
            2,
            "stopped",
            None,
        )

    async def test_catch_up_reports_the_first_failing_projection(self) -> None:
        """When several projections fail, catch_up raises the first one's error; all are marked."""

        class Second(FailingMemorySummary):
            name = "second"

        store = InMemoryEventStore()
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 13)], [])
        projector = Projector(store, [FailingMemorySummary(), Second()])
        with pytest.raises(ProjectionError) as raised:
            await projector.catch_up()
        assert raised.value.name == "order_summary"
        assert [s.state for s in await projector.status()] == ["failing", "failing"]


class Counting(Projection[None]):
    """Counts, across every instance, how often each event position is applied."""

    name = "counting"
    applied: ClassVar[dict[int, int]] = {}

    def handle(self, recorded: RecordedEvent, tx: None) -> None:
        del tx
        self.applied[recorded.position] = self.applied.get(recorded.position, 0) + 1

    @handles
    def _created(self, event: OrderCreated, tx: None) -> None:
        del event, tx  # handle() above does the counting for every event type


async def states(*projectors: Projector[Any]) -> list[str]:
    return [(await p.status())[0].state for p in projectors]


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 5) -> None:
    """Poll `condition` (a projector's status has no event to wait on), failing after `seconds`."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 - polling status is the point
            await asyncio.sleep(0.005)


class TestStandby:
    """With a store that leases projections, one projector runs each; the others stand by."""

    async def test_one_runs_the_other_stands_by_then_takes_over(self) -> None:
        """The second projector waits; when the first stops, it continues from the checkpoint."""
        Counting.applied = {}
        store = LeasingMemoryStore()
        repo = Repository(store)
        await play(repo, [("create",)] * 3, [])
        first = Projector(store, [Counting()], idle_wait=0.01)
        second = Projector(store, [Counting()], idle_wait=0.01)
        running_first = asyncio.create_task(first.run())
        await first.wait_for(3, timeout=5)
        running_second = asyncio.create_task(second.run())
        await until(lambda: _is(second, "standby"))
        await play(repo, [("create",)] * 2, [])
        await second.wait_for(5, timeout=5)  # a standby follows the active checkpoint
        running_first.cancel()
        await asyncio.gather(running_first, return_exceptions=True)
        await until(lambda: _is(second, "running"))
        await play(repo, [("create",)] * 2, [])
        await second.wait_for(7, timeout=5)
        running_second.cancel()
        await asyncio.gather(running_second, return_exceptions=True)
        assert Counting.applied == dict.fromkeys(range(1, 8), 1)

    async def test_a_lost_lease_sends_the_active_one_to_stand_by(self) -> None:
        """Losing the lease stops following at once; the other projector takes the lease."""
        Counting.applied = {}
        store = LeasingMemoryStore()
        await play(Repository(store), [("create",)], [])
        first = Projector(store, [Counting()], idle_wait=0.01)
        second = Projector(store, [Counting()], idle_wait=0.01)
        tasks = [asyncio.create_task(first.run())]
        await first.wait_for(1, timeout=5)
        tasks.append(asyncio.create_task(second.run()))
        await until(lambda: _is(second, "standby"))
        store.lose("counting")
        await until(lambda: _is(second, "running"))
        assert await states(first) == ["standby"]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert Counting.applied == {1: 1}

    async def test_a_standby_rides_out_an_outage(self) -> None:
        """A store outage while standing by is not a stop: the standby still takes over later."""
        Counting.applied = {}
        store = LeasingMemoryStore()
        await play(Repository(store), [("create",)], [])
        first = Projector(store, [Counting()], idle_wait=0.01)
        second = Projector(store, [Counting()], idle_wait=0.01)
        tasks = [asyncio.create_task(first.run())]
        await first.wait_for(1, timeout=5)
        outages = 0
        load_checkpoint = store.load_checkpoint

        async def flaky(name: str) -> int:
            nonlocal outages
            if outages < 3:
                outages += 1
                msg = "the store is away"
                # Unavailable twice, then a plain store error: any store error is an outage.
                raise (fabula.StoreUnavailableError if outages < 3 else fabula.StoreError)(msg)
            return await load_checkpoint(name)

        tasks.append(asyncio.create_task(second.run()))
        await until(lambda: _is(second, "standby"))
        store.load_checkpoint = flaky  # type: ignore[method-assign]
        await until(lambda: _is(second, "retrying"))
        await until(lambda: _outages_done(outages))
        await until(lambda: _is(second, "standby"))  # back to standing by, the outage over
        (status,) = await second.status()
        assert status.store_error is None
        assert not tasks[1].done()
        tasks[0].cancel()
        await until(lambda: _is(second, "running"))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert Counting.applied == {1: 1}


async def _is(projector: Projector[Any], state: str) -> bool:
    return (await projector.status())[0].state == state


async def _outages_done(outages: int) -> bool:
    return outages >= 3


class TestSkipping:
    async def test_a_projection_that_is_not_failing_cannot_skip(
        self, open_sqlite: OpenSQLite
    ) -> None:
        """skip() of a healthy projection is a CheckpointError saying it is not stopped."""
        store = open_sqlite(":memory:")
        await play(Repository(store), [("create",)], [])
        projector = Projector(store, [OrderSummary()])
        await projector.catch_up()
        with pytest.raises(CheckpointError) as refused:
            await projector.skip("order_summary", 1, reason="no reason")
        assert "is not stopped at position 1 (it is at None)" in str(refused.value.__cause__)
        assert await store.load_skips("order_summary") == []

    async def test_skipping_another_position_says_where_it_is_stopped(
        self, open_sqlite: OpenSQLite
    ) -> None:
        """skip() of the wrong position names the position the projection is stopped at."""
        store, projector = await stopped_at_position_2(open_sqlite)
        for wrong in (3, 1):  # after the failure, and before it
            with pytest.raises(CheckpointError) as refused:
                await projector.skip("order_summary", wrong, reason="wrong one")
            assert f"not stopped at position {wrong} (it is at 2)" in str(refused.value.__cause__)
        assert await store.load_skips("order_summary") == []

    def test_the_reason_is_keyword_only(self) -> None:
        """skip(name, position, reason) without the keyword is refused: the reason is recorded."""
        parameters = inspect.signature(Projector.skip).parameters
        assert parameters["reason"].kind is inspect.Parameter.KEYWORD_ONLY


async def set_max_pages(store: SQLiteEventStore, pages: int) -> None:
    """Let the database grow to `pages` pages at most: a full disk, for real, as SQLite sees it."""

    def limit(conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._writer.submit(limit, 0, one_statement=True)


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name == "fabula.projections" and "the store" in r.getMessage()
    ]


class TestOutages:
    async def test_a_full_disk_stalls_the_projector_until_there_is_room_again(
        self, tmp_path: Path, open_sqlite: OpenSQLite, caplog: pytest.LogCaptureFixture
    ) -> None:
        """SQLite's "database or disk is full" is retried, shown, logged once, and outlived."""
        store = open_sqlite(tmp_path / "e.db", synchronous="NORMAL")
        projector = Projector(
            store, [OrderSummary()], batch_size=50, retry_delay=0.01, max_retry_delay=0.02
        )
        await projector.catch_up()  # the read model's tables exist, empty
        orders: list[UUID] = []
        await play(Repository(store), [("create",)] * 400, orders)
        head = await store.head_position()
        pages = store._reader.execute("PRAGMA page_count").fetchone()[0]
        await set_max_pages(store, pages)  # no room for the read model's rows
        running = asyncio.create_task(projector.run())
        try:
            await until(lambda: retrying(projector))
            await asyncio.sleep(0.3)  # many failed attempts
            (status,) = await projector.status()
            assert (status.state, status.last_error) == ("retrying", None)
            assert projector.states() == {"order_summary": "retrying"}
            assert status.store_error is not None
            assert "full" in status.store_error
            assert 0 < status.lag <= head
            assert not running.done()
            await set_max_pages(store, 2**30)  # the disk has room again
            await projector.wait_for(head, timeout=10)
            (status,) = await projector.status()
            assert (status.state, status.store_error, status.lag) == ("running", None, 0)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert read_summary(store) == fold(r.event for r in await all_events(store))
        failed, back = outage_lines(caplog)  # one line as it fails, one as it is back
        assert failed.startswith("WARNING projection order_summary: the store failed (")
        assert "full" in failed
        assert back.startswith("WARNING projection order_summary: the store is back after ")

    async def test_a_failing_handler_is_not_an_outage(
        self, open_sqlite: OpenSQLite, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A handler's error stops the projection at its event (failing), not as the store's."""
        store = open_sqlite(":memory:")
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 7)], [])
        projector = Projector(store, [OrderSummary(fail_on_quantity=7)], retry_delay=0.01)
        running = asyncio.create_task(projector.run())
        try:
            await until(lambda: failing_at(projector, 2))
            (status,) = await projector.status()
            assert (status.state, status.store_error) == ("failing", None)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert outage_lines(caplog) == []

    async def test_a_closed_store_ends_the_projector(self, open_sqlite: OpenSQLite) -> None:
        """Closing the store is not an outage to wait out: run() ends with StoreClosedError."""
        store = open_sqlite(":memory:")
        projector = Projector(store, [OrderSummary()], idle_wait=0.01)
        running = asyncio.create_task(projector.run())
        await projector.catch_up()
        await store.close()
        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(running, 5)
        assert info.group_contains(StoreClosedError)


async def retrying(projector: Projector[Any]) -> bool:
    return any(s.state == "retrying" for s in await projector.status())


async def failing_at(projector: Projector[Any], position: int) -> bool:
    statuses = await projector.status()
    return any(s.last_error is not None and s.last_error.position == position for s in statuses)


class TestWaiting:
    async def test_wait_for_returns_only_once_the_position_is_reached(self) -> None:
        """A checkpoint below the awaited position does not release the waiter; reaching it does."""
        store = InMemoryEventStore()
        repo = Repository(store)
        await play(repo, [("create",)] * 2, [])
        projector = Projector(store, [MemorySummary()])
        waiting = asyncio.create_task(projector.wait_for(3, timeout=5))
        await asyncio.sleep(0)  # the waiter registers before the checkpoint moves
        await projector.catch_up()
        await asyncio.sleep(0.05)  # ample time for a released waiter to finish
        assert not waiting.done()
        await play(repo, [("create",)], [])
        await projector.catch_up()
        await asyncio.wait_for(waiting, 1)


class TestSettings:
    def test_the_defaults_are_as_documented(self) -> None:
        """500 events a batch; retries from 0.05 s doubling to 30 s; a read at least every 1 s."""
        projector = Projector(InMemoryEventStore(), [])
        assert (
            projector.batch_size,
            projector.retry_delay,
            projector.max_retry_delay,
            projector.idle_wait,
        ) == (500, 0.05, 30.0, 1.0)

    def test_projections_are_the_only_way_in(self) -> None:
        """The projector's bookkeeping is not a constructor argument."""
        with pytest.raises(TypeError):
            Projector(InMemoryEventStore(), [], tracks={})  # type: ignore[call-arg]

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10", None])
    def test_batch_size_must_be_a_positive_int(self, bad: object) -> None:
        """A batch size that is not a positive int is refused when the projector is built."""
        with pytest.raises(ValueError, match="batch_size"):
            Projector(InMemoryEventStore(), [], batch_size=bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("setting", ["retry_delay", "max_retry_delay", "idle_wait"])
    @pytest.mark.parametrize("bad", [0, -0.5, True, "1", None])
    def test_delays_must_be_positive_numbers(self, setting: str, bad: object) -> None:
        """Delays that are not positive numbers are refused, naming the setting."""
        with pytest.raises(ValueError, match=setting):
            Projector(InMemoryEventStore(), [], **{setting: bad})  # type: ignore[arg-type]


class TestRebuild:
    async def test_readers_see_the_whole_old_model_until_the_switch(self, tmp_path: Path) -> None:
        """During a rebuild queries see the complete old model; after it, the new one."""
        async with SQLiteEventStore(tmp_path / "e.db") as store:
            repo, orders = Repository(store), list[UUID]()
            await play(
                repo,
                [("create",), ("create",)] + [("add", n % 2, PRODUCTS[0], 2) for n in range(60)],
                orders,
            )
            buggy = Projector(store, [OrderSummary(price_factor=2)], batch_size=7)
            await buggy.catch_up()
            old = read_summary(store)
            events = [r.event for r in await all_events(store)]
            assert old != fold(events)  # the "bug": totals doubled

            seen_during: list[Summary] = []
            steps: list[tuple[int, int]] = []
            reader = sqlite3.connect(tmp_path / "e.db")

            def progress(done: int, total: int) -> None:
                steps.append((done, total))
                rows = reader.execute(
                    "SELECT order_id, status, item_count, total FROM order_summary"
                )
                seen_during.append({o: (s, c, Decimal(t)) for o, s, c, t in rows})

            fixed = Projector(store, [OrderSummary()], batch_size=7)
            await fixed.rebuild("order_summary", progress=progress)
            reader.close()
            assert len(steps) > 3
            assert all(model == old for model in seen_during)
            assert [done for done, _ in steps] == sorted(done for done, _ in steps)
            assert steps[-1][0] == steps[-1][1] == await store.head_position()
            assert read_summary(store) == fold(events)
            assert await store.load_checkpoint("order_summary") == await store.head_position()

    async def test_a_rebuild_beside_a_running_projector_loses_nothing(self, tmp_path: Path) -> None:
        """Events appended while rebuilding are projected once the live projector resumes."""
        async with SQLiteEventStore(tmp_path / "e.db", synchronous="NORMAL") as store:
            repo, orders = Repository(store), list[UUID]()
            await play(repo, [("create",)] + [("add", 0, PRODUCTS[1], 1)] * 40, orders)
            projector = Projector(store, [OrderSummary()], batch_size=5, idle_wait=0.01)
            running = asyncio.create_task(projector.run())

            async def keep_writing() -> None:
                await play(repo, [("create",)] + [("add", 1, PRODUCTS[2], 3)] * 20, orders)

            writing = asyncio.create_task(keep_writing())
            await projector.rebuild("order_summary")
            await writing
            await projector.wait_for(await store.head_position(), timeout=10)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            assert read_summary(store) == fold(r.event for r in await all_events(store))

    async def test_a_rebuild_removes_what_killed_rebuilds_left_and_only_that(
        self, tmp_path: Path
    ) -> None:
        """Side files of processes that are gone are removed; a live process's are kept."""
        path = tmp_path / "e.db"
        gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await gone.wait()
        dead_pid = gone.pid
        alive = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)"
        )
        try:
            hexes = [uuid4().hex for _ in range(3)]
            stale = [
                tmp_path / f"e.db.rebuild-order_summary-{dead_pid}-{hexes[0]}",
                tmp_path / f"e.db.rebuild-order_summary-{dead_pid}-{hexes[0]}-journal",
                tmp_path / f"e.db.rebuild-other-{dead_pid}-{hexes[1]}",
            ]
            kept = [
                tmp_path / f"e.db.rebuild-order_summary-{alive.pid}-{hexes[2]}",
                tmp_path / "e.db.rebuild-notes.txt",  # not a side file's name
                tmp_path / f"other.db.rebuild-order_summary-{dead_pid}-{hexes[0]}",
            ]
            for file in stale + kept:
                file.write_bytes(b"left behind")
            async with SQLiteEventStore(path, synchronous="NORMAL") as store:
                await play(Repository(store), [("create",)] * 3, [])
                await Projector(store, [OrderSummary()]).rebuild("order_summary")
                assert read_summary(store) == fold(r.event for r in await all_events(store))
            assert [file.exists() for file in stale] == [False] * 3
            assert [file.exists() for file in kept] == [True] * 3
            ours = f"e.db.rebuild-order_summary-{os.getpid()}-*"
            assert not list(tmp_path.glob(ours))  # noqa: ASYNC240 - a test's own folder
        finally:
            alive.kill()
            await alive.wait()

    async def test_a_failing_handler_stops_a_rebuild_and_leaves_the_live_model(
        self, tmp_path: Path
    ) -> None:
        """The rebuild raises ProjectionError naming the event; readers keep the old model."""
        async with SQLiteEventStore(tmp_path / "e.db", synchronous="NORMAL") as store:
            await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 7)], [])
            await Projector(store, [OrderSummary()]).catch_up()
            before = read_summary(store)
            failing = Projector(store, [OrderSummary(fail_on_quantity=7)])
            with pytest.raises(ProjectionError) as info:
                await failing.rebuild("order_summary")
            assert (info.value.position, info.value.event_class) == (2, "OrderItemAdded")
            assert read_summary(store) == before
            assert await store.load_checkpoint("order_summary") == 2

    async def test_a_rebuild_reads_a_log_longer_than_256_events(self, tmp_path: Path) -> None:
        """Past CPython's small ints, the rebuild still sees where the log ends."""
        async with SQLiteEventStore(tmp_path / "e.db", synchronous="NORMAL") as store:
            await play(Repository(store), [("create",)] * 300, [])
            projector = Projector(store, [OrderSummary()], batch_size=1000)
            await asyncio.wait_for(projector.rebuild("order_summary"), 30)
            assert await store.load_checkpoint("order_summary") == 300
            assert read_summary(store) == fold(r.event for r in await all_events(store))

    async def test_rebuild_needs_the_tables(self) -> None:
        """A projection that does not list its tables cannot be rebuilt side by side."""

        class Untabled(OrderSummary):
            name = "untabled"
            tables = ()

        async with SQLiteEventStore(":memory:") as store:
            with pytest.raises(fabula.StoreError, match="tables"):
                await Projector(store, [Untabled()]).rebuild("untabled")

    async def test_the_memory_store_cannot_rebuild(self) -> None:
        """The in-memory store says so clearly."""
        store = InMemoryEventStore()
        with pytest.raises(fabula.StoreError, match="cannot rebuild"):
            await Projector(store, [MemorySummary()]).rebuild("order_summary")


class TestVersionGuard:
    async def test_replayed_events_are_applied_once(self) -> None:
        """A guarded handler ignores an event it has already seen, whatever the order of replays."""
        store = InMemoryEventStore()
        orders = list[UUID]()
        await play(
            Repository(store),
            [("create",), ("add", 0, PRODUCTS[0], 2), ("add", 0, PRODUCTS[1], 3)],
            orders,
        )
        events = [r.event for r in await all_events(store)]
        guard = fabula.VersionGuard()
        applied = [e.version for e in [*events, *events[:2], *events] if guard.fresh(e)]
        assert applied == [1, 2, 3]
        assert guard.versions == {str(orders[0]): 3}


class TestLive:
    async def test_wait_for_reads_your_own_writes(self) -> None:
        """A running projector lets a caller wait until its append is projected."""
        async with SQLiteEventStore(":memory:") as store:
            projector = Projector(store, [OrderSummary()], idle_wait=5)
            running = asyncio.create_task(projector.run())
            order = Order.create(uuid4(), ADDRESS)
            (result,) = await Repository(store).save(order)
            await projector.wait_for(result.position, timeout=5)
            assert str(order.id) in read_summary(store)
            (status,) = await projector.status()
            assert (status.state, status.lag) == ("running", 0)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            (status,) = await projector.status()
            assert status.state == "stopped"

    async def test_cancelling_run_as_a_commit_wakes_it_stops_it(self) -> None:
        """Cancelling run() in the very step a commit wakes it still stops it."""
        for _ in range(20):
            store = InMemoryEventStore()
            projector = Projector(store, [MemorySummary()], idle_wait=5)
            running = asyncio.create_task(projector.run())
            await asyncio.sleep(0.005)  # idle, waiting for a commit
            await play(Repository(store), [("create",)], [])
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(running, 5)

    async def test_wait_for_times_out(self) -> None:
        """Waiting for a position nobody projects raises TimeoutError."""
        async with SQLiteEventStore(":memory:") as store:
            projector = Projector(store, [OrderSummary()])
            with pytest.raises(TimeoutError):
                await projector.wait_for(1, timeout=0.05)

    def test_projection_names_must_be_unique(self) -> None:
        """Two projections under one name are refused."""
        with pytest.raises(fabula.exceptions.EventTypeError, match="two projections"):
            Projector(InMemoryEventStore(), [MemorySummary(), MemorySummary()])


class FailsOnSeven(MemorySummary):
    """MemorySummary whose item handler fails on a quantity of 7."""

    @handles
    def _item_added(self, event: OrderItemAdded, tx: None) -> None:
        del tx
        if event.quantity == 7:
            msg = "seven"
            raise RuntimeError(msg)


def failing_reads(store: InMemoryEventStore, errors: list[str]) -> None:
    """Make the store's next `len(errors)` log reads fail, each with its message."""
    read_log = store.read_log
    pending = list(errors)

    async def flaky(**arguments: Any) -> Any:
        if pending:
            raise fabula.StoreError(pending.pop(0))
        return await read_log(**arguments)

    store.read_log = flaky  # type: ignore[method-assign]


class TestOutageBookkeeping:
    async def test_each_new_error_is_logged_and_the_recovery_counts_the_attempts(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Three failures, the message changing twice (sorting down, then up): three lines."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",)], [])
        failing_reads(store, ["b: disk", "a: disk", "c: network"])
        projector = Projector(store, [MemorySummary()], retry_delay=0.001, idle_wait=0.01)
        started = time.monotonic()
        running = asyncio.create_task(projector.run())
        try:
            await projector.wait_for(1, timeout=5)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        took = time.monotonic() - started
        lines = outage_lines(caplog)
        first = (
            "WARNING projection order_summary: the store failed (b: disk); "
            "retrying with backoff until it is back"
        )
        assert lines[:3] == [
            first,
            "WARNING projection order_summary: the store now fails with: a: disk",
            "WARNING projection order_summary: the store now fails with: c: network",
        ]
        back = lines[3]
        assert back.startswith(
            "WARNING projection order_summary: the store is back after 3 failed attempts in "
        )
        assert 0 <= float(back.split(" in ")[1].removesuffix(" s")) <= took + 0.05
        assert len(lines) == 4

    async def test_a_lease_that_cannot_be_had_is_retried(self) -> None:
        """A store that leases projections and cannot grant one yet: retried, then run."""
        store = LeasingMemoryStore()
        await play(Repository(store), [("create",)], [])
        store.refusals = 2
        projector = Projector(store, [Counting()], retry_delay=0.001, idle_wait=0.01)
        Counting.applied = {}
        running = asyncio.create_task(projector.run())
        try:
            await projector.wait_for(1, timeout=5)
            assert await states(projector) == ["running"]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert (store.refusals, Counting.applied) == (0, {1: 1})

    async def test_a_closed_leasing_store_ends_the_projector(self) -> None:
        store = LeasingMemoryStore()
        await store.close()
        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(Projector(store, [Counting()]).run(), 5)
        assert info.group_contains(StoreClosedError)


class CancellationToError(InMemoryEventStore):
    """A store whose log read, once blocked, turns a cancellation into an error, as a pool may."""

    blocked = False

    async def read_log(self, **arguments: Any) -> Any:
        if self.blocked:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                msg = "the pool turned a cancellation into this"
                raise fabula.StoreUnavailableError(msg) from None
        return await super().read_log(**arguments)


class TestStoppingMidRead:
    async def test_a_stop_is_not_taken_for_an_outage(self) -> None:
        """A cancellation that comes back as a store error still stops the projector."""
        store = CancellationToError()
        await play(Repository(store), [("create",)], [])
        projector = Projector(store, [MemorySummary()], retry_delay=0.001, idle_wait=0.01)
        running = asyncio.create_task(projector.run())
        try:
            await projector.wait_for(1, timeout=5)
            store.blocked = True
            await asyncio.sleep(0.05)  # the projector is now waiting in read_log
            running.cancel()
            done, _ = await asyncio.wait({running}, timeout=5)
            assert running in done
            assert running.cancelled()
            assert await states(projector) == ["stopped"]
        finally:  # a projector that took the stop for an outage: let it stop now
            store.blocked = False
            running.cancel()
            await asyncio.wait({running}, timeout=5)

    async def test_after_a_stop_a_skip_leaves_it_stopped(self) -> None:
        """Clearing a failure once the projector has stopped does not make it look running."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 7)], [])
        projector = Projector(store, [FailsOnSeven()], retry_delay=0.01, idle_wait=0.01)
        running = asyncio.create_task(projector.run())
        await until(lambda: failing_at(projector, 2))
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await projector.skip("order_summary", 2, reason="test")
        assert await states(projector) == ["stopped"]


class TestWaiterRelease:
    async def test_a_batch_past_the_awaited_position_releases_the_waiter(self) -> None:
        """Waiting for position 2 ends when one batch takes the checkpoint from 0 to 5."""
        store = InMemoryEventStore()
        projector = Projector(store, [MemorySummary()], batch_size=100)
        waiting = asyncio.create_task(projector.wait_for(2, timeout=5))
        await asyncio.sleep(0)
        await play(Repository(store), [("create",)] * 5, [])
        await projector.catch_up()
        await asyncio.wait_for(waiting, 1)


class TestStarting:
    async def test_run_alone_sets_the_read_model_up(self) -> None:
        """Without a catch_up first, run() creates the tables and builds the model."""
        async with SQLiteEventStore(":memory:") as store:
            await play(Repository(store), [("create",)] * 3, [])
            projector = Projector(store, [OrderSummary()], idle_wait=0.01)
            running = asyncio.create_task(projector.run())
            try:
                await projector.wait_for(3, timeout=5)
            finally:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            assert read_summary(store) == fold(r.event for r in await all_events(store))

    async def test_a_setup_another_projector_overtook_is_not_an_error(self) -> None:
        """Read at 0, then found moved on at setup (another process ran it): carry on from there."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",)] * 3, [])
        first = MemorySummary()
        await Projector(store, [first]).catch_up()
        load = store.load_checkpoint
        stale = [0]  # the second projector's first read predates the first one's batch

        async def racing(name: str) -> int:
            return stale.pop() if stale else await load(name)

        store.load_checkpoint = racing  # type: ignore[method-assign]
        second = MemorySummary()
        projector = Projector(store, [second])
        await projector.catch_up()
        (status,) = await projector.status()
        assert (status.checkpoint, second.rows) == (3, {})


class TestWaitersAndNames:
    async def test_wait_for_a_position_already_passed_returns_at_once(self) -> None:
        """Behind the checkpoint or exactly at it (past 256 too), nothing is awaited."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",)] * 300, [])
        projector = Projector(store, [MemorySummary()])
        await projector.catch_up()
        for position in (1, 299, 300):
            await projector.wait_for(position, timeout=0.5)

    async def test_a_waiter_that_gave_up_does_not_hold_back_the_others(self) -> None:
        store = InMemoryEventStore()
        repo = Repository(store)
        projector = Projector(store, [MemorySummary()])
        with pytest.raises(TimeoutError):
            await projector.wait_for(1, timeout=0.01)  # gives up: its future stays behind
        patient = asyncio.create_task(projector.wait_for(1, timeout=5))
        await asyncio.sleep(0)
        await play(repo, [("create",)], [])
        await projector.catch_up()
        await asyncio.wait_for(patient, 1)

    async def test_a_skip_past_position_256_is_taken(self) -> None:
        """The failing event's position is compared by value, however large."""
        store = InMemoryEventStore()
        await play(Repository(store), [("create",)] * 299 + [("add", 0, PRODUCTS[0], 7)], [])
        projector = Projector(store, [FailsOnSeven()])
        with pytest.raises(ProjectionError):
            await projector.catch_up()
        await projector.skip("order_summary", 300, reason="test")
        (status,) = await projector.status()
        assert (status.checkpoint, status.last_error) == (300, None)

    async def test_a_skip_while_running_leaves_it_running(self) -> None:
        store = InMemoryEventStore()
        await play(Repository(store), [("create",), ("add", 0, PRODUCTS[0], 7)], [])
        projector = Projector(store, [FailsOnSeven()], retry_delay=0.01, idle_wait=0.01)
        running = asyncio.create_task(projector.run())
        try:
            await until(lambda: failing_at(projector, 2))
            await projector.skip("order_summary", 2, reason="test")
            assert await states(projector) == ["running"]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    @pytest.mark.parametrize("name", ["", None, 7])
    def test_a_projection_needs_a_name(self, name: object) -> None:
        class Nameless(MemorySummary):
            pass

        Nameless.name = name  # type: ignore[assignment]
        with pytest.raises(fabula.exceptions.EventTypeError, match="non-empty str `name`"):
            Projector(InMemoryEventStore(), [Nameless()])

    def test_a_projector_shows_its_projections(self) -> None:
        assert repr(Projector(InMemoryEventStore(), [MemorySummary()])) == (
            "<Projector: order_summary>"
        )


CHILD = Path(__file__).parent / "support" / "projection_child.py"


def wait_for_checkpoint(path: Path, target: int, *, deadline: float) -> None:
    """Return once projection order_summary's checkpoint in `path` reaches `target`."""
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT position FROM fabula_checkpoints WHERE name = 'order_summary'"
            ).fetchone()
            if row is not None and row[0] >= target:
                return
            time.sleep(0.0005)


class TestCrashSafety:
    def test_sigkill_mid_batch_never_double_applies(self, tmp_path: Path) -> None:
        """A projector killed at random moments leaves rows that match its checkpoint exactly."""
        path = tmp_path / "e.db"
        rng = random.Random(5)

        async def populate(round_number: int) -> int:
            """Add 400 events: 80 items to each of 5 orders, one save per order."""
            async with SQLiteEventStore(path, synchronous="NORMAL") as store:
                repo = Repository(store)
                if round_number == 0:
                    await repo.save(*(Order.create(uuid4(), ADDRESS) for _ in range(5)))
                for order_id in await order_ids(store):
                    order = await repo.get(Order, order_id)
                    for n in range(80):
                        order.add_item(PRODUCTS[n % 3], 1 + n % 9, Decimal("1.25"))
                    await repo.save(order)
                return await store.head_position()

        async def order_ids(store: SQLiteEventStore) -> list[UUID]:
            events = await store.read_all(limit=100_000, event_types=[OrderCreated])
            return [UUID(r.stream_id) for r in events]

        async def verify(*, finish: bool) -> int:
            async with SQLiteEventStore(path) as store:
                if finish:
                    await Projector(store, [OrderSummary()]).catch_up()
                checkpoint = await store.load_checkpoint("order_summary")
                events = [r.event for r in await all_events(store) if r.position <= checkpoint]
                assert read_summary(store) == fold(events)
                return checkpoint

        heads: list[int] = []
        checkpoints: list[int] = []
        for round_number in range(8):
            heads.append(asyncio.run(populate(round_number)))
            child = subprocess.Popen(  # noqa: S603 - our own test helper
                [sys.executable, str(CHILD), str(path), str(rng.randint(1, 50))],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            # Kill while the child is working: once its checkpoint has passed a
            # random point of this round's backlog (a sleep of fixed length
            # lands after the catch-up on a fast machine).
            start = checkpoints[-1] if checkpoints else 0
            target = start + int(rng.uniform(0.05, 0.6) * (heads[-1] - start))
            wait_for_checkpoint(path, target, deadline=time.monotonic() + 10)
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            checkpoints.append(asyncio.run(verify(finish=False)))
        assert checkpoints == sorted(checkpoints)
        assert any(c < head for c, head in zip(checkpoints, heads, strict=True)), (
            "no kill landed before the projector caught up"
        )
        assert asyncio.run(verify(finish=True)) == heads[-1]
