"""`orders serve` as a real process, driven over HTTP; and the rest of the `orders` command."""

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.support.postgres import drop_schemas, new_schema, require_postgres

from .conftest import ADDRESS, ADMIN, SECRET, TOKENS, Place, Server


def call(server: Server, method: str, path: str, body: object = None, expect: int = 200) -> Any:
    url = f"{server.url}/api/v1{path}"
    response = httpx.request(method, url, json=body, timeout=30, headers=ADMIN)
    assert response.status_code == expect, response.text
    return response.json()


def populate(server: Server) -> tuple[str, str, str]:
    customer = call(server, "POST", "/customers", {"name": "Ada", "email": "a@x.org"}, 201)
    pen = call(server, "POST", "/products", {"name": "pen", "price": "1.99"}, 201)["product_id"]
    body = {"customer_id": customer["customer_id"], "shipping_address": ADDRESS}
    order = call(server, "POST", "/orders", body, 201)["order_id"]
    return customer["customer_id"], pen, order


def test_every_route_answers(server: Server) -> None:
    customer, pen, order = populate(server)
    listed = call(server, "GET", "/products")["items"]
    assert {"product_id": pen, "name": "pen", "price": "1.99", "stock": None} in listed
    ink = call(server, "POST", "/products", {"name": "ink", "price": "3.00", "stock": 5}, 201)
    ink_id = ink["product_id"]
    assert call(server, "GET", f"/products/{ink_id}")["stock"] == 5
    for item in ({"product_id": pen, "quantity": 3}, {"product_id": ink_id, "quantity": 2}):
        assert call(server, "POST", f"/orders/{order}/items", item) == {"status": "item_added"}
    assert call(server, "POST", f"/orders/{order}/submit") == {"status": "submitted"}
    view = call(server, "GET", f"/orders/{order}")
    assert view["status"] in {"submitted", "confirmed"}  # the fulfilment process runs apart
    assert (view["total_amount"], view["item_count"]) == ("11.97", 2)
    deadline = time.monotonic() + 30
    while view["status"] != "confirmed" and time.monotonic() < deadline:
        time.sleep(0.05)
        view = call(server, "GET", f"/orders/{order}")
    assert (view["status"], view["cancel_reason"]) == ("confirmed", None)
    assert call(server, "GET", f"/products/{ink_id}")["stock"] == 3
    cancelled = call(server, "POST", f"/orders/{order}/cancel", {"reason": "r"})
    assert cancelled == {"status": "cancelled"}
    page = call(server, "GET", f"/customers/{customer}/orders?status=cancelled&page_size=5")
    assert [(o["id"], o["cancel_reason"]) for o in page["items"]] == [(order, "r")]
    deadline = time.monotonic() + 30
    while call(server, "GET", f"/products/{ink_id}")["stock"] != 5:  # released by the process
        assert time.monotonic() < deadline, "the cancelled order's units never came back"
        time.sleep(0.05)
    assert page["next_cursor"] is None
    error = call(server, "POST", f"/orders/{order}/submit", expect=409)
    assert error["error"]["code"] == "invalid_state"
    malformed = httpx.post(
        f"{server.url}/api/v1/products",
        content=b"{nope",
        headers={"content-type": "application/json", **ADMIN},
        timeout=30,
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_json"


def test_twenty_parallel_adds_over_http(server: Server) -> None:
    _, pen, order = populate(server)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=f"{server.url}/api/v1", timeout=60, headers=ADMIN
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"/orders/{order}/items", json={"product_id": pen, "quantity": n})
                    for n in range(1, 21)
                )
            )
        return [response.status_code for response in responses]

    assert asyncio.run(burst()) == [200] * 20
    view = call(server, "GET", f"/orders/{order}")
    assert view["items"][0]["qty"] == sum(range(1, 21))
    assert view["total_amount"] == str(sum(range(1, 21)) * Decimal("1.99"))


