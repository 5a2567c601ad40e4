"""The order domain: events, the `Order` aggregate and its rules.

An order starts as a DRAFT, collects lines, and is either SUBMITTED or
CANCELLED. A submitted order is CONFIRMED once every line's stock is
reserved (by `orders.fulfilment`), or cancelled when a line cannot be; a
submitted or confirmed order may still be cancelled. Money is `Decimal`
with two places, never float. Adding a product already in the order adds
to that line's quantity at the price the line was opened with, so the
aggregate and the read model always agree on a line.
"""

import enum
from decimal import Decimal
from typing import Self
from uuid import UUID

import attrs

import fabula

__all__ = [
    "CENT",
    "MAX_LINES",
    "MAX_LINE_QUANTITY",
    "MAX_ORDER_EVENTS",
    "InvalidOrderError",
    "Order",
    "OrderCancelled",
    "OrderConfirmed",
    "OrderCreated",
    "OrderError",
    "OrderItemAdded",
    "OrderLine",
    "OrderStateError",
    "OrderStatus",
    "OrderSubmitted",
    "ShippingAddress",
    "money",
]

CENT = Decimal("0.01")
"""The unit amounts are kept in."""

MAX_LINES = 100
"""The most products (lines) one order holds."""

MAX_ORDER_EVENTS = 1_000
"""The most events one order's stream holds: its history stays quick to load."""

MAX_LINE_QUANTITY = 10_000
"""The most units of one product one order may hold."""


def money(amount: Decimal) -> Decimal:
    """Return `amount` with exactly two places.

    Raises:
        InvalidOrderError: `amount` is not finite or has more than two places.
    """
    if not amount.is_finite():
        raise InvalidOrderError(f"an amount must be finite, not {amount}")
    rounded = amount.quantize(CENT)
    if rounded != amount:
        raise InvalidOrderError(f"an amount has at most two decimal places, not {amount}")
    return rounded + 0  # -0.00 becomes 0.00


class OrderError(fabula.DomainError):
    """An order rule was broken; nothing was recorded."""


class OrderStateError(OrderError):
    """The order's status does not allow the change (HTTP 409)."""


class InvalidOrderError(OrderError):
    """The change itself is invalid, whatever the order's status (HTTP 422)."""


class OrderStatus(enum.Enum):
    """Where an order is in its life."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


@attrs.frozen
class ShippingAddress:
    """Where an order goes."""

    street: str
    city: str
    postal_code: str
    country: str


# --8<-- [start:events]
@fabula.event("orders.OrderCreated")
@attrs.frozen(kw_only=True)
class OrderCreated(fabula.DomainEvent):
    """An order was opened for a customer, under the name the customer had then.

    The name and the address are the customer's personal data: stored
    sealed with the customer's key, and None once the customer is forgotten.
    """

    customer_id: UUID
    customer_name: str | None = attrs.field(metadata=fabula.personal("customer_id"))
    shipping_address: ShippingAddress | None = attrs.field(metadata=fabula.personal("customer_id"))


@fabula.event("orders.OrderItemAdded")
@attrs.frozen(kw_only=True)
class OrderItemAdded(fabula.DomainEvent):
    """Units of a product were added to an order (to its line, if it has one)."""

    product_id: UUID
    product_name: str
    quantity: int
    unit_price: Decimal


@fabula.event("orders.OrderSubmitted")
@attrs.frozen(kw_only=True)
class OrderSubmitted(fabula.DomainEvent):
    """An order was submitted with this total."""

    total_amount: Decimal


@fabula.event("orders.OrderCancelled")
@attrs.frozen(kw_only=True)
class OrderCancelled(fabula.DomainEvent):
    """An order was cancelled, for this reason."""

    reason: str


# --8<-- [end:events]
@fabula.event("orders.OrderConfirmed")
@attrs.frozen(kw_only=True)
class OrderConfirmed(fabula.DomainEvent):
    """Every line of a submitted order is reserved: it will be fulfilled."""


@attrs.frozen
class OrderLine:
    """One product in an order."""

    product_id: UUID
    product_name: str
    quantity: int
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        """The line's amount."""
        return self.quantity * self.unit_price


