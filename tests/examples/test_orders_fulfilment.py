"""Stock, the fulfilment process and abandoned drafts: what happens after an order's events.

In-process on SQLite and PostgreSQL, then `orders serve` killed with
SIGKILL at random moments while orders compete for the last units, and
restarted on the same database: the stock invariants hold at the end.
"""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import attrs
import httpx
import pytest
from orders.api import create_app
from orders.domain import (
    OrderCancelled,
    OrderConfirmed,
    OrderItemAdded,
    OrderStateError,
    OrderSubmitted,
)
from orders.fulfilment import draft_timer
from orders.messages import ExpireDraft
from orders.service import OrdersService
from orders.stock import Stock, StockAdded, StockReleased, StockReserved, stock_id

import fabula
from fabula.sqlite import SQLiteEventStore

from .conftest import ADMIN, TOKENS, Place, Server, Shop

KEY = fabula.KeyEncryptionKey.from_env("ORDERS_KEK")  # set by conftest

ASKED = 2  # units each competing order asks for


async def settled(shop: Shop, order: str, seconds: float = 30) -> dict[str, Any]:
    """The order once the fulfilment process has confirmed or cancelled it."""
    async with asyncio.timeout(seconds):
        while True:
            view: dict[str, Any] = await shop.get(f"/orders/{order}")
            if view["status"] != "submitted":
                return view
            await asyncio.sleep(0.02)


async def stock_of(shop: Shop, product: str) -> int | None:
    found: int | None = (await shop.get(f"/products/{product}"))["stock"]
    return found


async def product(shop: Shop, name: str, stock: int | None, price: str = "2.00") -> str:
    body: dict[str, object] = {"name": name, "price": price, "stock": stock}
    return str((await shop.post("/products", body, expect=201))["product_id"])


class TestProducts:
    async def test_stock_must_be_a_whole_number_of_zero_or_more(self, shop: Shop) -> None:
        """Negative, fractional, textual or boolean stock is a 422 naming the field."""
        for bad in (-1, 1.5, "3", True, 10**12, [1]):
            body = {"name": "ink", "price": "1.00", "stock": bad}
            response = await shop.api.post("/products", json=body)
            assert response.status_code == 422, (bad, response.text)
            assert "stock" in response.text
        assert (await shop.get("/products"))["items"] == []

    async def test_a_product_shows_its_stock_or_null(self, shop: Shop) -> None:
        """GET /products/{id} and the listing show units available, or null when not tracked."""
        counted = await product(shop, "ink", 7)
        zero = await product(shop, "rare", 0)
        free = await product(shop, "air", None)
        omitted = str(
            (await shop.post("/products", {"name": "x", "price": "1"}, expect=201))["product_id"]
        )
        assert [await stock_of(shop, p) for p in (counted, zero, free, omitted)] == [
            7,
            0,
            None,
            None,
        ]
        listed = {p["product_id"]: p["stock"] for p in (await shop.get("/products"))["items"]}
        assert listed == {counted: 7, zero: 0, free: None, omitted: None}

    async def test_an_unknown_product_is_404(self, shop: Shop) -> None:
        """A product id that is not in the catalog is a 404; one that is no UUID, a 422."""
        error = await shop.get(f"/products/{UUID(int=5)}", expect=404)
        assert error["error"]["code"] == "not_found"
        await shop.get("/products/nope", expect=422)


