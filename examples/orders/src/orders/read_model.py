"""The read model: `order_summary` and `order_items`, one projection and its queries.

The projection's handlers run in the event store's transaction, together
with its checkpoint, so each event is applied exactly once. Every write is
also guarded by the order's `event_version`, so that applying an event a
second time (a replay into a read model kept elsewhere) changes nothing;
the line writes happen only when the guarded summary write did.
"""

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import ClassVar, TypeVar
from uuid import UUID

import attrs

import fabula

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


T = TypeVar("T")


def _text(moment: datetime) -> str:
    # Fixed width, always UTC: the text sorts as the moments do.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class OrderSummaryProjection(fabula.Projection[sqlite3.Connection]):
    """Keeps one row per order and one per order line."""

    name = "order_summary"
    tables: ClassVar[tuple[str, ...]] = ("order_summary", "order_items")

    def setup(self, tx: sqlite3.Connection) -> None:
        """Create the tables and the indexes the queries use."""
        tx.execute(
            "CREATE TABLE IF NOT EXISTS order_summary ("
            "id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, customer_name TEXT NOT NULL, "
            "status TEXT NOT NULL, total_amount TEXT NOT NULL, item_count INTEGER NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, event_version INTEGER NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE IF NOT EXISTS order_items ("
            "order_id TEXT NOT NULL REFERENCES order_summary (id), product_id TEXT NOT NULL, "
            "product_name TEXT NOT NULL, quantity INTEGER NOT NULL, unit_price TEXT NOT NULL, "
            "line_no INTEGER NOT NULL, PRIMARY KEY (order_id, product_id))"
        )
        tx.execute(
            "CREATE INDEX IF NOT EXISTS order_summary_by_customer "
            "ON order_summary (customer_id, created_at DESC, id DESC)"
        )
        tx.execute(
            "CREATE INDEX IF NOT EXISTS order_summary_by_customer_status "
            "ON order_summary (customer_id, status, created_at DESC, id DESC)"
        )

    @fabula.handles
    def _created(self, event: OrderCreated, tx: sqlite3.Connection) -> None:
        at = _text(event.timestamp)
        tx.execute(
            "INSERT INTO order_summary VALUES (?, ?, ?, 'draft', '0.00', 0, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (
                str(event.aggregate_id),
                str(event.customer_id),
                event.customer_name,
                at,
                at,
                event.version,
            ),
        )

    @fabula.handles
    def _item_added(self, event: OrderItemAdded, tx: sqlite3.Connection) -> None:
        order_id = str(event.aggregate_id)
        row = tx.execute(
            "SELECT total_amount, item_count FROM order_summary WHERE id = ? AND event_version < ?",
            (order_id, event.version),
        ).fetchone()
        if row is None:
            return  # applied before
        total = Decimal(row[0]) + event.quantity * event.unit_price
        product_id = str(event.product_id)
        opened = (
            tx.execute(
                "UPDATE order_items SET quantity = quantity + ? "
                "WHERE order_id = ? AND product_id = ?",
                (event.quantity, order_id, product_id),
            ).rowcount
            == 0
        )
        if opened:
            tx.execute(
                "INSERT INTO order_items VALUES (?, ?, ?, ?, ?, ?)",
                (
                    order_id,
                    product_id,
                    event.product_name,
                    event.quantity,
                    str(event.unit_price),
                    event.version,
                ),
            )
        tx.execute(
            "UPDATE order_summary SET total_amount = ?, item_count = item_count + ?, "
            "updated_at = ?, event_version = ? WHERE id = ?",
            (str(total), 1 if opened else 0, _text(event.timestamp), event.version, order_id),
        )

    @fabula.handles
    def _submitted(self, event: OrderSubmitted, tx: sqlite3.Connection) -> None:
        self._set_status(tx, event, OrderStatus.SUBMITTED, event.total_amount)

    @fabula.handles
    def _cancelled(self, event: OrderCancelled, tx: sqlite3.Connection) -> None:
        self._set_status(tx, event, OrderStatus.CANCELLED, None)

    @staticmethod
    def _set_status(
        tx: sqlite3.Connection,
        event: fabula.DomainEvent,
        status: OrderStatus,
        total: Decimal | None,
    ) -> None:
        tx.execute(
            "UPDATE order_summary SET status = ?, total_amount = coalesce(?, total_amount), "
            "updated_at = ?, event_version = ? WHERE id = ? AND event_version < ?",
            (
                status.value,
                None if total is None else str(total),
                _text(event.timestamp),
                event.version,
                str(event.aggregate_id),
                event.version,
            ),
        )


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
    "id, customer_id, customer_name, status, total_amount, item_count, created_at, updated_at"
)


