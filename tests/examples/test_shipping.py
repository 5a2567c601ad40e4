"""The order service publishing, the shipping service consuming, through real brokers.

In-process on NATS JetStream and on RabbitMQ (both services, each on its
own store), and as two `serve` processes over HTTP. The fixed names the
order service publishes under (stream ORDERS, exchange orders) are
emptied before and after each test, so no run sees another's orders.
"""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import nats
import pytest
from orders.api import create_app as orders_app
from orders.auth import Role
from orders.service import OrdersService
from shipping.api import create_app as shipping_app
from shipping.service import ShippingService

from tests.support.brokers import AMQP_URL, NATS_URL, require

from .conftest import ADMIN, SECRET, TOKENS, Place, Server, Shop, bearer, free_port


async def clear_brokers() -> None:
    """Delete the order service's stream and exchange, where the brokers are there."""
    with contextlib.suppress(OSError, nats.errors.Error):
        client = await nats.connect(NATS_URL, max_reconnect_attempts=0, connect_timeout=2)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream("ORDERS")
        finally:
            await client.close()
    with contextlib.suppress(OSError, aio_pika.exceptions.AMQPError):
        connection = await aio_pika.connect(AMQP_URL, timeout=2)
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete("orders")


@pytest.fixture(autouse=True)
async def clean_brokers() -> AsyncIterator[None]:
    await clear_brokers()
    yield
    await clear_brokers()


@contextlib.asynccontextmanager
async def both(
    tmp_path: Path, broker: str
) -> AsyncIterator[tuple[Shop, httpx.AsyncClient, OrdersService, ShippingService]]:
    name = f"shipping-{uuid.uuid4().hex[:8]}"
    async with (
        ShippingService.open(str(tmp_path / "shipping.db"), consume=[broker], name=name) as ship,
        OrdersService.open(str(tmp_path / "orders.db"), publish=[broker]) as orders,
    ):
        order_api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=orders_app(orders, tokens=TOKENS)),
            base_url="http://orders/api/v1",
            headers=ADMIN,
        )
        shipping_api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=shipping_app(ship, tokens=TOKENS)),
            base_url="http://shipping/api/v1",
            headers=ADMIN,
        )
        async with order_api, shipping_api:
            yield Shop(order_api), shipping_api, orders, ship


async def shipment(api: httpx.AsyncClient, order_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            response = await api.get(f"/shipments/{order_id}")
            if response.status_code == 200 and response.json()["status"] == status:
                return dict(response.json())
            assert response.status_code in (200, 404), response.text
            await asyncio.sleep(0.05)


async def confirmed_then_cancelled(shop: Shop, api: httpx.AsyncClient) -> str:
    """An order confirmed opens its shipment; cancelled, cancels it."""
    customer = await shop.customer()
    pen = await shop.product()
    order = await shop.order(customer)
    await shop.add(order, pen, 2)
    await shop.post(f"/orders/{order}/submit")
    opened = await shipment(api, order, "open")
    assert opened == {"order_id": order, "status": "open", "reason": None}
    await shop.post(f"/orders/{order}/cancel", {"reason": "too late"})
    cancelled = await shipment(api, order, "cancelled")
    assert cancelled["reason"] == "too late"
    return order


class TestInProcess:
    async def test_over_jetstream(self, tmp_path: Path) -> None:
        """A confirmed order becomes a shipment; the relay's lag is shown to administrators."""
        require(NATS_URL)
        async with both(tmp_path, NATS_URL) as (shop, api, orders, shipping):
            await confirmed_then_cancelled(shop, api)
            head = await orders.store.head_position()
            await orders.reactor.wait_for(head, 30, name="orders-nats")
            (relay,) = await shop.get("/relays")
            assert relay["name"] == "orders-nats"
            assert relay["broker"] == f"{NATS_URL} stream ORDERS"
            assert (relay["state"], relay["lag"], relay["parked_events"]) == ("running", 0, 0)
            customer = bearer(Role.CUSTOMER, str(uuid.uuid4()))
            assert (await shop.api.get("/relays", headers=customer)).status_code == 403
            # Shipping's own API: tokens of the order service, administrators only.
            assert (await api.get(f"/shipments/{uuid.uuid4()}")).status_code == 404
            assert (
                await api.get(f"/shipments/{uuid.uuid4()}", headers=customer)
            ).status_code == 403
            unsigned = await api.get(f"/shipments/{uuid.uuid4()}", headers={"Authorization": ""})
            assert unsigned.status_code == 401
            assert (await api.get("/shipments/not-a-uuid")).status_code == 422
            # One shipment event per change, although the inbox kept each message once.
            events = await shipping.store.read_all()
            kinds = [type(r.event).__name__ for r in events]
            assert kinds.count("ShipmentOpened") == 1
            assert kinds.count("ShipmentCancelled") == 1

    async def test_over_rabbitmq(self, tmp_path: Path) -> None:
        """The same, through RabbitMQ."""
        require(AMQP_URL)
        async with both(tmp_path, AMQP_URL) as (shop, api, _, _):
            await confirmed_then_cancelled(shop, api)
            (relay,) = await shop.get("/relays")
            assert relay["name"] == "orders-rabbitmq"

    async def test_publish_urls_are_checked(self, tmp_path: Path) -> None:
        """Another scheme, or one URL twice, is refused before anything opens."""
        with pytest.raises(ValueError, match="nats:// or amqp://"):
            async with OrdersService.open(str(tmp_path / "o.db"), publish=["ftp://x"]):
                pass
        with pytest.raises(ValueError, match="twice"):
            async with OrdersService.open(str(tmp_path / "o.db"), publish=[NATS_URL, NATS_URL]):
                pass


class ShippingServer:
    """`shipping serve` as a real process."""

    def __init__(self, folder: Path, broker: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "shipping.cli", "serve", "--port", str(self.port),
            "--database", str(folder / "shipping.db"), "--consume", broker,
            "--name", f"shipping-{uuid.uuid4().hex[:8]}", "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "ORDERS_JWT_SECRET": SECRET}
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail("shipping serve did not answer within 30 s")

    def stop(self) -> str:
        self.process.terminate()
        output, _ = self.process.communicate(timeout=30)
        assert "Traceback" not in output, output
        return output


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Server, ShippingServer]]:
    require(NATS_URL)
    asyncio.run(clear_brokers())
    (tmp_path / "shipping").mkdir()
    shipping = ShippingServer(tmp_path / "shipping", NATS_URL)
    orders = Server(Place("sqlite", tmp_path), extra=("--publish", NATS_URL))
    try:
        orders.start()
        yield orders, shipping
    finally:
        if orders.process is not None:
            orders.stop()
        shipping.stop()


