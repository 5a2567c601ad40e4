"""`orders demo`: a scripted session through the HTTP API, printed as it goes."""

import asyncio
import os
import re
import secrets
from datetime import timedelta
from typing import TypeVar

import httpx
import pydantic

import fabula

from .api import create_app
from .auth import Role, Tokens
from .schemas import (
    CustomerCreated,
    OrderCreatedOut,
    OrderOut,
    OrderPage,
    ProductCreated,
    ProductOut,
)
from .service import KEK_VARIABLE, OrdersService

__all__ = ["run_demo"]

M = TypeVar("M", bound=pydantic.BaseModel)


class _Anything(pydantic.BaseModel):
    """An answer the demo only prints."""

    model_config = pydantic.ConfigDict(extra="allow")


ADDRESS = {
    "street": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


class _Client:
    """Sends requests with one caller's token and prints each with its answer."""

    def __init__(self, api: httpx.AsyncClient, token: str) -> None:
        self.api = api
        self.auth = {"Authorization": f"Bearer {token}"}

    async def post(
        self, path: str, body: object = None, key: str | None = None, *, into: type[M]
    ) -> M:
        """POST `body`, print the answer, and read it as `into` (the API's own schema)."""
        headers = {**self.auth, **({"Idempotency-Key": key} if key else {})}
        response = await self.api.post(path, json=body, headers=headers)
        print(f"  POST {path} -> {response.status_code} {response.text}")
        return into.model_validate(response.json() if response.is_success else {})

    async def get(
        self,
        path: str,
        params: dict[str, str | int] | None = None,
        *,
        into: type[M],
        show: bool = False,
    ) -> M:
        """GET `path` and read the answer as `into`; print it if `show`."""
        response = await self.api.get(path, params=params, headers=self.auth)
        if show:
            print(f"  GET {path} -> {response.status_code} {response.text}")
        return into.model_validate(response.json() if response.is_success else {})


def _print_order(order: OrderOut) -> None:
    lines = order.item_count
    print(
        f"  order {order.id}  {order.status.value:<9}  {order.customer_name}  "
        f"total {order.total_amount:>8}  ({lines} line{'' if lines == 1 else 's'})"
    )
    for item in order.items:
        print(f"      {item.qty:>3} x {item.product:<12} @ {item.unit_price:>7}")


async def _catalogs(client: _Client) -> tuple[list[str], dict[str, str]]:
    print("1. The catalogs, kept by an administrator")
    customers = []
    for name, email in [("Ada Lovelace", "ada@example.org"), ("Grace Hopper", "grace@example.org")]:
        joined = await client.post(
            "/customers", {"name": name, "email": email}, into=CustomerCreated
        )
        customers.append(str(joined.customer_id))
    products = {}
    # Notebooks and lamps are counted (their stock is tracked); pens are not.
    stock: list[tuple[str, str, int | None]] = [
        ("notebook", "12.50", 20),
        ("pen", "1.99", None),
        ("lamp", "39.00", 1),
    ]
    for name, price, units in stock:
        body = {"name": name, "price": price, **({"stock": units} if units is not None else {})}
        added = await client.post("/products", body, into=ProductCreated)
        products[name] = str(added.product_id)
    return customers, products


async def _settled(client: _Client, order_id: str) -> OrderOut:
    """The order once its fulfilment process has confirmed or cancelled it."""
    async with asyncio.timeout(30):
        while True:
            order = await client.get(f"/orders/{order_id}", into=OrderOut)
            if order.status.value != "submitted":
                return order
            await asyncio.sleep(0.02)


async def _orders(
    client: _Client, grace_client: _Client, customers: list[str], products: dict[str, str]
) -> list[str]:
    ada, grace = customers
    print("\n2. Ada's order, created twice with one Idempotency-Key: one order")
    body = {"customer_id": ada, "shipping_address": ADDRESS}
    first = (await client.post("/orders", body, key="ada-order-1", into=OrderCreatedOut)).order_id
    again = (await client.post("/orders", body, key="ada-order-1", into=OrderCreatedOut)).order_id
    print(f"  the same order both times: {first == again}")

    print("\n3. Items; the second notebook joins the first line, then the order is submitted")
    for name, quantity in [("notebook", 2), ("pen", 3), ("notebook", 1)]:
        item = {"product_id": products[name], "quantity": quantity}
        await client.post(f"/orders/{first}/items", item, into=_Anything)
    await client.post(f"/orders/{first}/submit", into=_Anything)

    confirmed = await _settled(client, str(first))
    stock = await client.get(f"/products/{products['notebook']}", into=ProductOut)
    print(
        f"  without another request, the fulfilment process reserved its notebooks: "
        f"{confirmed.status.value}; notebooks left: {stock.stock}"
    )

    print("\n4. A rule the domain keeps: a submitted order takes no more items")
    pen = {"product_id": products["pen"], "quantity": 1}
    await client.post(f"/orders/{first}/items", pen, into=_Anything)

    print("\n5. More orders: one cancelled, one left as a draft, one for Grace that cannot be met")
    second = (await client.post("/orders", body, into=OrderCreatedOut)).order_id
    lamp = {"product_id": products["lamp"], "quantity": 1}
    await client.post(f"/orders/{second}/items", lamp, into=_Anything)
    await client.post(f"/orders/{second}/cancel", {"reason": "changed my mind"}, into=_Anything)
    third = (await client.post("/orders", body, into=OrderCreatedOut)).order_id
    pens = {"product_id": products["pen"], "quantity": 10}
    await client.post(f"/orders/{third}/items", pens, into=_Anything)
    grace_body = {"customer_id": grace, "shipping_address": ADDRESS}
    graces = (await grace_client.post("/orders", grace_body, into=OrderCreatedOut)).order_id
    item = {"product_id": products["lamp"], "quantity": 2}
    await grace_client.post(f"/orders/{graces}/items", item, into=_Anything)
    await grace_client.post(f"/orders/{graces}/submit", into=_Anything)
    refused = await _settled(grace_client, str(graces))
    print(f"  one lamp in stock, two asked for: {refused.status.value} ({refused.cancel_reason})")

    print("\n6. Ada may not open orders for Grace, nor see Grace's order")
    await client.post("/orders", grace_body, into=_Anything)
    await client.get(f"/orders/{graces}", into=_Anything, show=True)
    return [str(first), str(second), str(third)]


async def _read_back(client: _Client, customer: str, orders: list[str]) -> None:
    print("\n7. Ada's orders, read back from the read model")
    for order_id in orders:
        _print_order(await client.get(f"/orders/{order_id}", into=OrderOut))

    print("\n8. Ada's orders two to a page, newest first")
    cursor: str | None = None
    number = 0
    while number == 0 or cursor is not None:
        params: dict[str, str | int] = {"page_size": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.get(f"/customers/{customer}/orders", params=params, into=OrderPage)
        number += 1
        print(f"  page {number}:")
        for order in page.items:
            moment = order.created_at.isoformat()
            print(f"    {moment}  {order.status.value:<9}  {order.total_amount:>8}")
        cursor = page.next_cursor


def _without_password(database: str) -> str:
    masked = re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", database)
    return re.sub(r"(password=)[^&\s]*", r"\1***", masked)


async def run_demo(database: str, *, schema: str = "public") -> int:
    """Run the demo against `database` (a SQLite file or a PostgreSQL URL); return the exit code."""
    print(f"orders demo on {_without_password(database)}\n")
    # Authentication is on, with a secret made for this run; so is the sealing
    # of customers' personal data, with ORDERS_KEK or a key made for this run.
    tokens = Tokens(secrets.token_urlsafe(32))
    hour = timedelta(hours=1)
    key = (
        fabula.KeyEncryptionKey.from_env(KEK_VARIABLE)
        if os.environ.get(KEK_VARIABLE)
        else fabula.KeyEncryptionKey(secrets.token_bytes(32))
    )
    async with OrdersService.open(database, schema=schema, key_encryption_key=key) as service:
        transport = httpx.ASGITransport(app=create_app(service, tokens=tokens))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo/api/v1") as api:
            admin = _Client(api, tokens.issue(Role.ADMIN, "demo-admin", hour))
            customers, products = await _catalogs(admin)
            ada, grace = (
                _Client(api, tokens.issue(Role.CUSTOMER, customer, hour)) for customer in customers
            )
            orders = await _orders(ada, grace, customers, products)
            await _read_back(ada, customers[0], orders)
        statuses = await service.projector.status()
        reactions = await service.reactor.status()
        timers = await service.store.load_timers()
    summary = ", ".join(f"{s.name} at position {s.checkpoint}, {s.state}" for s in statuses)
    print(f"\nThe read model: {summary}")
    ran = ", ".join(f"{r.name} ({r.parked_events} parked)" for r in reactions)
    drafts = "1 draft" if len(timers) == 1 else f"{len(timers)} drafts"
    print(f"The reactions: {ran}; {drafts} will expire unless changed (`fabula timers`)")
    return 0
