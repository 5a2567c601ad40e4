"""Customers and products: plain tables beside the event store, not event-sourced.

The catalogs are reference data that orders look up (a product's current
name and price, a customer's name); they live in the same SQLite file as
the events and the read model, written through a connection of their own
in a worker thread so that a busy database never blocks the event loop.
"""

import asyncio
import secrets
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import attrs

import fabula

from .domain import InvalidOrderError, money

__all__ = ["Catalog", "Customer", "Product", "UnknownCustomerError", "UnknownProductError"]

_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "email TEXT NOT NULL, created_at TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS products (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "price TEXT NOT NULL, created_at TEXT NOT NULL)"
    ),
    "CREATE TABLE IF NOT EXISTS orders_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class UnknownCustomerError(fabula.DomainError):
    """A command names a customer that is not in the catalog (HTTP 422)."""


class UnknownProductError(fabula.DomainError):
    """A command names a product that is not in the catalog (HTTP 422)."""


@attrs.frozen
class Customer:
    """A customer who can place orders."""

    id: UUID
    name: str
    email: str


@attrs.frozen
class Product:
    """A product that can be ordered, at its current price."""

    id: UUID
    name: str
    price: Decimal


class Catalog:
    """The customers and products tables of one SQLite database.

    Args:
        path: The database file (the event store's).
        busy_timeout: Seconds a write waits for the database's write lock.
    """

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._writer = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # One statement at a time per connection; reads never queue behind a
        # write that waits for the database's lock.
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        try:
            for statement in _SCHEMA:
                self._writer.execute(statement)
        except sqlite3.Error as exc:
            self.close()
            raise _translate(exc, path) from exc

    def close(self) -> None:
        """Close the connections."""
        self._writer.close()
        self._reader.close()

    async def _run(
        self, sql: str, params: tuple[object, ...], *, write: bool = False
    ) -> list[tuple[object, ...]]:
        conn, lock = (self._writer, self._write_lock) if write else (self._reader, self._read_lock)
        async with lock:
            try:
                return await asyncio.to_thread(lambda: conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from exc

    async def add_customer(self, name: str, email: str) -> UUID:
        """Add a customer and return their new id."""
        customer_id = uuid4()
        await self._run(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            (str(customer_id), name, email, datetime.now(UTC).isoformat()),
            write=True,
        )
        return customer_id

    async def customer(self, customer_id: UUID) -> Customer:
        """Return the customer with `customer_id`.

        Raises:
            UnknownCustomerError: There is none.
        """
        rows = await self._run(
            "SELECT name, email FROM customers WHERE id = ?", (str(customer_id),)
        )
        if not rows:
            raise UnknownCustomerError(f"there is no customer {customer_id}")
        ((name, email),) = rows
        return Customer(customer_id, str(name), str(email))

    async def add_product(self, name: str, price: Decimal) -> UUID:
        """Add a product at `price` and return its new id.

        Raises:
            InvalidOrderError: The price is negative or not in cents.
        """
        price = money(price)
        if price < 0:
            raise InvalidOrderError(f"a price cannot be negative, not {price}")
        product_id = uuid4()
        await self._run(
            "INSERT INTO products VALUES (?, ?, ?, ?)",
            (str(product_id), name, str(price), datetime.now(UTC).isoformat()),
            write=True,
        )
        return product_id

    async def product(self, product_id: UUID) -> Product:
        """Return the product with `product_id`, at its current price.

        Raises:
            UnknownProductError: There is none.
        """
        rows = await self._run("SELECT name, price FROM products WHERE id = ?", (str(product_id),))
        if not rows:
            raise UnknownProductError(f"there is no product {product_id}")
        ((name, price),) = rows
        return Product(product_id, str(name), Decimal(str(price)))

    async def products(self) -> list[Product]:
        """Return every product, in the order they were added."""
        rows = await self._run("SELECT id, name, price FROM products ORDER BY created_at, id", ())
        return [Product(UUID(str(i)), str(n), Decimal(str(p))) for i, n, p in rows]

    async def secret(self, name: str) -> bytes:
        """Return the secret called `name`, made and kept in the database on first use."""
        fresh = secrets.token_hex(32)
        await self._run(
            "INSERT OR IGNORE INTO orders_settings VALUES (?, ?)", (name, fresh), write=True
        )
        ((value,),) = await self._run("SELECT value FROM orders_settings WHERE key = ?", (name,))
        return bytes.fromhex(str(value))


def _translate(exc: sqlite3.Error, path: str) -> fabula.FabulaError:
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc) or "unable to open" in str(exc)
    ):
        return fabula.StoreUnavailableError(f"the catalog in {path!r} is unavailable: {exc}")
    return fabula.StoreError(f"the catalog in {path!r} failed: {exc}")
