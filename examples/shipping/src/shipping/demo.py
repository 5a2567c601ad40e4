"""`shipping demo`: the order service publishes, the shipping service consumes, through a broker.

Both services run in this process, each on its own SQLite file, and they
share nothing but the broker: the order service's relay publishes
`orders.v1.*` CloudEvents, the shipping service's inbox receives them.
"""

import asyncio
import contextlib
import secrets
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from orders.domain import ShippingAddress
from orders.messages import (
    AddOrderItem,
    CancelOrder,
    CreateCustomer,
    CreateOrder,
    CreateProduct,
    SubmitOrder,
)
from orders.service import OrdersService

import fabula

from .api import create_app
from .service import ShippingService

__all__ = ["run_demo"]

ADDRESS = ShippingAddress(
    street="1 Quay Street", city="Bristol", postal_code="BS1 4DJ", country="GB"
)


async def _shipment(api: httpx.AsyncClient, order_id: UUID, status: str) -> str:
    """Ask for the order's shipment until it has `status` (the events cross the broker)."""
    async with asyncio.timeout(30):
        while True:
            response = await api.get(f"/api/v1/shipments/{order_id}")
            if response.is_success and response.json()["status"] == status:
                return f"GET /api/v1/shipments/{order_id} -> {response.status_code} {response.text}"
            await asyncio.sleep(0.05)


async def run_demo(broker: str) -> int:
    """Run both services against `broker`; print what happens; return 0."""
    name = f"shipping-demo-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        orders_db, shipping_db = Path(folder) / "orders.db", Path(folder) / "shipping.db"
        print(f"orders publishes to {broker}; shipping consumes as {name}")
        async with (
            OrdersService.open(
                str(orders_db),
                publish=[broker],
                key_encryption_key=fabula.KeyEncryptionKey(
                    secrets.token_bytes(32)  # a key for this run's throwaway database
                ),
            ) as orders,
            ShippingService.open(str(shipping_db), consume=[broker], name=name) as shipping,
        ):
            app = create_app(shipping, tokens=None)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shipping") as api:
                customer = await orders.execute(CreateCustomer(name="Ada", email="ada@example.com"))
                ink = await orders.execute(CreateProduct(name="ink", price=Decimal("4.50")))
                first = await orders.execute(
                    CreateOrder(customer_id=customer, shipping_address=ADDRESS)
                )
                await orders.execute(AddOrderItem(order_id=first, product_id=ink, quantity=2))
                await orders.execute(SubmitOrder(order_id=first))
                print(f"orders: order {first} submitted; fulfilment confirms it")
                print(f"shipping: {await _shipment(api, first, 'open')}")
                await orders.execute(CancelOrder(order_id=first, reason="changed my mind"))
                print(f"orders: order {first} cancelled")
                print(f"shipping: {await _shipment(api, first, 'cancelled')}")
        await _forget(broker, name)
    return 0


async def _forget(broker: str, name: str) -> None:
    """Remove the demo's durable consumer (or queue) from the broker."""
    with contextlib.suppress(Exception):
        if urlsplit(broker).scheme in {"nats", "tls"}:
            import nats  # noqa: PLC0415

            client = await nats.connect(broker)
            try:
                await client.jetstream().delete_consumer("ORDERS", name)
            finally:
                await client.close()
        else:
            import aio_pika  # noqa: PLC0415

            connection = await aio_pika.connect(broker)
            async with connection:
                channel = await connection.channel()
                await channel.queue_delete(f"{name}.orders")
