"""The orders application's handlers: what each command and query does.

A command handler loads the aggregate, calls a method, and saves it; a
query handler reads the read model (never the event store). The handlers
know nothing of the database behind them or of the buses' middleware.
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import attrs

import fabula

from .catalog import Catalog, Product, UnknownCustomerError
from .domain import Order
from .messages import (
    AddOrderItem,
    CancelOrder,
    ConfirmOrder,
    CreateCustomer,
    CreateOrder,
    CreateProduct,
    CustomerData,
    ExpireDraft,
    ExportCustomer,
    ForgetCustomer,
    GetCustomerOrders,
    GetOrderById,
    GetProduct,
    ListProducts,
    ReleaseStock,
    ReserveStock,
    SubmitOrder,
)
from .read_model import OrderSummaryView, OrderView, ReadModel
from .stock import Stock, stock_id

__all__ = ["OrderHandlers"]


@attrs.define
class OrderHandlers:
    """The handlers of every orders command and query.

    Attributes:
        repository: Loads and saves orders.
        catalog: The customers and products.
        read_model: The order read model's queries.
        personal_data: The store, as the keeper of customers' personal data.
    """

    repository: fabula.Repository
    catalog: Catalog
    read_model: ReadModel
    personal_data: fabula.PersonalDataStore

    def register(self, commands: fabula.CommandBus, queries: fabula.QueryBus) -> None:
        """Register each handler with its bus."""
        commands.register(CreateCustomer, self.create_customer)
        commands.register(ForgetCustomer, self.forget_customer)
        commands.register(CreateProduct, self.create_product)
        commands.register(CreateOrder, self.create_order)
        commands.register(AddOrderItem, self.add_item)
        commands.register(SubmitOrder, self.submit)
        commands.register(CancelOrder, self.cancel)
        commands.register(ConfirmOrder, self.confirm)
        commands.register(ExpireDraft, self.expire)
        commands.register(ReserveStock, self.reserve)
        commands.register(ReleaseStock, self.release)
        queries.register(GetOrderById, self.order)
        queries.register(GetCustomerOrders, self.customer_orders)
        queries.register(ExportCustomer, self.export_customer)
        queries.register(GetProduct, self.product)
        queries.register(ListProducts, self.products)

    async def create_customer(self, command: CreateCustomer) -> UUID:
        """Add a customer to the catalog."""
        return await self.catalog.add_customer(command.name, command.email)

    async def forget_customer(self, command: ForgetCustomer) -> None:
        """Forget a customer: destroy their key, then remove them from the catalog.

        Their name and address in the events become unreadable with the
        key; their name and email leave the catalog. In this order, so that
        a crash between the two leaves a forget that a retry finishes. The
        order read model drops their name when it handles the
        `SubjectForgotten` event.

        Raises:
            UnknownCustomerError: There is no such customer (or no longer).
        """
        await self.catalog.customer(command.customer_id)
        await self.personal_data.forget(str(command.customer_id))
        await self.catalog.forget_customer(command.customer_id)

    async def export_customer(self, query: ExportCustomer) -> CustomerData:
        """Everything held about a customer: the catalog's record, their orders, their events' data.

        Raises:
            UnknownCustomerError: There is no such customer (or no longer).
        """
        customer = await self.catalog.customer(query.customer_id)
        orders: list[OrderSummaryView] = []
        cursor: str | None = None
        while True:
            page = await self.read_model.customer_orders(
                customer.id, status=None, page_size=ReadModel.MAX_PAGE_SIZE, cursor=cursor
            )
            orders.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        events = await self.personal_data.export(str(customer.id))
        return CustomerData(customer=customer, orders=orders, events=events)

    async def create_product(self, command: CreateProduct) -> UUID:
        """Add a product to the catalog, with its stock when it is tracked.

        The stock's stream is written first: a crash before the catalog row
        leaves a stock no order can name, never a tracked product without one.
        """
        product_id = uuid4()
        if command.stock is not None:
            await self.repository.save(Stock.create(product_id, command.name, command.stock))
        return await self.catalog.add_product(command.name, command.price, product_id)

    async def create_order(self, command: CreateOrder) -> UUID:
        """Open a draft order for a known customer."""
        customer = await self.catalog.customer(command.customer_id)
        order = Order.create(
            uuid4(),
            customer_id=customer.id,
            customer_name=customer.name,
            shipping_address=command.shipping_address,
        )
        await self.repository.save(order)
        return order.id

    # --8<-- [start:handler]
    async def add_item(self, command: AddOrderItem) -> None:
        """Add a catalog product to a draft order, at the catalog's price."""
        order = await self._order(command.order_id, command.owner)
        product = await self.catalog.product(command.product_id)
        order.add_item(product.id, product.name, command.quantity, product.price)
        await self.repository.save(order)

    # --8<-- [end:handler]
    async def submit(self, command: SubmitOrder) -> Decimal:
        """Submit a draft order; return its total."""
        order = await self._order(command.order_id, command.owner)
        total = order.submit()
        await self.repository.save(order)
        return total

    async def cancel(self, command: CancelOrder) -> None:
        """Cancel an order that has not shipped."""
        order = await self._order(command.order_id, command.owner)
        order.cancel(command.reason)
        await self.repository.save(order)

    async def confirm(self, command: ConfirmOrder) -> None:
        """Confirm a submitted order, its stock reserved."""
        order = await self.repository.get(Order, command.order_id)
        order.confirm()
        await self.repository.save(order)

    async def expire(self, command: ExpireDraft) -> None:
        """Cancel a draft as abandoned, if nothing happened to it since its timer was set."""
        order = await self.repository.get(Order, command.order_id)
        order.expire(unchanged_since=command.version)
        await self.repository.save(order)

    async def reserve(self, command: ReserveStock) -> bool:
        """Set units of a tracked product aside for an order (or record that it cannot)."""
        stock = await self.repository.get(Stock, stock_id(command.product_id))
        held = stock.reserve(command.order_id, command.quantity)
        await self.repository.save(stock)
        return held

    async def release(self, command: ReleaseStock) -> int:
        """Give back the units an order holds of a product."""
        stock = await self.repository.get(Stock, stock_id(command.product_id))
        released = stock.release(command.order_id)
        await self.repository.save(stock)
        return released

    async def order(self, query: GetOrderById) -> OrderView | None:
        """One order with its lines, or None."""
        return await self.read_model.order(query.order_id)

    async def customer_orders(self, query: GetCustomerOrders) -> fabula.Page[OrderSummaryView]:
        """A page of a known customer's orders (a forgotten customer's too)."""
        if not await self.catalog.known_customer(query.customer_id):
            raise UnknownCustomerError(f"there is no customer {query.customer_id}")
        return await self.read_model.customer_orders(
            query.customer_id, status=query.status, page_size=query.page_size, cursor=query.cursor
        )

    async def product(self, query: GetProduct) -> Product:
        """One product, with its stock."""
        return await self.catalog.product(query.product_id)

    async def products(self, query: ListProducts) -> fabula.Page[Product]:
        """A page of the catalog's products."""
        return await self.catalog.products(
            page_size=query.page_size, cursor=query.cursor, codec=self.read_model.codec
        )

    async def _order(self, order_id: UUID, owner: UUID | None) -> Order:
        """Load an order; one of another customer than `owner` is not found, as if absent.

        Raises:
            AggregateNotFoundError: There is no such order, or it is not `owner`'s.
        """
        order = await self.repository.get(Order, order_id)
        if owner is not None and order.customer_id != owner:
            raise fabula.AggregateNotFoundError(Order, order_id)
        return order