def test_a_restart_keeps_events_catalogs_read_model_and_cursors(place: Place) -> None:
    server = Server(place)
    server.start()
    try:
        customer, pen, order = populate(server)
        body = {"customer_id": customer, "shipping_address": ADDRESS}
        newer = call(server, "POST", "/orders", body, 201)["order_id"]
        call(server, "POST", f"/orders/{order}/items", {"product_id": pen, "quantity": 2})
        before = call(server, "GET", f"/orders/{order}")
        page = call(server, "GET", f"/customers/{customer}/orders?page_size=1")
        assert [o["id"] for o in page["items"]] == [newer]
    finally:
        server.stop()
    server.start()
    try:
        assert call(server, "GET", f"/orders/{order}") == before
        # The cursor's signing key is kept in the database: cursors outlive a restart.
        rest = call(server, "GET", f"/customers/{customer}/orders?cursor={page['next_cursor']}")
        assert [o["id"] for o in rest["items"]] == [order]
        call(server, "POST", f"/orders/{order}/items", {"product_id": pen, "quantity": 1})
        assert call(server, "GET", f"/orders/{order}")["items"][0]["qty"] == 3
    finally:
        server.stop()


def test_two_servers_share_one_postgresql_schema(tmp_path: Path) -> None:
    """Two processes on one schema: writes through either, read back through either.

    One of them runs the projection, the other stands by; when the active
    one stops, the other takes over, and commands through it still read
    their own writes.
    """
    place = Place("postgresql", tmp_path)
    first, second = Server(place), Server(place)
    try:
        first.start()
        second.start()
        _, pen, order = populate(first)

        async def burst() -> list[int]:
            clients = [
                httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=60, headers=ADMIN)
                for server in (first, second)
            ]
            try:
                responses = await asyncio.gather(
                    *(
                        clients[n % 2].post(
                            f"/orders/{order}/items", json={"product_id": pen, "quantity": n}
                        )
                        for n in range(1, 21)
                    )
                )
            finally:
                for client in clients:
                    await client.aclose()
            return [response.status_code for response in responses]

        assert asyncio.run(burst()) == [200] * 20
        views = [call(server, "GET", f"/orders/{order}") for server in (first, second)]
        assert views[0] == views[1]
        assert views[0]["items"][0]["qty"] == sum(range(1, 21))

        first.stop()
        call(second, "POST", f"/orders/{order}/items", {"product_id": pen, "quantity": 1})
        assert call(second, "GET", f"/orders/{order}")["items"][0]["qty"] == sum(range(1, 21)) + 1
    finally:
        for server in (first, second):
            if server.process is not None and server.process.returncode is None:
                server.stop()
        place.drop()


def test_reads_during_writes_are_never_torn(server: Server) -> None:
    """An order read while items are being added is one committed state: total = its lines."""
    _, pen, order = populate(server)
    lamp = call(server, "POST", "/products", {"name": "lamp", "price": "39.00"}, 201)
    products = [pen, lamp["product_id"]]

    async def run() -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = []
        done = asyncio.Event()
        async with httpx.AsyncClient(
            base_url=f"{server.url}/api/v1", timeout=60, headers=ADMIN
        ) as client:

            async def read() -> None:
                while not done.is_set():
                    views.append((await client.get(f"/orders/{order}")).json())

            async def write() -> None:
                await asyncio.gather(
                    *(
                        client.post(
                            f"/orders/{order}/items",
                            json={"product_id": products[n % 2], "quantity": 1 + n % 3},
                        )
                        for n in range(80)
                    )
                )
                done.set()

            await asyncio.gather(write(), read(), read(), read())
        return views

    views = asyncio.run(run())
    assert len(views) > 3
    for view in views:
        lines = sum(Decimal(i["unit_price"]) * i["qty"] for i in view["items"])
        assert Decimal(view["total_amount"]) == lines, view
        assert view["item_count"] == len(view["items"])