def _summary(row: tuple[str, str, str, str, str, int, str, str]) -> OrderSummaryView:
    order_id, customer_id, name, status, total, count, created, updated = row
    return OrderSummaryView(
        id=UUID(order_id),
        customer_id=UUID(customer_id),
        customer_name=name,
        status=OrderStatus(status),
        total_amount=Decimal(total),
        item_count=count,
        created_at=datetime.fromisoformat(created),
        updated_at=datetime.fromisoformat(updated),
    )


class ReadModel:
    """Answers queries from the read-model tables, over a read-only connection.

    Args:
        path: The database file.
        codec: Signs and checks page cursors.
    """

    MAX_PAGE_SIZE = 100

    def __init__(self, path: str, codec: fabula.CursorCodec) -> None:
        self._conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        self._codec = codec

    def _snapshot(self, read: Callable[[], T]) -> T:
        """Run `read` in one read transaction: every query sees the same commit."""
        self._conn.execute("BEGIN")
        try:
            return read()
        finally:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def order(self, order_id: UUID) -> OrderView | None:
        """Return the order with `order_id`, or None if the read model has none."""
        return self._snapshot(lambda: self._order(order_id))

    def _order(self, order_id: UUID) -> OrderView | None:
        row = self._conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM order_summary WHERE id = ?",  # noqa: S608
            (str(order_id),),
        ).fetchone()
        if row is None:
            return None
        items = tuple(
            OrderItemView(UUID(product_id), name, quantity, Decimal(price))
            for product_id, name, quantity, price in self._conn.execute(
                "SELECT product_id, product_name, quantity, unit_price FROM order_items "
                "WHERE order_id = ? ORDER BY line_no",
                (str(order_id),),
            )
        )
        return OrderView(**attrs.asdict(_summary(row), recurse=False), items=items)

    def customer_orders(
        self,
        customer_id: UUID,
        *,
        status: OrderStatus | None,
        page_size: int,
        cursor: str | None,
    ) -> fabula.Page[OrderSummaryView]:
        """Return a page of a customer's orders, newest first.

        A cursor carries the customer and the status filter it was made
        for, besides the sort key of the last row.

        Raises:
            InvalidPageSizeError: `page_size` is not between 1 and 100.
            InvalidCursorError: `cursor` is malformed, was altered, or was
                made for another customer or status filter.
        """
        size = fabula.check_page_size(page_size, maximum=self.MAX_PAGE_SIZE)
        where = ["customer_id = ?"]
        params: list[object] = [str(customer_id)]
        listing = status.value if status is not None else ""
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if cursor is not None:
            created, after_id, for_customer, for_listing = self._codec.decode(
                cursor, (datetime, UUID, UUID, str)
            )
            if (for_customer, for_listing) != (customer_id, listing):
                msg = "the cursor belongs to another customer's or another status's listing"
                raise fabula.InvalidCursorError(msg)
            assert isinstance(created, datetime)
            where.append("(created_at, id) < (?, ?)")
            params += [_text(created), str(after_id)]
        rows = self._conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM order_summary WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, size + 1),
        ).fetchall()
        return fabula.Page.from_rows(
            [_summary(row) for row in rows],
            size,
            key=lambda view: (view.created_at, view.id, customer_id, listing),
            codec=self._codec,
        )
