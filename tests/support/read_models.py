"""Read models the projection tests share (and their child processes import)."""

import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

import fabula
from fabula import Projection, handles
from fabula.sqlite import SQLiteEventStore

from .domain import OrderCreated, OrderItemAdded, OrderSubmitted

Summary = dict[str, tuple[str, int, Decimal]]  # order id -> (status, item count, total)


class OrderSummary(Projection[sqlite3.Connection]):
    """The orders summary shape, in two tables of the store's own database."""

    name = "order_summary"
    tables: ClassVar[tuple[str, ...]] = ("order_summary", "order_items")

    def __init__(self, *, fail_on_quantity: int | None = None, price_factor: int = 1) -> None:
        self.fail_on_quantity = fail_on_quantity
        self.price_factor = price_factor  # 2 plays a bug that a rebuild fixes

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
            (
                event.quantity,
                str(Decimal(total) + event.quantity * event.unit_price * self.price_factor),
                order_id,
            ),
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