def orders_command(
    *args: str, cwd: Path | None = None, secret: str | None = SECRET
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "ORDERS_JWT_SECRET"}
    if secret is not None:
        env["ORDERS_JWT_SECRET"] = secret
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "orders.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
        env=env,
    )


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The demo writes ./orders-demo.db afresh each time; `fabula stats` reads it after."""
    first = orders_command("demo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "the same order both times: True" in first.stdout
    assert "total    43.47  (2 lines)" in first.stdout  # 3 notebooks at 12.50, 3 pens at 1.99
    assert "-> 409" in first.stdout  # the refused item on a submitted order
    assert "page 2:" in first.stdout
    assert "order_summary at position 23, running" in first.stdout
    assert "fabula --store orders-demo.db stats" in first.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["orders-demo.db"]
    again = orders_command("demo", cwd=tmp_path)  # starts afresh: the same story
    assert again.returncode == 0, again.stderr
    assert "order_summary at position 23, running" in again.stdout
    stats = subprocess.run(
        [sys.executable, "-m", "fabula", "--store", "orders-demo.db", "stats"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"orders\.OrderItemAdded\s+6\b", stats.stdout)


def read_model_rows(place: Place) -> list[tuple[object, ...]]:
    """Every row of the read model, as text, in a stable order."""
    summary = (
        "SELECT id, status, total_amount, item_count, created_at, updated_at "
        "FROM order_summary ORDER BY id"
    )
    items = "SELECT * FROM order_items ORDER BY order_id, product_id"
    if place.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(place.database)) as conn:
            rows = conn.execute(summary).fetchall() + conn.execute(items).fetchall()
    else:
        options = f"-c search_path={place.schema}"
        with psycopg.connect(place.database, options=options) as pg:
            rows = pg.execute(summary).fetchall() + pg.execute(items).fetchall()
    return [tuple(str(value) for value in row) for row in rows]


def test_rebuild_read_model_rebuilds_the_same_model(place: Place) -> None:
    if place.backend == "sqlite":
        place.database = str(Path(place.database).with_name("kept.db"))
    result = orders_command("demo", *place.args())
    assert result.returncode == 0, result.stderr
    before = read_model_rows(place)
    result = orders_command("rebuild-read-model", *place.args())
    assert result.returncode == 0, result.stderr
    assert "rebuilt the order read model up to position" in result.stdout
    assert "100.0%" in result.stderr
    assert read_model_rows(place) == before
    assert len(before) == 4 + 5


def test_the_demo_runs_in_a_schema_named_with_capitals() -> None:
    """--schema Orders_X is used as written: PostgreSQL does not fold it to orders_x."""
    schema = f"Mixed_{new_schema()}"
    try:
        result = orders_command("demo", "--database", require_postgres(), "--schema", schema)
        assert result.returncode == 0, result.stderr
        assert "the same order both times: True" in result.stdout
    finally:
        drop_schemas([schema])


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = [
        (
            ("rebuild-read-model", "--database", str(tmp_path / "missing.db")),
            "there is no database",
        ),
        (("serve", "--database", "orders.db", "--schema", "no-dashes"), "plain identifier"),
        (("demo", "--database", str(tmp_path / "no" / "such" / "dir.db")), "does not exist"),
        (("serve", "--database", "mysql://x"), "postgresql:// URL"),
        (("serve", "--schema", "information_schema"), "belongs to PostgreSQL itself"),
        (("rebuild-read-model", "--schema", "pg_catalog"), "belongs to PostgreSQL itself"),
        (("demo", "--schema", "PG_toast"), "belongs to PostgreSQL itself"),
    ]
    for args, message in cases:
        result = orders_command(*args)
        assert result.returncode == 2, result
        assert message in result.stderr
        assert result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    result = orders_command("nonsense")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Not a SQLite file, or a server refusing an option: one line, no traceback, no password."""
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("these are not the tables you are looking for\n" * 50)
    refused = require_postgres() + "?password=s3cret&sslmode=bogus"
    cases = [
        (("serve", "--port", "1", "--database", str(not_sqlite)), "not an SQLite database"),
        (("rebuild-read-model", "--database", str(not_sqlite)), "not an SQLite database"),
        (("serve", "--port", "1", "--database", refused), 'invalid sslmode value: "bogus"'),
        (("rebuild-read-model", "--database", refused), 'invalid sslmode value: "bogus"'),
    ]
    for args, message in cases:
        result = orders_command(*args)
        assert (result.returncode, result.stdout) == (1, ""), result
        assert message in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "s3cret" not in result.stderr


