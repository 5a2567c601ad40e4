"""The orders application's messages: the commands that change it and the queries that read it.

Each is a frozen attrs class typed by its result. Commands take an
`idempotency_key` so a command sent twice runs once (see `orders.service`).
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import attrs

import fabula

from .catalog import Customer, Product
from .domain import OrderStatus, ShippingAddress
from .read_model import OrderSummaryView, OrderView

__all__ = [
    "AddOrderItem",
    "CancelOrder",
    "ConfirmOrder",
    "CreateCustomer",
    "CreateOrder",
    "CreateProduct",
    "CustomerData",
    "ExpireDraft",
    "ExportCustomer",
    "ForgetCustomer",
    "GetCustomerOrders",
    "GetOrderById",
    "GetProduct",
    "ListProducts",
    "ReleaseStock",
    "ReserveStock",
    "SubmitOrder",
]


@attrs.frozen(kw_only=True)
class CreateCustomer(fabula.Command[UUID]):
    """Add a customer to the catalog; returns the new customer's id."""

    name: str
    email: str


@attrs.frozen(kw_only=True)
class ForgetCustomer(fabula.Command[None]):
    """Forget a customer (right to erasure): their key, name and email go; their orders stay."""

    customer_id: UUID


@attrs.frozen(kw_only=True)
class CreateProduct(fabula.Command[UUID]):
    """Add a product to the catalog; returns the new product's id."""

    name: str
    price: Decimal
    stock: int | None = None
    """Units in stock, tracked from now on; None: the product's stock is not tracked."""


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
class ConfirmOrder(fabula.Command[None]):
    """Confirm a submitted order whose lines are all reserved (sent by the fulfilment process)."""

    order_id: UUID


@attrs.frozen(kw_only=True)
class ExpireDraft(fabula.Command[None]):
    """Cancel a draft as abandoned if it is still at `version` (sent by its durable timer)."""

    order_id: UUID
    version: int


@attrs.frozen(kw_only=True)
class ReserveStock(fabula.Command[bool]):
    """Set units of a tracked product aside for an order; returns whether they are held."""

    product_id: UUID
    order_id: UUID
    quantity: int


@attrs.frozen(kw_only=True)
class ReleaseStock(fabula.Command[int]):
    """Give back what an order holds of a product; returns how many units."""

    product_id: UUID
    order_id: UUID


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
class CustomerData:
    """Everything the service holds about a customer.

    Attributes:
        customer: The catalog's record: id, name and email.
        orders: Their orders, newest first.
        events: The personal data of theirs the events hold (`EventStore.export`).
    """

    customer: Customer
    orders: list[OrderSummaryView]
    events: fabula.JSONObject


@attrs.frozen(kw_only=True)
class ExportCustomer(fabula.Query[CustomerData]):
    """Everything held about a customer (right of access)."""

    customer_id: UUID


@attrs.frozen(kw_only=True)
class GetProduct(fabula.Query[Product]):
    """One product, with its stock (raises UnknownProductError if there is none)."""

    product_id: UUID


@attrs.frozen(kw_only=True)
class ListProducts(fabula.Query[fabula.Page[Product]]):
    """A page of the catalog's products, in the order they were added."""

    page_size: int = 20
    cursor: str | None = None