class TestFulfilment:
    async def test_a_submitted_order_is_confirmed_and_holds_its_units(self, shop: Shop) -> None:
        """Every tracked line reserved: confirmed, with no other request; a cancel gives back."""
        customer = await shop.customer()
        ink, pen = await product(shop, "ink", 10), await product(shop, "pen", None)
        order = await shop.order(customer)
        await shop.add(order, ink, 3)
        await shop.add(order, pen, 4)
        assert await shop.post(f"/orders/{order}/submit") == {"status": "submitted"}
        view = await settled(shop, order)
        assert (view["status"], view["cancel_reason"]) == ("confirmed", None)
        assert await stock_of(shop, ink) == 7
        page = await shop.get(f"/customers/{customer}/orders", params={"status": "confirmed"})
        assert [o["id"] for o in page["items"]] == [order]
        await shop.post(f"/orders/{order}/cancel", {"reason": "changed my mind"})
        async with asyncio.timeout(30):
            while await stock_of(shop, ink) != 10:  # noqa: ASYNC110 - polling the API is the point
                await asyncio.sleep(0.02)

    async def test_an_order_that_cannot_be_met_is_cancelled_and_gives_back(
        self, shop: Shop
    ) -> None:
        """One line short: the order is cancelled naming the product; what it held comes back."""
        customer = await shop.customer()
        ink, lamp = await product(shop, "ink", 5), await product(shop, "lamp", 1)
        order = await shop.order(customer)
        await shop.add(order, ink, 2)
        await shop.add(order, lamp, 3)
        await shop.post(f"/orders/{order}/submit")
        view = await settled(shop, order)
        assert (view["status"], view["cancel_reason"]) == ("cancelled", "out of stock: lamp")
        async with asyncio.timeout(30):
            while await stock_of(shop, ink) != 5:  # noqa: ASYNC110 - polling the API is the point
                await asyncio.sleep(0.02)
        assert await stock_of(shop, lamp) == 1

    async def test_an_order_of_untracked_products_is_confirmed(self, shop: Shop) -> None:
        """Nothing to reserve: the order is confirmed all the same."""
        customer = await shop.customer()
        pen = await product(shop, "pen", None)
        order = await shop.order(customer)
        await shop.add(order, pen, 2)
        await shop.post(f"/orders/{order}/submit")
        assert (await settled(shop, order))["status"] == "confirmed"

    async def test_the_last_units_go_to_exactly_as_many_orders(
        self, shop: Shop, service: OrdersService
    ) -> None:
        """Twenty orders submitted at once for five orders' worth of units: five confirmed."""
        customer = await shop.customer()
        ink = await product(shop, "ink", 5 * ASKED)
        orders = [await shop.order(customer) for _ in range(20)]
        for order in orders:
            await shop.add(order, ink, ASKED)
        answers = await asyncio.gather(*(shop.api.post(f"/orders/{o}/submit") for o in orders))
        assert [a.status_code for a in answers] == [200] * 20
        views = [await settled(shop, order, seconds=60) for order in orders]
        outcome = Counter((v["status"], v["cancel_reason"]) for v in views)
        assert outcome == {("confirmed", None): 5, ("cancelled", "out of stock: ink"): 15}
        assert await stock_of(shop, ink) == 0
        assert await check_invariants(service.store, settled=True) == {
            "confirmed": 5,
            "cancelled": 15,
        }


class TestDrafts:
    async def test_an_untouched_draft_is_cancelled_as_abandoned(self, place: Place) -> None:
        """With --draft-ttl, a draft nobody changes is cancelled by its timer."""
        ttl = timedelta(milliseconds=300)
        async with opened(place, ttl) as shop:
            order = await shop.order(await shop.customer())
            async with asyncio.timeout(30):
                while (view := await shop.get(f"/orders/{order}"))["status"] == "draft":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert (view["status"], view["cancel_reason"]) == ("cancelled", "abandoned")

    async def test_a_change_restarts_the_clock(self, service: OrdersService, shop: Shop) -> None:
        """Adding an item moves the timer to that change plus the TTL; the old one is refused."""
        order = await shop.order(await shop.customer())
        first = await pending(service, order)
        await shop.add(order, await product(shop, "pen", None))
        async with asyncio.timeout(30):
            while (moved := await pending(service, order)).due_at == first.due_at:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        events = await service.store.read_stream(order)
        assert moved.due_at == events[-1].event.timestamp + timedelta(days=1)
        with pytest.raises(OrderStateError, match="changed since version 1"):
            await service.commands.dispatch(ExpireDraft(order_id=UUID(order), version=1))
        await service.commands.dispatch(ExpireDraft(order_id=UUID(order), version=2))
        assert isinstance((await service.store.read_stream(order))[-1].event, OrderCancelled)

    async def test_submitting_cancels_the_timer(self, service: OrdersService, shop: Shop) -> None:
        """A submitted order is no draft: its timer is gone."""
        order = await shop.order(await shop.customer())
        await shop.add(order, await product(shop, "pen", None))
        await pending(service, order)
        await shop.post(f"/orders/{order}/submit")
        async with asyncio.timeout(30):
            while draft_timer(order) in {t.name for t in await service.store.load_timers()}:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def test_a_timer_due_while_stopped_fires_on_start(self, place: Place) -> None:
        """Stopped with a draft's timer pending, which falls due: it fires as the service starts."""
        async with opened(place, timedelta(days=1)) as shop:
            order = await shop.order(await shop.customer())
            service: OrdersService = shop.api._transport.app.state.service  # type: ignore[attr-defined] # the app's own
            timer = await pending(service, order)
        # While it is stopped, its day passes: the timer is moved into the past.
        async with OrdersService.open(place.database, schema=place.schema) as service:
            await service._stop_reactor()  # only to move the timer, with nothing firing it
            moved = attrs.evolve(timer, due_at=datetime.now(UTC), sequence=None)  # by hand
            await service.store.schedule_timer(moved)
        async with opened(place, timedelta(days=1)) as shop:
            async with asyncio.timeout(30):
                while (view := await shop.get(f"/orders/{order}"))["status"] == "draft":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert (view["status"], view["cancel_reason"]) == ("cancelled", "abandoned")


