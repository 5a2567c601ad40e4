"""The read model: `order_summary` and `order_items`, one projection and its queries.

The projection's handlers run in the event store's transaction, together
with its checkpoint, so each event is applied exactly once. Every write is
also guarded by the order's `event_version`, so that applying an event a
second time (a replay into a read model kept elsewhere) changes nothing;
the line writes happen only when the guarded summary write did.

The SQL is written once for SQLite and PostgreSQL: the projection is a
`fabula.SqlProjection`, the queries read through the store's
`fabula.ReadModel`, with named parameters and portable column types.
"""

from datetime import datetime
from decimal import Decimal
from typing import ClassVar
from uuid import UUID

import attrs

import fabula

from .domain import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderItemAdded,
    OrderStatus,
    OrderSubmitted,
)
from .stock import StockAdded, StockReleased, StockReserved

__all__ = [
    "OrderItemView",
    "OrderSummaryProjection",
    "OrderSummaryView",
    "OrderView",
    "ReadModel",
    "StockLevelsProjection",
]

_TABLES = (
    (
        "CREATE TABLE IF NOT EXISTS order_summary ("
        "id {uuid} PRIMARY KEY, customer_id {uuid} NOT NULL, customer_name {text}, "
        "status {text} NOT NULL, total_amount {decimal} NOT NULL, item_count {bigint} NOT NULL, "
        "created_at {datetime} NOT NULL, updated_at {datetime} NOT NULL, "
        "event_version {bigint} NOT NULL, cancel_reason {text})"
    ),
    (
        "CREATE TABLE IF NOT EXISTS order_items ("
        "order_id {uuid} NOT NULL REFERENCES order_summary (id), product_id {uuid} NOT NULL, "
        "product_name {text} NOT NULL, quantity {bigint} NOT NULL, unit_price {decimal} NOT NULL, "
        "line_no {bigint} NOT NULL, PRIMARY KEY (order_id, product_id))"
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
    "INSERT INTO order_summary VALUES "
    "(:id, :customer, :name, 'draft', :zero, 0, :at, :at, :version, NULL) "
    "ON CONFLICT (id) DO NOTHING"
)
_FRESH_TOTALS = "SELECT total_amount FROM order_summary WHERE id = :id AND event_version < :version"
_GROW_LINE = (
    "UPDATE order_items SET quantity = quantity + :quantity "
    "WHERE order_id = :id AND product_id = :product"
)
_OPEN_LINE = "INSERT INTO order_items VALUES (:id, :product, :name, :quantity, :price, :line_no)"
_SET_TOTALS = (
    "UPDATE order_summary SET total_amount = :total, item_count = item_count + :opened, "
    "updated_at = :at, event_version = :version WHERE id = :id"
)
_SET_STATUS = (
    "UPDATE order_summary SET status = :status, total_amount = coalesce(:total, total_amount), "
    "cancel_reason = :reason, updated_at = :at, event_version = :version "
    "WHERE id = :id AND event_version < :version"
)


@attrs.frozen
class _Totals:
    total_amount: Decimal


class OrderSummaryProjection(fabula.SqlProjection):
    """Keeps one row per order and one per order line, on SQLite or PostgreSQL alike."""

    name = "order_summary"
    tables: ClassVar[tuple[str, ...]] = ("order_summary", "order_items")
    definitions: ClassVar[tuple[str, ...]] = _TABLES

    @fabula.handles
    def _created(self, event: OrderCreated, sql: fabula.Sql) -> None:
        sql.execute(
            _OPEN,
            {
                "id": event.aggregate_id,
                "customer": event.customer_id,
                "name": event.customer_name,
                "zero": Decimal("0.00"),
                "at": event.timestamp,
                "version": event.version,
            },
        )

    @fabula.handles
    def _forgotten(self, event: fabula.SubjectForgotten, sql: fabula.Sql) -> None:
        """A forgotten customer's orders keep their lines and totals, not their name."""
        try:
            customer = UUID(event.subject)
        except ValueError:
            return  # not a customer
        sql.execute(
            "UPDATE order_summary SET customer_name = NULL WHERE customer_id = :customer",
            {"customer": customer},
        )

    # --8<-- [start:item-added]
    @fabula.handles
    def _item_added(self, event: OrderItemAdded, sql: fabula.Sql) -> None:
        order = {"id": event.aggregate_id, "version": event.version}
        row = sql.fetch_one(_FRESH_TOTALS, order, row=_Totals)
        if row is None:
            return  # applied before
        line = {"product": event.product_id, "quantity": event.quantity, **order}
        opened = sql.execute(_GROW_LINE, line) == 0
        if opened:
            more = {"name": event.product_name, "price": event.unit_price, "line_no": event.version}
            sql.execute(_OPEN_LINE, {**line, **more})
        total = row.total_amount + event.quantity * event.unit_price
        sql.execute(
            _SET_TOTALS,
            {"total": total, "opened": 1 if opened else 0, "at": event.timestamp, **order},
        )

    # --8<-- [end:item-added]
    @fabula.handles
    def _submitted(self, event: OrderSubmitted, sql: fabula.Sql) -> None:
        self._set_status(sql, event, OrderStatus.SUBMITTED, event.total_amount)

    @fabula.handles
    def _confirmed(self, event: OrderConfirmed, sql: fabula.Sql) -> None:
        self._set_status(sql, event, OrderStatus.CONFIRMED, None)

    @fabula.handles
    def _cancelled(self, event: OrderCancelled, sql: fabula.Sql) -> None:
        self._set_status(sql, event, OrderStatus.CANCELLED, None, reason=event.reason)

    def _set_status(
        self,
        sql: fabula.Sql,
        event: fabula.DomainEvent,
        status: OrderStatus,
        total: Decimal | None,
        *,
        reason: str | None = None,
    ) -> None:
        sql.execute(
            _SET_STATUS,
            {
                "status": status.value,
                "total": total,
                "reason": reason,
                "at": event.timestamp,
                "version": event.version,
                "id": event.aggregate_id,
            },
        )


_STOCK_TABLES = (
    (
        "CREATE TABLE IF NOT EXISTS product_stock (product_id {uuid} PRIMARY KEY, "
        "available {bigint} NOT NULL, event_version {bigint} NOT NULL)"
    ),
)
_STOCK_OPEN = (
    "INSERT INTO product_stock VALUES (:product, :quantity, :version) "
    "ON CONFLICT (product_id) DO NOTHING"
)
_STOCK_MOVE = (
    "UPDATE product_stock SET available = available + :change, event_version = :version "
    "WHERE product_id = :product AND event_version < :version"
)


class StockLevelsProjection(fabula.SqlProjection):
    """Keeps each tracked product's available units, for the catalog's answers."""

    name = "product_stock"
    tables: ClassVar[tuple[str, ...]] = ("product_stock",)
    definitions: ClassVar[tuple[str, ...]] = _STOCK_TABLES

    @fabula.handles
    def _added(self, event: StockAdded, sql: fabula.Sql) -> None:
        parameters = {"product": event.product_id, "quantity": event.quantity}
        sql.execute(_STOCK_OPEN, {**parameters, "version": event.version})

    @fabula.handles
    def _reserved(self, event: StockReserved, sql: fabula.Sql) -> None:
        self._move(sql, event.product_id, -event.quantity, event.version)

    @fabula.handles
    def _released(self, event: StockReleased, sql: fabula.Sql) -> None:
        self._move(sql, event.product_id, event.quantity, event.version)

    def _move(self, sql: fabula.Sql, product: UUID, change: int, version: int) -> None:
        sql.execute(_STOCK_MOVE, {"product": product, "change": change, "version": version})


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
    customer_name: str | None
    status: OrderStatus
    total_amount: Decimal
    item_count: int
    created_at: datetime
    updated_at: datetime
    cancel_reason: str | None = None


@attrs.frozen(kw_only=True)
class OrderView(OrderSummaryView):
    """An order with its lines."""

    items: tuple[OrderItemView, ...]


_SUMMARY_COLUMNS = (
    "s.id, s.customer_id, s.customer_name, s.status, s.total_amount, s.item_count, "
    "s.created_at, s.updated_at, s.cancel_reason"
)
# One statement for the order and its lines: they come from one committed state.
_ORDER = (
    f"SELECT {_SUMMARY_COLUMNS}, i.product_id, i.product_name, i.quantity, i.unit_price "  # noqa: S608
    "FROM order_summary s LEFT JOIN order_items i ON i.order_id = s.id "
    "WHERE s.id = :id ORDER BY i.line_no"
)
_PAGE = (
    f"SELECT {_SUMMARY_COLUMNS} FROM order_summary s WHERE {{where}} "  # noqa: S608
    "ORDER BY s.created_at DESC, s.id DESC LIMIT :limit"
)


@attrs.frozen(kw_only=True)
class _OrderRow(OrderSummaryView):
    """An order's summary with one of its lines (none if it has none yet)."""

    product_id: UUID | None
    product_name: str | None
    quantity: int | None
    unit_price: Decimal | None


class ReadModel:
    """Answers queries from the read-model tables.

    Args:
        tables: The store's SQL read model, where the projection writes.
        codec: Signs and checks page cursors.
    """

    MAX_PAGE_SIZE = 100

    def __init__(self, tables: fabula.ReadModel, codec: fabula.CursorCodec) -> None:
        self._tables = tables
        self._codec = codec

    @property
    def codec(self) -> fabula.CursorCodec:
        """The codec of the service's page cursors (the catalog's listings use it too)."""
        return self._codec

    def __repr__(self) -> str:
        return f"<ReadModel in {self._tables!r}>"

    async def order(self, order_id: UUID) -> OrderView | None:
        """Return the order with `order_id`, or None if the read model has none."""
        rows = await self._tables.fetch_all(_ORDER, {"id": order_id}, row=_OrderRow)
        if not rows:
            return None
        items = tuple(
            OrderItemView(row.product_id, row.product_name, row.quantity, row.unit_price)
            for row in rows
            if row.product_id is not None
            and row.product_name is not None
            and row.quantity is not None
            and row.unit_price is not None
        )
        summary = {field.name: getattr(rows[0], field.name) for field in _SUMMARY_FIELDS}
        return OrderView(**summary, items=items)

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
        where = ["s.customer_id = :customer"]
        params: dict[str, object] = {"customer": customer_id, "limit": size + 1}
        listing = status.value if status is not None else ""
        if status is not None:
            where.append("s.status = :status")
            params["status"] = status.value
        scope = f"orders-of:{customer_id}:{listing}"
        if cursor is not None:
            created, after_id = self._codec.decode(cursor, (datetime, UUID), scope=scope)
            where.append("(s.created_at, s.id) < (:created, :after)")
            params |= {"created": created, "after": after_id}
        statement = _PAGE.format(where=" AND ".join(where))
        rows = await self._tables.fetch_all(statement, params, row=OrderSummaryView)
        return fabula.Page.from_rows(
            rows,
            size,
            key=lambda view: (view.created_at, view.id),
            codec=self._codec,
            scope=scope,
        )

    # --8<-- [end:page]


_SUMMARY_FIELDS = attrs.fields(OrderSummaryView)
