"""The read model: `order_summary` and `order_items`, one projection and its queries.

The projection's handlers run in the event store's transaction, together
with its checkpoint, so each event is applied exactly once. Every write is
also guarded by the order's `event_version`, so that applying an event a
second time (a replay into a read model kept elsewhere) changes nothing;
the line writes happen only when the guarded summary write did.

The SQL is written once for SQLite and PostgreSQL (see `orders.database`):
the projection is given the store's `Dialect`, the queries a `Database`.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import attrs

import fabula

from .database import Database, Dialect, as_moment, as_money, as_uuid
from .domain import (
    OrderCancelled,
    OrderCreated,
    OrderItemAdded,
    OrderStatus,
    OrderSubmitted,
)

__all__ = [
    "OrderItemView",
    "OrderSummaryProjection",
    "OrderSummaryView",
    "OrderView",
    "ReadModel",
]

TxT = TypeVar("TxT")

_TABLES = (
    (
        "CREATE TABLE IF NOT EXISTS order_summary ("
        "id {uuid} PRIMARY KEY, customer_id {uuid} NOT NULL, customer_name TEXT NOT NULL, "
        "status TEXT NOT NULL, total_amount {money} NOT NULL, item_count INTEGER NOT NULL, "
        "created_at {moment} NOT NULL, updated_at {moment} NOT NULL, "
        "event_version INTEGER NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS order_items ("
        "order_id {uuid} NOT NULL REFERENCES order_summary (id), product_id {uuid} NOT NULL, "
        "product_name TEXT NOT NULL, quantity INTEGER NOT NULL, unit_price {money} NOT NULL, "
        "line_no INTEGER NOT NULL, PRIMARY KEY (order_id, product_id))"
    ),
    (
        "CREATE INDEX IF NOT EXISTS order_summary_by_customer "
        "ON order_summary (customer_id, created_at DESC, id DESC)"
    ),
    (
        "CREATE INDEX IF NOT EXISTS order_summary_by_customer_status "
        "ON order_summary (customer_id, status, created_at DESC, id DESC)"
    ),
)

_OPEN = (
    "INSERT INTO order_summary VALUES (?, ?, ?, 'draft', '0.00', 0, ?, ?, ?) "
    "ON CONFLICT (id) DO NOTHING"
)
_FRESH_TOTALS = (
    "SELECT total_amount, item_count FROM order_summary WHERE id = ? AND event_version < ?"
)
_GROW_LINE = "UPDATE order_items SET quantity = quantity + ? WHERE order_id = ? AND product_id = ?"
_OPEN_LINE = "INSERT INTO order_items VALUES (?, ?, ?, ?, ?, ?)"
_SET_TOTALS = (
    "UPDATE order_summary SET total_amount = ?, item_count = item_count + ?, "
    "updated_at = ?, event_version = ? WHERE id = ?"
)
_SET_STATUS = (
    "UPDATE order_summary SET status = ?, total_amount = coalesce(?, total_amount), "
    "updated_at = ?, event_version = ? WHERE id = ? AND event_version < ?"
)


class OrderSummaryProjection(fabula.Projection[TxT], Generic[TxT]):
    """Keeps one row per order and one per order line.

    Args:
        dialect: How the event store's database spells the SQL
            (`orders.database.SQLITE` or `orders.postgres.POSTGRES`).
    """

    name = "order_summary"
    tables: ClassVar[tuple[str, ...]] = ("order_summary", "order_items")

    def __init__(self, dialect: Dialect[TxT]) -> None:
        self._sql = dialect

    def setup(self, tx: TxT) -> None:
        """Create the tables and the indexes the queries use."""
        for statement in _TABLES:
            self._sql.execute(tx, self._sql.ddl(statement))

    @fabula.handles
    def _created(self, event: OrderCreated, tx: TxT) -> None:
        at = event.timestamp
        params = (event.aggregate_id, event.customer_id, event.customer_name, at, at, event.version)
        self._sql.execute(tx, _OPEN, params)

    # --8<-- [start:item-added]
    @fabula.handles
    def _item_added(self, event: OrderItemAdded, tx: TxT) -> None:
        order_id, run = event.aggregate_id, self._sql.execute
        row = run(tx, _FRESH_TOTALS, (order_id, event.version)).fetchone()
        if row is None:
            return  # applied before
        total = as_money(row[0]) + event.quantity * event.unit_price
        grown = run(tx, _GROW_LINE, (event.quantity, order_id, event.product_id)).rowcount
        opened = grown == 0
        if opened:
            line = (
                order_id,
                event.product_id,
                event.product_name,
                event.quantity,
                event.unit_price,
                event.version,
            )
            run(tx, _OPEN_LINE, line)
        totals = (total, 1 if opened else 0, event.timestamp, event.version, order_id)
        run(tx, _SET_TOTALS, totals)

    # --8<-- [end:item-added]
    @fabula.handles
    def _submitted(self, event: OrderSubmitted, tx: TxT) -> None:
        self._set_status(tx, event, OrderStatus.SUBMITTED, event.total_amount)

    @fabula.handles
    def _cancelled(self, event: OrderCancelled, tx: TxT) -> None:
        self._set_status(tx, event, OrderStatus.CANCELLED, None)

    def _set_status(
        self, tx: TxT, event: fabula.DomainEvent, status: OrderStatus, total: Decimal | None
    ) -> None:
        params = (
            status.value,
            total,
            event.timestamp,
            event.version,
            event.aggregate_id,
            event.version,
        )
        self._sql.execute(tx, _SET_STATUS, params)


@attrs.frozen
class OrderItemView:
    """One line of an order, as the read model has it."""

    product_id: UUID
    product: str
    qty: int
    unit_price: Decimal


@attrs.frozen(kw_only=True)
class OrderSummaryView:
    """An order without its lines, as listed in a customer's orders."""

    id: UUID
    customer_id: UUID
    customer_name: str
    status: OrderStatus
    total_amount: Decimal
    item_count: int
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class OrderView(OrderSummaryView):
    """An order with its lines."""

    items: tuple[OrderItemView, ...]


