"""The orders application's messages: the commands that change it and the queries that read it.

Each is a frozen attrs class typed by its result. Commands take an
`idempotency_key` so a command sent twice runs once (see `orders.service`).
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import attrs

import fabula

from .catalog import Product
from .domain import OrderStatus, ShippingAddress
from .read_model import OrderSummaryView, OrderView

__all__ = [
    "AddOrderItem",
    "CancelOrder",
    "CreateCustomer",
    "CreateOrder",
    "CreateProduct",
    "GetCustomerOrders",
    "GetOrderById",
    "ListProducts",
    "SubmitOrder",
]


@attrs.frozen(kw_only=True)
class CreateCustomer(fabula.Command[UUID]):
    """Add a customer to the catalog; returns the new customer's id."""

    name: str
    email: str


@attrs.frozen(kw_only=True)
class CreateProduct(fabula.Command[UUID]):
    """Add a product to the catalog; returns the new product's id."""

    name: str
    price: Decimal


# --8<-- [start:commands]
@attrs.frozen(kw_only=True)
class CreateOrder(fabula.Command[UUID]):
    """Open a draft order for a customer; returns the new order's id."""

    customer_id: UUID
    shipping_address: ShippingAddress


@attrs.frozen(kw_only=True)
class AddOrderItem(fabula.Command[None]):
    """Add units of a catalog product to a draft order, at the product's current price."""

    order_id: UUID
    product_id: UUID
    quantity: int
    owner: UUID | None = None
    """If set, only that customer's order may be changed (another's is not found)."""


@attrs.frozen(kw_only=True)
class SubmitOrder(fabula.Command[Decimal]):
    """Submit a draft order; returns its total."""

    order_id: UUID
    owner: UUID | None = None
    """If set, only that customer's order may be submitted (another's is not found)."""


@attrs.frozen(kw_only=True)
class CancelOrder(fabula.Command[None]):
    """Cancel a draft or submitted order."""

    order_id: UUID
    reason: str
    owner: UUID | None = None
    """If set, only that customer's order may be cancelled (another's is not found)."""


# --8<-- [end:commands]
@attrs.frozen(kw_only=True)
class GetOrderById(fabula.Query[OrderView | None]):
    """The order with this id, or None."""

    order_id: UUID


@attrs.frozen(kw_only=True)
class GetCustomerOrders(fabula.Query[fabula.Page[OrderSummaryView]]):
    """A page of a customer's orders, newest first, optionally of one status."""

    customer_id: UUID
    status: OrderStatus | None = None
    page_size: int = 20
    cursor: str | None = None


@attrs.frozen(kw_only=True)
class ListProducts(fabula.Query[fabula.Page[Product]]):
    """A page of the catalog's products, in the order they were added."""

    page_size: int = 20
    cursor: str | None = None
