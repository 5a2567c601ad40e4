"""What mypy sees: ids, events read back, command results and cursor keys have precise types.

Each `assert_type` is checked by mypy in the `typing` session (and is a
no-op when the test runs); the assertions beside them check that the
program gets, at run time, the types mypy was told.
"""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, assert_type
from uuid import UUID, uuid4

import attrs

import fabula
from fabula import RecordedEvent, Repository
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.testing import Deposited, Withdrawn, given

from .support.domain import ADDRESS, Order, OrderCreated, OrderItemAdded, Tally


async def test_ids_are_the_declared_type() -> None:
    """A UUID aggregate's id is a UUID, a str one's a str, for mypy and at run time."""
    repo = Repository(InMemoryEventStore())
    order = Order.create(uuid4(), ADDRESS)
    await repo.save(order)
    loaded = await repo.get(Order, str(order.id))  # its text is enough
    assert_type(loaded.id, UUID)
    assert type(loaded.id) is UUID
    tally = Tally(id="t-1")
    tally.add(1)
    await repo.save(tally)
    assert_type((await repo.get(Tally, "t-1")).id, str)
    assert_type(Order.new_id(), UUID)
    assert_type(Tally.new_id(), str)


async def test_events_read_back_are_the_types_named() -> None:
    """read_all(event_types=[X]) gives RecordedEvent[X]; without a filter, any event."""
    store = InMemoryEventStore()
    both = [Deposited(amount=Decimal(2)), Withdrawn(amount=Decimal(1))]
    await store.append("acc-1", both, expected_version=0)
    deposits = await store.read_all(event_types=[Deposited])
    assert_type(deposits, list[RecordedEvent[Deposited]])
    assert_type(deposits[0].event.amount, Decimal)
    assert_type(deposits[0].event.aggregate_id, str)  # Deposited is a DomainEvent[str]
    assert [type(r.event) for r in deposits] == [Deposited]
    everything = await store.read_all()
    assert_type(everything, list[RecordedEvent[fabula.DomainEvent[Any]]])
    assert len(everything) == 2
    by_name = await store.read_all(event_types={"fabula.testing.Withdrawn"})
    assert_type(by_name, list[RecordedEvent[fabula.DomainEvent[Any]]])
    async for recorded in store.subscribe(event_types=[Withdrawn]):
        assert_type(recorded, RecordedEvent[Withdrawn])
        assert recorded.event.amount == 1
        break


async def test_an_order_event_carries_a_uuid() -> None:
    """Events of UUID aggregates carry UUIDs: no narrowing, no UUID(str(...))."""
    order = Order.create(uuid4(), ADDRESS)
    (created,) = order.pending_events
    assert isinstance(created, OrderCreated)
    assert_type(created.aggregate_id, UUID)
    assert created.aggregate_id == order.id
    added = OrderItemAdded(product_id=uuid4(), quantity=1, unit_price=Decimal(1))
    assert_type(added.aggregate_id, UUID)


async def test_results_of_commands_queries_and_scenarios() -> None:
    """dispatch returns the message's result type; a scenario's outcome keeps what it returned."""

    @attrs.frozen(kw_only=True)
    class Open(fabula.Command[UUID]):
        pass

    @attrs.frozen(kw_only=True)
    class Count(fabula.Query[int]):
        pass

    async def open_one(_: Open) -> UUID:
        return uuid4()

    async def count(_: Count) -> int:
        return 3

    commands, queries = fabula.CommandBus(), fabula.QueryBus()
    commands.register(Open, open_one)
    queries.register(Count, count)
    assert_type(await commands.dispatch(Open()), UUID)
    assert_type(await queries.dispatch(Count()), int)
    outcome = given(Order, OrderCreated(customer_id=uuid4(), address=ADDRESS)).when(
        lambda o: o.total
    )
    assert_type(outcome.result, Decimal | None)
    assert outcome.result == 0


def test_cursor_keys_are_typed() -> None:
    """decode with a tuple of types gives each part its type."""
    codec = fabula.CursorCodec()
    moment, ident = datetime(2026, 1, 1, tzinfo=UTC), uuid4()
    when, which = codec.decode(codec.encode((moment, ident)), (datetime, UUID))
    assert_type(when, datetime)
    assert_type(which, UUID)
    assert (when, which) == (moment, ident)


def test_one_type_for_any_fabula_store(tmp_path: Path) -> None:
    """fabula.Store takes every store, fabula.SqlStore those with a SQL read model."""

    def kind(store: fabula.Store) -> str:
        return type(store).__name__

    def sql_kind(store: fabula.SqlStore) -> str:
        return store.read_model().dialect.name

    memory, sqlite = InMemoryEventStore(), SQLiteEventStore(tmp_path / "s.db")
    postgres = PostgresEventStore("postgresql://nobody@127.0.0.1:1/none")  # never opened
    assert [kind(memory), kind(sqlite), kind(postgres)] == [
        "InMemoryEventStore",
        "SQLiteEventStore",
        "PostgresEventStore",
    ]
    assert [sql_kind(sqlite), sql_kind(postgres)] == ["sqlite", "postgresql"]
    assert isinstance(memory, fabula.Store)
    assert not isinstance(memory, fabula.SqlStore)
    assert isinstance(postgres, fabula.SqlStore)
    asyncio.run(sqlite.close())
