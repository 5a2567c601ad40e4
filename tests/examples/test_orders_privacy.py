"""Forgetting a customer (right to erasure) and exporting their data (right of access).

In process on both databases, then as a real process: after the forget, the
customer's name, email and street are in no file of the SQLite database and
in no table of a PostgreSQL dump.
"""

import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from orders.api import create_app
from orders.auth import Role
from orders.service import OrdersService

import fabula
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from orders import read_model
from tests.support.postgres import require_postgres

from .conftest import ADMIN, TOKENS, Place, Server, Shop, bearer

STREET = {"street": "Lovelace Lane 1815", "city": "London", "postal_code": "N1", "country": "GB"}


async def ordered(shop: Shop, name: str) -> tuple[str, str]:
    """A customer called `name` with a submitted order of three pens, to Lovelace Lane."""
    customer = await shop.customer(name)
    pen = await shop.product("pen", "1.50")
    order = await shop.post(
        "/orders", {"customer_id": customer, "shipping_address": STREET}, expect=201
    )
    await shop.add(order["order_id"], pen, 3)
    await shop.post(f"/orders/{order['order_id']}/submit")
    return customer, order["order_id"]


async def test_a_forgotten_customer_s_orders_stay_without_their_name(shop: Shop) -> None:
    """204, then 404; the order keeps status, lines and total; new orders are refused."""
    customer, order = await ordered(shop, "Adalovelace")
    before = await shop.get(f"/orders/{order}")
    assert before["customer_name"] == "Adalovelace"
    assert (await shop.api.delete(f"/customers/{customer}")).status_code == 204
    second = await shop.api.delete(f"/customers/{customer}")
    assert second.status_code == 404, second.text
    after = await shop.get(f"/orders/{order}")
    assert after["customer_name"] is None
    for field in ("total_amount", "item_count", "items"):
        assert after[field] == before[field], field
    assert after["status"] in {"submitted", "confirmed"}  # fulfilment goes on
    page = await shop.get(f"/customers/{customer}/orders")
    assert [item["id"] for item in page["items"]] == [order]
    assert page["items"][0]["customer_name"] is None
    refused = await shop.api.post(
        "/orders", json={"customer_id": customer, "shipping_address": STREET}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "unknown_customer"
    assert (await shop.api.get(f"/customers/{customer}/export")).status_code == 404
    unknown = await shop.api.delete(f"/customers/{uuid.uuid4()}")
    assert unknown.status_code == 404


async def test_the_export_holds_the_catalog_record_orders_and_events(shop: Shop) -> None:
    customer, order = await ordered(shop, "Gracehopper")
    exported = await shop.get(f"/customers/{customer}/export")
    assert exported["customer"] == {
        "id": customer,
        "name": "Gracehopper",
        "email": "gracehopper@example.org",
    }
    assert [item["id"] for item in exported["orders"]] == [order]
    (created,) = exported["events"]
    assert created["type"] == "orders.OrderCreated"
    assert created["stream_id"] == order
    assert created["fields"] == {"customer_name": "Gracehopper", "shipping_address": STREET}


async def test_only_the_customer_or_an_administrator_may_forget_or_export(shop: Shop) -> None:
    customer, _ = await ordered(shop, "Hedy")
    other = bearer(Role.CUSTOMER, str(uuid.uuid4()))
    for method, path in (
        ("DELETE", f"/customers/{customer}"),
        ("GET", f"/customers/{customer}/export"),
    ):
        assert (await shop.api.request(method, path, headers=other)).status_code == 403
        assert (
            await shop.api.request(method, path, headers={"Authorization": ""})
        ).status_code == 401
    themself = bearer(Role.CUSTOMER, customer)
    exported = await shop.api.get(f"/customers/{customer}/export", headers=themself)
    assert exported.status_code == 200, exported.text
    assert (await shop.api.delete(f"/customers/{customer}", headers=themself)).status_code == 204


def _make(server: Server) -> tuple[str, str]:
    """A customer with an order, through the served API; their id and the order's."""
    api = f"{server.url}/api/v1"
    body = {"name": "Ada Byron-King", "email": "countess@lovelace.example"}
    customer = httpx.post(f"{api}/customers", json=body, headers=ADMIN, timeout=30).json()
    pen = httpx.post(
        f"{api}/products", json={"name": "pen", "price": "1.50"}, headers=ADMIN, timeout=30
    ).json()
    opened = {"customer_id": customer["customer_id"], "shipping_address": STREET}
    order = httpx.post(f"{api}/orders", json=opened, headers=ADMIN, timeout=30).json()
    item = {"product_id": pen["product_id"], "quantity": 2}
    added = httpx.post(
        f"{api}/orders/{order['order_id']}/items", json=item, headers=ADMIN, timeout=30
    )
    assert added.status_code == 200, added.text
    return customer["customer_id"], order["order_id"]


SECRETS = (b"Ada Byron-King", b"countess@lovelace.example", b"Lovelace Lane")


def test_after_a_forget_no_sqlite_file_holds_the_customer(tmp_path: Path) -> None:
    """The database, its log and its shared memory, scanned byte by byte: running, then stopped."""
    server = Server(Place("sqlite", tmp_path))
    server.start()
    try:
        customer, order = _make(server)
        view = httpx.get(f"{server.url}/api/v1/orders/{order}", headers=ADMIN, timeout=30).json()
        assert view["customer_name"] == "Ada Byron-King"
        catalog = b"".join(path.read_bytes() for path in sorted(tmp_path.iterdir()))
        assert b"countess@lovelace.example" in catalog  # the catalog keeps it, in clear
        forgotten = httpx.delete(
            f"{server.url}/api/v1/customers/{customer}", headers=ADMIN, timeout=30
        )
        assert forgotten.status_code == 204, forgotten.text
        _assert_nowhere(tmp_path)
    finally:
        server.stop()
    _assert_nowhere(tmp_path)


def _assert_nowhere(folder: Path) -> None:
    files = sorted(folder.iterdir())
    assert any(path.name == "orders.db" for path in files)
    for path in files:
        content = path.read_bytes()
        for secret in SECRETS:
            assert secret not in content, f"{secret!r} in {path.name}"


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_after_a_forget_no_postgresql_table_holds_the_customer(tmp_path: Path) -> None:
    """A dump of the service's schema (every table, every row) after the forget."""
    place = Place("postgresql", tmp_path)
    server = Server(place)
    server.start()
    try:
        customer, _ = _make(server)
        assert any(secret in _dump(place) for secret in SECRETS)
        forgotten = httpx.delete(
            f"{server.url}/api/v1/customers/{customer}", headers=ADMIN, timeout=30
        )
        assert forgotten.status_code == 204, forgotten.text
        dump = _dump(place)
        assert b"fabula_events" in dump
        for secret in SECRETS:
            assert secret not in dump, secret
    finally:
        server.stop()
        place.drop()


def _dump(place: Place) -> bytes:
    done = subprocess.run(  # noqa: S603 - pg_dump of our own test schema
        ["pg_dump", "--schema", place.schema, "--data-only", require_postgres()],  # noqa: S607
        capture_output=True,
        check=True,
    )
    return done.stdout


async def test_a_read_model_made_before_forgetting_is_rebuilt(place: Place) -> None:
    """An order_summary with customer_name NOT NULL (as it was) is rebuilt as the service opens."""
    old = [
        definition.replace("customer_name {text},", "customer_name {text} NOT NULL,")
        for definition in read_model._TABLES
    ]
    assert old != list(read_model._TABLES)
    key = fabula.KeyEncryptionKey.from_env("ORDERS_KEK")
    if place.backend == "sqlite":
        async with SQLiteEventStore(place.database, key_encryption_key=key) as store:
            await store.read_model().create(*old)
    else:
        async with PostgresEventStore(
            place.database, schema=place.schema, key_encryption_key=key
        ) as pg:
            await pg.read_model().create(*old)
    async with OrdersService.open(place.database, schema=place.schema, read_timeout=5) as service:
        transport = httpx.ASGITransport(app=create_app(service, tokens=TOKENS))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://orders/api/v1", headers=ADMIN
        ) as api:
            shop = Shop(api)
            customer, order = await ordered(shop, "Marycartwright")
            assert (await api.delete(f"/customers/{customer}")).status_code == 204
            assert (await shop.get(f"/orders/{order}"))["customer_name"] is None
