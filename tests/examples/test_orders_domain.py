"""The Order aggregate's rules, and the read model agreeing with it."""

import asyncio
import contextlib
import sqlite3
import tempfile
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st
from orders.domain import (
    MAX_LINE_QUANTITY,
    MAX_LINES,
    MAX_ORDER_EVENTS,
    InvalidOrderError,
    Order,
    OrderCancelled,
    OrderCreated,
    OrderItemAdded,
    OrderStateError,
    OrderSubmitted,
    ShippingAddress,
)
from orders.read_model import OrderSummaryProjection, OrderView, ReadModel

import fabula
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.testing import given

from .conftest import Place

KEY = fabula.KeyEncryptionKey.from_env("ORDERS_KEK")  # set by conftest

CUSTOMER = uuid4()
PEN, LAMP = uuid4(), uuid4()
ADDRESS = ShippingAddress("Main 1", "Utrecht", "3511 AA", "NL")
CREATED = OrderCreated(customer_id=CUSTOMER, customer_name="Ada", shipping_address=ADDRESS)


def pens(quantity: int, price: str = "1.99") -> OrderItemAdded:
    return OrderItemAdded(
        product_id=PEN, product_name="pen", quantity=quantity, unit_price=Decimal(price)
    )


class TestTransitions:
    def test_create(self) -> None:
        order = Order.create(
            uuid4(), customer_id=CUSTOMER, customer_name="Ada", shipping_address=ADDRESS
        )
        assert [type(e) for e in order.pending_events] == [OrderCreated]
        assert order.status.value == "draft"

    def test_add_items(self) -> None:
        order = given(Order, CREATED).when(lambda o: o.add_item(PEN, "pen", 2, Decimal("1.99")))
        order.then(pens(2))

    # --8<-- [start:given]
    def test_the_same_product_joins_its_line_at_the_line_price(self) -> None:
        order = (
            given(Order, CREATED, pens(2))
            .when(lambda o: o.add_item(PEN, "pen (new name)", 3, Decimal("2.50")))
            .then(pens(3))
        )
        assert order.lines[PEN].quantity == 5
        assert order.total == Decimal("9.95")

    def test_submit_records_the_total(self) -> None:
        given(Order, CREATED, pens(3)).when(lambda o: o.submit()).then(
            OrderSubmitted(total_amount=Decimal("5.97"))
        )

    # --8<-- [end:given]
    def test_submitting_an_empty_order_fails(self) -> None:
        given(Order, CREATED).when(lambda o: o.submit()).then_raises(OrderStateError, match="empty")

    @pytest.mark.parametrize(
        "history",
        [
            (CREATED, pens(1), OrderSubmitted(total_amount=Decimal("1.99"))),
            (CREATED, OrderCancelled(reason="x")),
        ],
    )
    def test_only_drafts_change(self, history: tuple[fabula.DomainEvent, ...]) -> None:
        given(Order, *history).when(lambda o: o.add_item(PEN, "pen", 1, Decimal(1))).then_raises(
            OrderStateError, match="not draft"
        )
        given(Order, *history).when(lambda o: o.submit()).then_raises(OrderStateError)

    def test_a_submitted_order_can_be_cancelled(self) -> None:
        history = (CREATED, pens(1), OrderSubmitted(total_amount=Decimal("1.99")))
        given(Order, *history).when(lambda o: o.cancel("late")).then(OrderCancelled(reason="late"))

    def test_cancelling_twice_fails(self) -> None:
        given(Order, CREATED, OrderCancelled(reason="x")).when(
            lambda o: o.cancel("again")
        ).then_raises(OrderStateError, match="already cancelled")

    @pytest.mark.parametrize("quantity", [0, -1, True, 1.5])
    def test_quantities_are_whole_and_positive(self, quantity: object) -> None:
        given(Order, CREATED).when(
            lambda o: o.add_item(PEN, "pen", quantity, Decimal(1))  # type: ignore[arg-type]
        ).then_raises(InvalidOrderError, match="quantity")

    def test_a_line_has_an_upper_bound(self) -> None:
        given(Order, CREATED, pens(MAX_LINE_QUANTITY - 1)).when(
            lambda o: o.add_item(PEN, "pen", 2, Decimal("1.99"))
        ).then_raises(InvalidOrderError, match="at most")

    def test_an_order_holds_at_most_100_products(self) -> None:
        """A 101st product is refused (422); more of a product already held is not."""
        lines = [
            OrderItemAdded(product_id=uuid4(), product_name="p", quantity=1, unit_price=Decimal(1))
            for _ in range(MAX_LINES)
        ]
        given(Order, CREATED, *lines).when(
            lambda o: o.add_item(uuid4(), "one too many", 1, Decimal(1))
        ).then_raises(InvalidOrderError, match=f"at most {MAX_LINES} different products")
        more = attrs.evolve(lines[0], quantity=2)
        given(Order, CREATED, *lines).when(
            lambda o: o.add_item(lines[0].product_id, "p", 2, Decimal(1))
        ).then(more)

    def test_an_order_holds_at_most_1000_events(self) -> None:
        """Its history stays short to load: a full order is refused further items (409)."""
        history = [pens(1) for _ in range(MAX_ORDER_EVENTS - 2)]
        given(Order, CREATED, *history).when(
            lambda o: o.add_item(PEN, "pen", 1, Decimal("1.99"))
        ).then(pens(1))
        given(Order, CREATED, *history, pens(1)).when(
            lambda o: o.add_item(PEN, "pen", 1, Decimal("1.99"))
        ).then_raises(OrderStateError, match="is full: it holds 1000 events")
        given(Order, CREATED, *history, pens(1)).when(lambda o: o.submit()).then(
            OrderSubmitted(total_amount=Decimal("1.99") * (MAX_ORDER_EVENTS - 1))
        )

    @pytest.mark.parametrize("price", ["-0.01", "0.001", "NaN", "Infinity"])
    def test_prices_are_cents_and_not_negative(self, price: str) -> None:
        given(Order, CREATED).when(lambda o: o.add_item(PEN, "pen", 1, Decimal(price))).then_raises(
            InvalidOrderError
        )

    def test_a_blank_reason_is_refused(self) -> None:
        given(Order, CREATED).when(lambda o: o.cancel("  ")).then_raises(InvalidOrderError)