_SUMMARY_COLUMNS = (
    "s.id, s.customer_id, s.customer_name, s.status, s.total_amount, s.item_count, "
    "s.created_at, s.updated_at"
)
# One statement for the order and its lines: they come from one committed state.
_ORDER = (
    f"SELECT {_SUMMARY_COLUMNS}, i.product_id, i.product_name, i.quantity, i.unit_price "  # noqa: S608
    "FROM order_summary s LEFT JOIN order_items i ON i.order_id = s.id "
    "WHERE s.id = ? ORDER BY i.line_no"
)
_PAGE = (
    f"SELECT {_SUMMARY_COLUMNS} FROM order_summary s WHERE {{where}} "  # noqa: S608
    "ORDER BY s.created_at DESC, s.id DESC LIMIT ?"
)


def _summary(row: tuple[Any, ...]) -> OrderSummaryView:
    order_id, customer_id, name, status, total, count, created, updated = row[:8]
    return OrderSummaryView(
        id=as_uuid(order_id),
        customer_id=as_uuid(customer_id),
        customer_name=str(name),
        status=OrderStatus(status),
        total_amount=as_money(total),
        item_count=int(count),
        created_at=as_moment(created),
        updated_at=as_moment(updated),
    )


class ReadModel:
    """Answers queries from the read-model tables.

    Args:
        database: The database the projection writes (the event store's).
        codec: Signs and checks page cursors.
    """

    MAX_PAGE_SIZE = 100

    def __init__(self, database: Database, codec: fabula.CursorCodec) -> None:
        self._db = database
        self._codec = codec

    @property
    def codec(self) -> fabula.CursorCodec:
        """The codec of the service's page cursors (the catalog's listings use it too)."""
        return self._codec

    def __repr__(self) -> str:
        return f"<ReadModel in {self._db!r}>"

    async def order(self, order_id: UUID) -> OrderView | None:
        """Return the order with `order_id`, or None if the read model has none."""
        rows = await self._db.fetch(_ORDER, (order_id,))
        if not rows:
            return None
        items = tuple(
            OrderItemView(as_uuid(product_id), str(name), int(quantity), as_money(price))
            for product_id, name, quantity, price in (row[8:] for row in rows)
            if product_id is not None
        )
        return OrderView(**attrs.asdict(_summary(rows[0]), recurse=False), items=items)

    # --8<-- [start:page]
    async def customer_orders(
        self,
        customer_id: UUID,
        *,
        status: OrderStatus | None,
        page_size: int,
        cursor: str | None,
    ) -> fabula.Page[OrderSummaryView]:
        """Return a page of a customer's orders, newest first.

        A cursor is bound to the customer and the status filter it was
        made for (its scope), besides the sort key of the last row.

        Raises:
            InvalidPageSizeError: `page_size` is not between 1 and 100.
            InvalidCursorError: `cursor` is malformed, was altered, or was
                made for another customer or status filter.
        """
        size = fabula.check_page_size(page_size, maximum=self.MAX_PAGE_SIZE)
        where = ["s.customer_id = ?"]
        params: list[object] = [customer_id]
        listing = status.value if status is not None else ""
        if status is not None:
            where.append("s.status = ?")
            params.append(status.value)
        scope = f"orders-of:{customer_id}:{listing}"
        if cursor is not None:
            created, after_id = self._codec.decode(cursor, (datetime, UUID), scope=scope)
            where.append("(s.created_at, s.id) < (?, ?)")
            params += [created, after_id]
        statement = _PAGE.format(where=" AND ".join(where))
        rows = await self._db.fetch(statement, (*params, size + 1))
        return fabula.Page.from_rows(
            [_summary(row) for row in rows],
            size,
            key=lambda view: (view.created_at, view.id),
            codec=self._codec,
            scope=scope,
        )

    # --8<-- [end:page]