# --8<-- [start:aggregate]
@attrs.define
class Order(fabula.Aggregate):
    """An order, rebuilt from its events.

    Attributes:
        customer_id: Who placed it.
        status: DRAFT, SUBMITTED, CONFIRMED or CANCELLED.
        lines: One line per product, in the order they were first added.
    """

    customer_id: UUID | None = None
    status: OrderStatus = OrderStatus.DRAFT
    lines: dict[UUID, OrderLine] = attrs.Factory(dict)

    @classmethod
    def create(
        cls,
        order_id: UUID,
        *,
        customer_id: UUID,
        customer_name: str,
        shipping_address: ShippingAddress,
    ) -> Self:
        """Open a new draft order."""
        order = cls(id=order_id)
        order.record(
            OrderCreated(
                customer_id=customer_id,
                customer_name=customer_name,
                shipping_address=shipping_address,
            )
        )
        return order

    @property
    def total(self) -> Decimal:
        """The sum of the lines' amounts."""
        return sum((line.subtotal for line in self.lines.values()), Decimal("0.00"))

    def add_item(self, product_id: UUID, name: str, quantity: int, price: Decimal) -> None:
        """Add `quantity` units of a product at `price` (or at its line's price).

        Raises:
            OrderStateError: The order is not a draft, or it has
                `MAX_ORDER_EVENTS` events already (submit it, or open another).
            InvalidOrderError: The quantity is not between 1 and
                `MAX_LINE_QUANTITY` in all, the order has `MAX_LINES` other
                products already, or the price is negative or not in cents.
        """
        self._check_draft("add items to")
        if self.version >= MAX_ORDER_EVENTS:
            raise OrderStateError(
                f"order {self.id} is full: it holds {MAX_ORDER_EVENTS} events; "
                f"submit it, or open another order"
            )
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise InvalidOrderError(
                f"a quantity must be a whole number of at least 1, not {quantity!r}"
            )
        line = self.lines.get(product_id)
        if line is None and len(self.lines) >= MAX_LINES:
            raise InvalidOrderError(f"an order holds at most {MAX_LINES} different products")
        held = line.quantity if line else 0
        if held + quantity > MAX_LINE_QUANTITY:
            raise InvalidOrderError(
                f"an order holds at most {MAX_LINE_QUANTITY} units of a product; "
                f"it has {held} and {quantity} more were asked for"
            )
        unit_price = line.unit_price if line else money(price)
        if unit_price < 0:
            raise InvalidOrderError(f"a price cannot be negative, not {unit_price}")
        self.record(
            OrderItemAdded(
                product_id=product_id,
                product_name=line.product_name if line else name,
                quantity=quantity,
                unit_price=unit_price,
            )
        )

    def submit(self) -> Decimal:
        """Submit the draft and return its total.

        Raises:
            OrderStateError: The order is not a draft, or it has no lines.
        """
        self._check_draft("submit")
        if not self.lines:
            raise OrderStateError(f"order {self.id} is empty; add items before submitting it")
        total = self.total
        self.record(OrderSubmitted(total_amount=total))
        return total

    def confirm(self) -> None:
        """Confirm a submitted order, its stock reserved.

        Raises:
            OrderStateError: The order is not submitted (a draft, cancelled meanwhile,
                or confirmed already).
        """
        if self.status is not OrderStatus.SUBMITTED:
            raise OrderStateError(
                f"cannot confirm order {self.id}: it is {self.status.value}, not submitted"
            )
        self.record(OrderConfirmed())

    def expire(self, *, unchanged_since: int) -> None:
        """Cancel a draft abandoned at version `unchanged_since` (nothing happened since).

        Raises:
            OrderStateError: The order is no longer a draft, or it changed since.
        """
        self._check_draft("expire")
        if self.version != unchanged_since:
            raise OrderStateError(
                f"order {self.id} changed since version {unchanged_since}: it is not abandoned"
            )
        self.record(OrderCancelled(reason="abandoned"))

    def cancel(self, reason: str) -> None:
        """Cancel a draft, submitted or confirmed order.

        Raises:
            OrderStateError: The order is already cancelled.
            InvalidOrderError: The reason is blank.
        """
        if self.status is OrderStatus.CANCELLED:
            raise OrderStateError(f"order {self.id} is already cancelled")
        if not reason.strip():
            raise InvalidOrderError("a cancellation needs a reason")
        self.record(OrderCancelled(reason=reason))

    def _check_draft(self, action: str) -> None:
        if self.status is not OrderStatus.DRAFT:
            raise OrderStateError(
                f"cannot {action} order {self.id}: it is {self.status.value}, not draft"
            )

    @fabula.apply
    def _created(self, event: OrderCreated) -> None:
        self.customer_id = event.customer_id

    @fabula.apply
    def _item_added(self, event: OrderItemAdded) -> None:
        line = self.lines.get(event.product_id)
        if line is None:
            line = OrderLine(event.product_id, event.product_name, 0, event.unit_price)
        self.lines[event.product_id] = attrs.evolve(line, quantity=line.quantity + event.quantity)

    @fabula.apply
    def _submitted(self, _: OrderSubmitted) -> None:
        self.status = OrderStatus.SUBMITTED

    @fabula.apply
    def _confirmed(self, _: OrderConfirmed) -> None:
        self.status = OrderStatus.CONFIRMED

    @fabula.apply
    def _cancelled(self, _: OrderCancelled) -> None:
        self.status = OrderStatus.CANCELLED


# --8<-- [end:aggregate]
