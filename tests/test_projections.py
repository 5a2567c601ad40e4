"""Projections: read models equal a pure fold, exactly once, across batches and restarts."""

import asyncio
import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fabula
from fabula import (
    CheckpointError,
    Projection,
    ProjectionError,
    Projector,
    RecordedEvent,
    Repository,
    handles,
)
from fabula.memory import InMemoryEventStore
from fabula.sqlite import SQLiteEventStore

from .domain import ADDRESS, Order, OrderCreated, OrderItemAdded, OrderSubmitted

PRODUCTS = [UUID(int=n) for n in range(1, 4)]
Summary = dict[str, tuple[str, int, Decimal]]  # order id -> (status, item count, total)


class OrderSummary(Projection[sqlite3.Connection]):
    """The orders summary shape, in two tables of the store's own database."""

    name = "order_summary"

    def __init__(self, *, fail_on_quantity: int | None = None) -> None:
        self.fail_on_quantity = fail_on_quantity

    def setup(self, tx: sqlite3.Connection) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS order_summary (order_id TEXT PRIMARY KEY, "
            "status TEXT NOT NULL, item_count INTEGER NOT NULL, total TEXT NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE IF NOT EXISTS order_items (order_id TEXT, product_id TEXT, "
            "quantity INTEGER NOT NULL, PRIMARY KEY (order_id, product_id))"
        )

    @handles
    def _created(self, event: OrderCreated, tx: sqlite3.Connection) -> None:
        tx.execute(
            "INSERT INTO order_summary VALUES (?, 'draft', 0, '0')", (str(event.aggregate_id),)
        )

    @handles
    def _item_added(self, event: OrderItemAdded, tx: sqlite3.Connection) -> None:
        if event.quantity == self.fail_on_quantity:
            msg = f"cannot project quantity {event.quantity}"
            raise RuntimeError(msg)
        order_id = str(event.aggregate_id)
        (total,) = tx.execute(
            "SELECT total FROM order_summary WHERE order_id = ?", (order_id,)
        ).fetchone()
        tx.execute(
            "UPDATE order_summary SET item_count = item_count + ?, total = ? WHERE order_id = ?",
            (event.quantity, str(Decimal(total) + event.quantity * event.unit_price), order_id),
        )
        tx.execute(
            "INSERT INTO order_items VALUES (?, ?, ?) ON CONFLICT (order_id, product_id) "
            "DO UPDATE SET quantity = quantity + excluded.quantity",
            (order_id, str(event.product_id), event.quantity),
        )

    @handles
    def _submitted(self, event: OrderSubmitted, tx: sqlite3.Connection) -> None:
        tx.execute(
            "UPDATE order_summary SET status = 'submitted' WHERE order_id = ?",
            (str(event.aggregate_id),),
        )


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


def fold(events: Iterable[fabula.DomainEvent]) -> Summary:
    """The read model, computed directly from the events."""
    rows: Summary = {}
    for event in events:
        key = str(event.aggregate_id)
        if isinstance(event, OrderCreated):
            rows[key] = ("draft", 0, Decimal(0))
        elif isinstance(event, OrderItemAdded):
            status, count, total = rows[key]
            rows[key] = (status, count + event.quantity, total + event.quantity * event.unit_price)
        elif isinstance(event, OrderSubmitted):
            rows[key] = ("submitted", *rows[key][1:])
    return rows


def read_summary(store: SQLiteEventStore) -> Summary:
    rows = store._reader.execute("SELECT order_id, status, item_count, total FROM order_summary")
    return {order_id: (status, count, Decimal(total)) for order_id, status, count, total in rows}


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
            orders.append(UUID(str(order.id)))
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

    async def test_two_projectors_never_apply_a_batch_twice(self) -> None:
        """Racing projectors of one projection: the loser's batch is refused, not applied."""
        async with SQLiteEventStore(":memory:") as store:
            repo = Repository(store)
            await play(repo, [("create",), ("add", 0, PRODUCTS[0], 2)] * 20, [])
            outcomes = await asyncio.gather(
                *(Projector(store, [OrderSummary()], batch_size=5).catch_up() for _ in range(3)),
                return_exceptions=True,
            )
            assert all(o is None or isinstance(o, CheckpointError) for o in outcomes)
            await Projector(store, [OrderSummary()]).catch_up()
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
            assert (info.value.position, info.value.event_type) == (3, "OrderItemAdded")
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

    async def test_wait_for_times_out(self) -> None:
        """Waiting for a position nobody projects raises TimeoutError."""
        async with SQLiteEventStore(":memory:") as store:
            projector = Projector(store, [OrderSummary()])
            with pytest.raises(TimeoutError):
                await projector.wait_for(1, timeout=0.05)

    def test_projection_names_must_be_unique(self) -> None:
        """Two projections under one name are refused."""
        with pytest.raises(fabula.EventTypeError, match="two projections"):
            Projector(InMemoryEventStore(), [MemorySummary(), MemorySummary()])