Action = tuple[str, UUID, int, Decimal]
actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from([PEN, LAMP]),
            st.integers(-1, 4000),
            st.decimals("0.00", "500.00", places=2),
        ),
        st.tuples(
            st.sampled_from(["submit", "cancel"]), st.just(PEN), st.just(0), st.just(Decimal(0))
        ),
    ),
    max_size=12,
)


def run(order: Order, action: Action) -> None:
    kind, product, quantity, price = action
    if kind == "add":
        order.add_item(product, "pen" if product == PEN else "lamp", quantity, price)
    elif kind == "submit":
        order.submit()
    else:
        order.cancel("changed my mind")


async def read_back(store: fabula.SqlStore, order_id: UUID) -> OrderView:
    """The order as the read model's query returns it."""
    codec = fabula.CursorCodec(secret=b"s")
    view = await ReadModel(store.read_model(), codec).order(order_id)
    assert view is not None
    return view


async def project(order: Order, place: Place) -> OrderView:
    """Store the order's events, run the real projection, and read it back through its query.

    On SQLite each example gets a new file; on PostgreSQL the examples share
    the test's schema (each order is new, and the projector catches up).
    """
    if place.backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            async with SQLiteEventStore(Path(folder) / "o.db", key_encryption_key=KEY) as store:
                await fabula.Repository(store).save(order)
                await fabula.Projector(store, [OrderSummaryProjection()]).catch_up()
                return await read_back(store, order.id)
    async with PostgresEventStore(
        place.database, schema=place.schema, key_encryption_key=KEY
    ) as pg_store:
        await fabula.Repository(pg_store).save(order)
        await fabula.Projector(pg_store, [OrderSummaryProjection()]).catch_up()
        return await read_back(pg_store, order.id)


# --8<-- [start:property]
# The schema is shared by the examples on purpose (see `project`).
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@hypothesis_given(steps=actions)
def test_the_read_model_agrees_with_the_aggregate(place: Place, steps: list[Action]) -> None:
    """Whatever sequence of commands, accepted or refused, both sides tell the same order."""
    order = Order.create(
        uuid4(), customer_id=CUSTOMER, customer_name="Ada", shipping_address=ADDRESS
    )
    for step in steps:
        with contextlib.suppress(InvalidOrderError, OrderStateError):
            run(order, step)
    view = asyncio.run(project(order, place))
    assert view.status is order.status
    assert view.total_amount == order.total
    assert view.item_count == len(order.lines)
    assert [(i.product_id, i.qty, i.unit_price) for i in view.items] == [
        (line.product_id, line.quantity, line.unit_price) for line in order.lines.values()
    ]
    assert all(0 < line.quantity <= MAX_LINE_QUANTITY for line in order.lines.values())


# --8<-- [end:property]
def replay_twice(place: Place, recorded: list[fabula.RecordedEvent]) -> None:
    """Apply every event twice, then some again out of order, straight through the handlers."""
    replays = [*recorded, *recorded, recorded[1], recorded[0]]
    projection = OrderSummaryProjection()
    if place.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(place.database, isolation_level=None)) as conn:
            projection.setup(conn)
            for event in replays:
                projection.handle(event, conn)
        return
    with psycopg.connect(place.database, autocommit=True) as pg:
        pg.execute(f'CREATE SCHEMA "{place.schema}"')
        pg.execute(f'SET search_path TO "{place.schema}"')
        projection.setup(pg)
        for event in replays:
            projection.handle(event, pg)


async def test_replaying_an_event_into_the_read_model_changes_nothing(place: Place) -> None:
    """The version guard: handlers applied twice (a replay) leave the rows as once."""
    order = Order.create(
        uuid4(), customer_id=CUSTOMER, customer_name="Ada", shipping_address=ADDRESS
    )
    order.add_item(PEN, "pen", 2, Decimal("1.99"))
    order.add_item(PEN, "pen", 1, Decimal("1.99"))
    order.submit()
    async with SQLiteEventStore(":memory:", key_encryption_key=KEY) as store:
        await fabula.Repository(store).save(order)
        recorded = await store.read_all()
    replay_twice(place, recorded)
    opened: fabula.SqlStore = (
        SQLiteEventStore(place.database, key_encryption_key=KEY)
        if place.backend == "sqlite"
        else PostgresEventStore(place.database, schema=place.schema, key_encryption_key=KEY)
    )
    async with opened as reading:
        found = await read_back(reading, order.id)
    assert (found.status.value, found.total_amount, found.item_count) == (
        "submitted",
        Decimal("5.97"),
        1,
    )
    assert [(item.qty, item.unit_price) for item in found.items] == [(3, Decimal("1.99"))]
