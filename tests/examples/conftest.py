"""Fixtures for the orders application: a service in-process, or `orders serve` as a process.

Both run on each database the service supports: a SQLite file, and a fresh
schema on the PostgreSQL server of `tests/support/postgres.py`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from orders.api import create_app
from orders.auth import Role, Tokens
from orders.service import OrdersService

from tests.support import personal  # noqa: F401 - sets ORDERS_KEK for the services started here
from tests.support.postgres import drop_schemas, new_schema, require_postgres

ADDRESS = {"street": "Main 1", "city": "Utrecht", "postal_code": "3511 AA", "country": "NL"}

BACKENDS = ["sqlite", "postgresql"]

SECRET = "tests-only-secret-" + "x" * 32
TOKENS = Tokens(SECRET)


def bearer(role: Role = Role.ADMIN, subject: str = "tests") -> dict[str, str]:
    """The Authorization header of a token for `subject` in `role`."""
    return {"Authorization": f"Bearer {TOKENS.issue(role, subject, timedelta(hours=1))}"}


ADMIN = bearer()


class Place:
    """Where a service keeps its data: a SQLite file, or a PostgreSQL URL and schema."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.database, self.schema = str(folder / "orders.db"), "public"
        else:
            self.database, self.schema = require_postgres(), new_schema()

    def __repr__(self) -> str:
        return f"<Place {self.backend} {self.database} {self.schema}>"

    def args(self) -> list[str]:
        """The `--database` and `--schema` arguments of the `orders` command."""
        return ["--database", self.database, "--schema", self.schema]

    def drop(self) -> None:
        """Drop the PostgreSQL schema (a SQLite file goes with its folder)."""
        if self.backend != "sqlite":
            drop_schemas([self.schema])


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    made = Place(request.param, tmp_path)
    yield made
    made.drop()


@pytest.fixture
async def service(place: Place) -> AsyncIterator[OrdersService]:
    async with OrdersService.open(place.database, schema=place.schema, read_timeout=5) as opened:
        yield opened


@pytest.fixture
async def client(service: OrdersService) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process, authentication on, called as an administrator."""
    transport = httpx.ASGITransport(app=create_app(service, tokens=TOKENS))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://orders/api/v1", headers=ADMIN
    ) as api:
        yield api


class Shop:
    """Builds customers, products and orders through the API, checking each answer."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api

    async def post(self, path: str, body: object = None, *, expect: int = 200, **kw: Any) -> Any:
        response = await self.api.post(path, json=body, **kw)
        assert response.status_code == expect, response.text
        return response.json()

    async def customer(self, name: str = "Ada") -> str:
        body = {"name": name, "email": f"{name.lower()}@example.org"}
        return str((await self.post("/customers", body, expect=201))["customer_id"])

    async def product(self, name: str = "pen", price: str = "1.99") -> str:
        body = {"name": name, "price": price}
        return str((await self.post("/products", body, expect=201))["product_id"])

    async def order(self, customer_id: str) -> str:
        body = {"customer_id": customer_id, "shipping_address": ADDRESS}
        return str((await self.post("/orders", body, expect=201))["order_id"])

    async def add(self, order_id: str, product_id: str, quantity: int = 1) -> None:
        body = {"product_id": product_id, "quantity": quantity}
        await self.post(f"/orders/{order_id}/items", body)

    async def get(self, path: str, *, expect: int = 200, **kw: Any) -> Any:
        response = await self.api.get(path, **kw)
        assert response.status_code == expect, response.text
        return response.json()


@pytest.fixture
def shop(client: httpx.AsyncClient) -> Shop:
    return Shop(client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`orders serve` running as a real process."""

    def __init__(
        self, place: Place, *, extra: tuple[str, ...] = (), secret: str | None = SECRET
    ) -> None:
        self.place = place
        self.extra = extra
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "orders.cli", "serve",
            "--port", str(self.port), *self.place.args(), "--log-level", "warning",
            *self.extra,
        ]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if key != "ORDERS_JWT_SECRET"}
        if self.secret is not None:
            env["ORDERS_JWT_SECRET"] = self.secret
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                pytest.fail(f"orders serve exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail("orders serve did not answer within 30 s")

    def kill(self) -> str:
        """SIGKILL the process, as a crash would, and return what it printed."""
        assert self.process is not None
        self.process.kill()
        output, _ = self.process.communicate(timeout=30)
        return output

    def stop(self) -> str:
        assert self.process is not None
        self.process.terminate()
        output, _ = self.process.communicate(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert self.process.returncode in (0, -signal.SIGTERM), output
        assert "Traceback" not in output, output
        return output


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    place = Place(request.param, tmp_path_factory.mktemp("served"))
    running = Server(place)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        place.drop()