def test_a_malformed_url_is_one_line_without_its_password() -> None:
    for command in ("serve", "rebuild-read-model", "demo"):
        result = orders_command(command, "--database", "postgresql://app:s3cret@[::1/x")
        assert result.returncode == 2, result
        assert "not a PostgreSQL connection string" in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "s3cret" not in result.stderr


def test_the_demo_never_prints_a_password() -> None:
    from orders.demo import _without_password  # noqa: PLC0415 - a private helper

    assert (
        _without_password("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    )
    assert _without_password("postgresql://app@db/x") == "postgresql://app@db/x"
    assert _without_password("orders.db") == "orders.db"


def test_serve_needs_a_secret_of_32_characters_or_no_auth(tmp_path: Path) -> None:
    """No secret, a short one, or a secret with --no-auth: one line, exit 2, the secret unsaid."""
    database = str(tmp_path / "o.db")
    cases = [
        ((), None, "no token secret: set ORDERS_JWT_SECRET or give --jwt-secret"),
        ((), "short-secret", "at least 32 characters"),
        (("--jwt-secret", "also-short"), None, "at least 32 characters"),
        (("--no-auth",), SECRET, "contradict each other"),
    ]
    for extra, secret, message in cases:
        result = orders_command("serve", "--database", database, *extra, secret=secret)
        assert (result.returncode, result.stdout) == (2, ""), result
        assert message in result.stderr
        assert result.stderr.count("\n") == 1
        for said in ("short-secret", "also-short", SECRET):
            assert said not in result.stderr


def test_serve_and_rebuild_need_a_key_encryption_key(tmp_path: Path) -> None:
    """Without ORDERS_KEK, or with one that is not 32 bytes: one line, exit 2, how to make one."""
    database = str(tmp_path / "o.db")
    (tmp_path / "o.db").touch()  # rebuild-read-model wants a database that exists
    for value in (None, "c2hvcnQ="):
        env = {key: found for key, found in os.environ.items() if key != "ORDERS_KEK"}
        if value is not None:
            env["ORDERS_KEK"] = value
        for command in (("serve",), ("rebuild-read-model",)):
            result = subprocess.run(  # noqa: S603 - our own command
                [sys.executable, "-m", "orders.cli", *command, "--database", database],
                capture_output=True, text=True, timeout=120, check=False,
                env={**env, "ORDERS_JWT_SECRET": SECRET},
            )  # fmt: skip
            assert (result.returncode, result.stdout) == (2, ""), result
            assert "no key-encryption key: set ORDERS_KEK" in result.stderr
            assert "KeyEncryptionKey.generate()" in result.stderr
            assert result.stderr.count("\n") == 1


def test_orders_token_prints_tokens_the_server_accepts(server: Server) -> None:
    """`orders token` issues with the same secret; the served API takes its tokens."""
    admin = orders_command("token", "--admin")
    assert admin.returncode == 0, admin.stderr
    assert TOKENS.check(admin.stdout.strip()).is_admin
    customer_id = call(server, "POST", "/customers", {"name": "Bo", "email": "b@x.org"}, 201)
    mine = orders_command("token", "--customer", customer_id["customer_id"], "--ttl", "60")
    assert mine.returncode == 0, mine.stderr
    headers = {"Authorization": f"Bearer {mine.stdout.strip()}"}
    listed = httpx.get(f"{server.url}/api/v1/products", headers=headers, timeout=30)
    assert listed.status_code == 200
    refused = httpx.post(
        f"{server.url}/api/v1/products", json={"name": "x", "price": "1"}, headers=headers
    )
    assert refused.status_code == 403
    bad = orders_command("token", "--customer", "not-a-uuid")
    assert (bad.returncode, bad.stdout) == (2, "")


def test_serve_without_auth_warns_on_every_start(place: Place) -> None:
    """--no-auth serves, and says loudly that it does."""
    server = Server(place, extra=("--no-auth",), secret=None)
    server.start()
    try:
        assert httpx.get(f"{server.url}/api/v1/products", timeout=30).status_code == 200
    finally:
        output = server.stop()
    assert "authentication is OFF (--no-auth)" in output