async def pending(service: OrdersService, order: str) -> fabula.Timer:
    """The draft's timer, once the reaction has scheduled it."""
    async with asyncio.timeout(30):
        while True:
            for timer in await service.store.load_timers():
                if timer.name == draft_timer(order):
                    return timer
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def opened(place: Place, draft_ttl: timedelta) -> AsyncIterator[Shop]:
    """The service on `place` with `draft_ttl`, and a shop over its API (as an administrator)."""
    async with OrdersService.open(
        place.database, schema=place.schema, read_timeout=5, draft_ttl=draft_ttl
    ) as service:
        transport = httpx.ASGITransport(app=create_app(service, tokens=TOKENS))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://orders/api/v1", headers=ADMIN
        ) as api:
            yield Shop(api)


async def everything(store: fabula.Store) -> list[fabula.RecordedEvent]:
    """Every event in the store up to its head when called.

    On PostgreSQL the log is read below the oldest open transaction; this
    waits for the events such a transaction holds back rather than miss them.
    """
    head = await store.head_position()
    found: list[fabula.RecordedEvent] = []
    after = 0
    while after < head:
        page = await store.read_log(after=after, limit=1000)
        found.extend(page.events)
        if page.position == after:
            await store.wait_for_commit(after, 0.05)
        after = page.position
    return found


@attrs.define
class Ledger:
    """What the events say of stock and orders, tallied in log order."""

    created: Counter[UUID] = attrs.Factory(Counter)
    held: dict[tuple[UUID, UUID], int] = attrs.Factory(dict)
    reserved: Counter[tuple[UUID, UUID]] = attrs.Factory(Counter)
    released: Counter[tuple[UUID, UUID]] = attrs.Factory(Counter)
    lines: dict[UUID, Counter[UUID]] = attrs.Factory(dict)
    status: dict[UUID, str] = attrs.Factory(dict)

    def take(self, event: fabula.DomainEvent[Any]) -> None:
        if isinstance(event, StockAdded):
            self.created[event.product_id] += event.quantity
        elif isinstance(event, StockReserved):
            self.reserved[event.product_id, event.order_id] += 1
            self.held[event.product_id, event.order_id] = event.quantity
        elif isinstance(event, StockReleased):
            self.released[event.product_id, event.order_id] += 1
            assert self.held.pop((event.product_id, event.order_id)) == event.quantity
        elif isinstance(event, OrderItemAdded):
            self.lines.setdefault(event.aggregate_id, Counter())[event.product_id] += event.quantity
        else:
            self.take_status(event)

    def take_status(self, event: fabula.DomainEvent[Any]) -> None:
        if isinstance(event, OrderSubmitted):
            self.status[event.aggregate_id] = "submitted"
        elif isinstance(event, OrderConfirmed):
            self.status[event.aggregate_id] = "confirmed"
        elif isinstance(event, OrderCancelled) and event.aggregate_id in self.status:
            self.status[event.aggregate_id] = "cancelled"

    def held_of(self, product_id: UUID, *, confirmed: bool) -> int:
        return sum(
            quantity
            for (product, order), quantity in self.held.items()
            if product == product_id and (self.status.get(order) == "confirmed") is confirmed
        )


