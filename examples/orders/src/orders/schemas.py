"""The HTTP API's request and response bodies (pydantic models), and the rules of their fields."""

import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

import pydantic

from .domain import OrderStatus
from .read_model import OrderSummaryView, OrderView

__all__ = [
    "Address",
    "Cancellation",
    "CustomerCreated",
    "CustomerExportOut",
    "CustomerOut",
    "HealthOut",
    "NewCustomer",
    "NewItem",
    "NewOrder",
    "NewProduct",
    "OrderCreatedOut",
    "OrderItemOut",
    "OrderOut",
    "OrderPage",
    "OrderSummaryOut",
    "ProductCreated",
    "ProductOut",
    "ProductPage",
    "RelayOut",
    "StatusOut",
]


def _printable(value: str) -> str:
    """Refuse control characters (NUL, escapes, line breaks): names are one line of text."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        msg = "must not contain control characters"
        raise ValueError(msg)
    return value


def _plain_decimal(value: object) -> object:
    """Take a price only as plain ASCII decimal text: no float, no "1_000", no other digits."""
    if not isinstance(value, str) or _PLAIN_DECIMAL.fullmatch(value) is None:
        msg = 'must be a decimal string such as "12.50": ASCII digits, at most 2 decimals'
        raise ValueError(msg)
    return value


_PLAIN_DECIMAL = re.compile(r"[0-9]{1,7}(\.[0-9]{1,2})?")

Text = Annotated[
    str,
    pydantic.Field(min_length=1, max_length=200, pattern=r"\S"),
    pydantic.AfterValidator(_printable),
]
Price = Annotated[
    Decimal,
    pydantic.BeforeValidator(_plain_decimal),
    pydantic.Field(ge=0, le=Decimal("1000000.00"), max_digits=9, decimal_places=2),
]


class Model(pydantic.BaseModel):
    """Every body: unknown fields refused, values frozen."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class NewCustomer(Model):
    """A customer to add."""

    name: Text
    email: Annotated[
        str,
        pydantic.Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
        pydantic.AfterValidator(_printable),
    ]


class NewProduct(Model):
    """A product to add; the price is a decimal string such as "12.50".

    With `stock` (a whole number of units, 0 or more) the product's stock
    is tracked: orders reserve it when submitted. Without it (or null),
    it is not.
    """

    name: Text
    price: Price
    stock: Annotated[int | None, pydantic.Field(strict=True, ge=0, le=1_000_000_000)] = None


class Address(Model):
    """A shipping address."""

    street: Text
    city: Text
    postal_code: Annotated[
        str,
        pydantic.Field(min_length=1, max_length=20, pattern=r"\S"),
        pydantic.AfterValidator(_printable),
    ]
    country: Text


class NewOrder(Model):
    """An order to open."""

    customer_id: UUID
    shipping_address: Address


class NewItem(Model):
    """Units of a product to add to an order."""

    product_id: UUID
    quantity: Annotated[int, pydantic.Field(strict=True, ge=1, le=10_000)]


class Cancellation(Model):
    """Why an order is cancelled."""

    reason: Annotated[
        str,
        pydantic.Field(min_length=1, max_length=500, pattern=r"\S"),
        pydantic.AfterValidator(_printable),
    ]


class CustomerCreated(Model):
    """The new customer's id."""

    customer_id: UUID


class ProductCreated(Model):
    """The new product's id."""

    product_id: UUID


class ProductOut(Model):
    """A product at its current price, with its units available (null: stock not tracked)."""

    product_id: UUID
    name: str
    price: Annotated[str, pydantic.Field(examples=["12.50"])]
    stock: int | None


class ProductPage(Model):
    """A page of products, oldest first, and the cursor of the next page (null on the last)."""

    items: list[ProductOut]
    next_cursor: str | None


class HealthOut(Model):
    """The process is alive."""

    status: Literal["alive"]


class RelayOut(Model):
    """Where one relay of the order events to a broker is."""

    name: str
    broker: Annotated[str, pydantic.Field(examples=["nats://127.0.0.1:4222 stream ORDERS"])]
    state: Literal["running", "retrying", "standby", "stopped"]
    checkpoint: int
    lag: Annotated[int, pydantic.Field(description="events written but not yet acknowledged")]
    parked_events: int


class OrderCreatedOut(Model):
    """The new order's id."""

    order_id: UUID


class StatusOut(Model):
    """What a command did."""

    status: Literal["item_added", "submitted", "cancelled"]


class OrderItemOut(Model):
    """One line of an order."""

    product_id: UUID
    product: str
    qty: int
    unit_price: str


class OrderSummaryOut(Model):
    """An order, without its lines."""

    id: UUID
    customer_id: UUID
    customer_name: Annotated[
        str | None,
        pydantic.Field(description="Null once the customer is forgotten (right to erasure)."),
    ]
    status: OrderStatus
    total_amount: str
    item_count: int
    created_at: datetime
    updated_at: datetime
    cancel_reason: Annotated[
        str | None,
        pydantic.Field(
            description='Why it was cancelled ("abandoned", "out of stock: <product>").'
        ),
    ] = None

    @classmethod
    def of(cls, view: OrderSummaryView) -> "OrderSummaryOut":
        """Convert a read-model view."""
        return cls(
            id=view.id,
            customer_id=view.customer_id,
            customer_name=view.customer_name,
            status=view.status,
            total_amount=f"{view.total_amount:.2f}",
            item_count=view.item_count,
            created_at=view.created_at,
            updated_at=view.updated_at,
            cancel_reason=view.cancel_reason,
        )


class OrderOut(OrderSummaryOut):
    """An order with its lines."""

    items: list[OrderItemOut]

    @classmethod
    def of_view(cls, view: OrderView) -> "OrderOut":
        """Convert a read-model view."""
        items = [
            OrderItemOut(
                product_id=item.product_id,
                product=item.product,
                qty=item.qty,
                unit_price=f"{item.unit_price:.2f}",
            )
            for item in view.items
        ]
        return cls(**OrderSummaryOut.of(view).model_dump(), items=items)


class OrderPage(Model):
    """A page of orders, newest first, and the cursor of the next page (null on the last)."""

    items: list[OrderSummaryOut]
    next_cursor: str | None


class CustomerOut(Model):
    """A customer as the catalog keeps them."""

    id: UUID
    name: str
    email: str


class PersonalDataOut(Model):
    """One event that holds a customer's personal data, and that data."""

    position: int
    stream_id: str
    version: int
    type: str
    timestamp: str
    fields: dict[str, pydantic.JsonValue]


class CustomerExportOut(Model):
    """Everything the service holds about a customer (right of access)."""

    customer: CustomerOut
    orders: list[OrderSummaryOut]
    events: list[PersonalDataOut]