def test_two_served_processes(servers: tuple[Server, ShippingServer]) -> None:
    """`orders serve --publish` and `shipping serve --consume`, over HTTP and JetStream."""
    orders, shipping = servers

    def call(url: str, method: str, path: str, body: object = None) -> Any:
        response = httpx.request(
            method, f"{url}/api/v1{path}", json=body, headers=ADMIN, timeout=30
        )
        assert response.is_success, response.text
        return response.json()

    customer = call(orders.url, "POST", "/customers", {"name": "Ada", "email": "a@x.org"})
    pen = call(orders.url, "POST", "/products", {"name": "pen", "price": "1.99"})["product_id"]
    address = {"street": "Main 1", "city": "Utrecht", "postal_code": "3511 AA", "country": "NL"}
    body = {"customer_id": customer["customer_id"], "shipping_address": address}
    order = call(orders.url, "POST", "/orders", body)["order_id"]
    call(orders.url, "POST", f"/orders/{order}/items", {"product_id": pen, "quantity": 1})
    call(orders.url, "POST", f"/orders/{order}/submit")
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{shipping.url}/api/v1/shipments/{order}", headers=ADMIN, timeout=30)
        if answer.status_code == 200:
            assert answer.json()["status"] == "open"
            break
        assert answer.status_code == 404, answer.text
        assert time.monotonic() < deadline, "the shipment never opened"
        time.sleep(0.1)


def test_a_bad_publish_url_is_a_usage_error(tmp_path: Path) -> None:
    """`orders serve --publish ftp://...` exits 2 naming the schemes it takes."""
    command = [sys.executable, "-m", "orders.cli", "serve", "--database", str(tmp_path / "o.db")]
    done = subprocess.run(  # noqa: S603 - our own command
        [*command, "--no-auth", "--publish", "ftp://example.org"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--publish takes a nats:// or amqp:// URL" in done.stderr


def test_the_shipping_demo(tmp_path: Path) -> None:
    """`shipping demo` shows a shipment opened and cancelled through JetStream."""
    require(NATS_URL)
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "shipping.cli", "demo", "--broker", NATS_URL],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert '"status":"open"' in done.stdout
    assert '"status":"cancelled","reason":"changed my mind"' in done.stdout


def test_shipping_refuses_a_bad_broker_url_and_a_missing_secret(tmp_path: Path) -> None:
    """`shipping serve` exits 2 on another scheme, and without a token secret or --no-auth."""
    command = [sys.executable, "-m", "shipping.cli", "serve", "--database", str(tmp_path / "s.db")]
    env = {key: value for key, value in os.environ.items() if key != "ORDERS_JWT_SECRET"}
    bad = subprocess.run(  # noqa: S603 - our own command
        [*command, "--no-auth", "--consume", "http://x"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--consume takes a nats:// or amqp:// URL" in bad.stderr
    unsigned = subprocess.run(  # noqa: S603 - our own command
        [*command, "--consume", NATS_URL],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert unsigned.returncode != 0
    assert "ORDERS_JWT_SECRET" in unsigned.stderr