async def check_invariants(store: fabula.Store, *, settled: bool) -> dict[str, int]:
    """The stock rules of the issue, from the events and each product's `Stock` aggregate.

    For every tracked product, available + held by confirmed orders = units
    created; no order is confirmed with a tracked line not held in full; no
    unit is reserved or released twice; with `settled`, every submitted order
    ended confirmed or cancelled and no order that is not confirmed holds units.

    Returns:
        How many submitted orders ended in each status.
    """
    ledger = Ledger()
    for recorded in await everything(store):
        ledger.take(recorded.event)
    assert max(ledger.reserved.values(), default=0) <= 1, "a line was reserved twice"
    assert max(ledger.released.values(), default=0) <= 1, "a line was released twice"
    repo = fabula.Repository(store)
    for product_id, units in ledger.created.items():
        stock = await repo.get(Stock, stock_id(product_id))
        by_confirmed = ledger.held_of(product_id, confirmed=True)
        by_others = ledger.held_of(product_id, confirmed=False)
        assert stock.available + by_confirmed + by_others == units, product_id
        assert not settled or by_others == 0, "units held by an order that is not confirmed"
    for order_id, state in ledger.status.items():
        tracked = {p: q for p, q in ledger.lines[order_id].items() if p in ledger.created}
        if state == "confirmed":
            held = {p: ledger.held.get((p, order_id)) for p in tracked}
            assert held == tracked, f"order {order_id} is confirmed with a line not held"
    assert not settled or "submitted" not in ledger.status.values(), "an order never settled"
    return dict(Counter(ledger.status.values()))


class Crashing:
    """Customers place and submit orders against `orders serve` while it is killed now and then."""

    def __init__(self, server: Server, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.customer = ""
        self.products: list[str] = []

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.server.url}/api/v1", timeout=20, headers=ADMIN)

    async def set_up(self) -> None:
        async with self.client() as api:
            shop = Shop(api)
            self.customer = await shop.customer()
            self.products = [await product(shop, f"p{n}", 6) for n in range(3)]
            self.products.append(await product(shop, "untracked", None))

    async def one_order(self, api: httpx.AsyncClient) -> None:
        shop = Shop(api)
        order = await shop.order(self.customer)
        for item in self.rng.sample(self.products, self.rng.randint(1, 2)):
            await shop.add(order, item, self.rng.randint(1, 3))
        await shop.post(f"/orders/{order}/submit")
        if self.rng.random() < 0.3:
            view = await settled(shop, order)
            if view["status"] == "confirmed":
                await shop.post(f"/orders/{order}/cancel", {"reason": "changed my mind"})

    async def round(self, orders: int, kill_after: float) -> None:
        """Place `orders` orders at once; SIGKILL the server after `kill_after` seconds."""
        async with self.client() as api:
            work = [asyncio.create_task(self.one_order(api)) for _ in range(orders)]
            await asyncio.sleep(kill_after)
            await asyncio.to_thread(self.server.kill)
            await asyncio.gather(*work, return_exceptions=True)  # cut off mid-request, many


async def quiet(place: Place, seconds: float = 90) -> dict[str, int]:
    """Once the running server has settled every submitted order: the invariants and statuses."""
    deadline = time.monotonic() + seconds
    while True:
        async with store_of(place) as store:
            try:
                return await check_invariants(store, settled=True)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def store_of(place: Place) -> AsyncIterator[fabula.Store]:
    """The service's event store, opened beside the running service."""
    if place.backend == "sqlite":
        async with SQLiteEventStore(place.database, key_encryption_key=KEY) as sqlite_store:
            yield sqlite_store
        return
    from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - psycopg when it is used

    async with PostgresEventStore(
        place.database, schema=place.schema, key_encryption_key=KEY
    ) as postgres_store:
        yield postgres_store


def test_kill_9_at_any_moment_keeps_the_stock_right(place: Place) -> None:
    """`orders serve` killed while orders compete for the last units, restarted on the same
    database each time: no unit is lost, held twice or held by a cancelled order, and every
    submitted order ends confirmed or cancelled."""
    rng = random.Random(19)
    server = Server(place)
    crashing = Crashing(server, rng)

    async def scenario() -> dict[str, int]:
        for number in range(5):
            server.start()
            if number == 0:
                await crashing.set_up()
            await crashing.round(orders=8, kill_after=rng.uniform(0.05, 0.8))
        server.start()
        try:
            return await quiet(place)
        finally:
            server.stop()

    statuses = asyncio.run(asyncio.wait_for(scenario(), timeout=240))
    assert statuses.get("confirmed", 0) + statuses.get("cancelled", 0) > 0, statuses
