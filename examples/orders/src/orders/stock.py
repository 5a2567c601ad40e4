"""A product's stock: an event-sourced aggregate per tracked product, in stream `stock-<id>`.

Units are created with the product (`StockAdded`), reserved for an order
(`StockReserved`) and given back when the order is cancelled
(`StockReleased`). A reservation the stock cannot cover is recorded too
(`StockReservationRefused`), so the process that asked learns of it from
the log like of any other answer. An order holds at most one reservation
of a product: reserving again for it, or releasing what it does not hold,
records nothing, so no unit is reserved or released twice.
"""

from typing import Self
from uuid import UUID

import attrs

import fabula

__all__ = [
    "Stock",
    "StockAdded",
    "StockReleased",
    "StockReservationRefused",
    "StockReserved",
    "stock_id",
]


def stock_id(product_id: UUID) -> str:
    """The stream (and aggregate id) of a product's stock."""
    return f"stock-{product_id}"


@fabula.event("orders.StockAdded")
@attrs.frozen(kw_only=True)
class StockAdded(fabula.DomainEvent[str]):
    """Units of a product were put in stock."""

    product_id: UUID
    product_name: str
    quantity: int


@fabula.event("orders.StockReserved")
@attrs.frozen(kw_only=True)
class StockReserved(fabula.DomainEvent[str]):
    """Units were set aside for an order's line."""

    product_id: UUID
    order_id: UUID
    quantity: int


@fabula.event("orders.StockReservationRefused")
@attrs.frozen(kw_only=True)
class StockReservationRefused(fabula.DomainEvent[str]):
    """An order asked for more units than were available; nothing was set aside."""

    product_id: UUID
    product_name: str
    order_id: UUID
    quantity: int
    available: int


@fabula.event("orders.StockReleased")
@attrs.frozen(kw_only=True)
class StockReleased(fabula.DomainEvent[str]):
    """An order's reserved units went back into stock."""

    product_id: UUID
    order_id: UUID
    quantity: int


@attrs.define
class Stock(fabula.Aggregate[str]):
    """One tracked product's units: those available and those each order holds.

    Attributes:
        product_id: The product.
        product_name: Its name when its stock was created.
        available: Units not reserved.
        reserved: Units held, by order.
    """

    product_id: UUID | None = None
    product_name: str = ""
    available: int = 0
    reserved: dict[UUID, int] = attrs.Factory(dict)

    @classmethod
    def create(cls, product_id: UUID, name: str, quantity: int) -> Self:
        """Start tracking a product with `quantity` units (0 or more)."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            msg = f"stock must be a whole number of at least 0, not {quantity!r}"
            raise ValueError(msg)
        stock = cls(id=stock_id(product_id))
        stock.record(StockAdded(product_id=product_id, product_name=name, quantity=quantity))
        return stock

    def reserve(self, order_id: UUID, quantity: int) -> bool:
        """Set `quantity` units aside for `order_id`; return whether they are held.

        An order that holds a reservation already keeps it (True); one that
        asks for more than is available is refused (recorded, False).
        """
        if order_id in self.reserved:
            return True
        assert self.product_id is not None  # set by StockAdded, the stream's first event
        if quantity > self.available:
            self.record(
                StockReservationRefused(
                    product_id=self.product_id,
                    product_name=self.product_name,
                    order_id=order_id,
                    quantity=quantity,
                    available=self.available,
                )
            )
            return False
        self.record(StockReserved(product_id=self.product_id, order_id=order_id, quantity=quantity))
        return True

    def release(self, order_id: UUID) -> int:
        """Give back what `order_id` holds; return how many units (0 if it holds none)."""
        held = self.reserved.get(order_id)
        if held is None:
            return 0
        assert self.product_id is not None
        self.record(StockReleased(product_id=self.product_id, order_id=order_id, quantity=held))
        return held

    @fabula.apply
    def _added(self, event: StockAdded) -> None:
        self.product_id = event.product_id
        self.product_name = event.product_name
        self.available += event.quantity

    @fabula.apply
    def _reserved(self, event: StockReserved) -> None:
        self.available -= event.quantity
        self.reserved[event.order_id] = event.quantity

    @fabula.apply
    def _refused(self, event: StockReservationRefused) -> None:
        pass  # an answer for the order's process; the stock is unchanged

    @fabula.apply
    def _released(self, event: StockReleased) -> None:
        self.available += event.quantity
        del self.reserved[event.order_id]
