"""Customers and products: plain tables beside the event store, not event-sourced.

The catalogs are reference data that orders look up (a product's current
name and price, a customer's name); they live in the event store's own
database (the SQLite file or the PostgreSQL schema), written through a
`Database` that keeps the event loop free while the database is busy.
"""

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import attrs

import fabula

from .database import Database, as_moment, as_money, as_uuid
from .domain import InvalidOrderError, money

__all__ = ["Catalog", "Customer", "Product", "UnknownCustomerError", "UnknownProductError"]

SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS customers (id {uuid} PRIMARY KEY, name TEXT NOT NULL, "
        "email TEXT NOT NULL, created_at {moment} NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS products (id {uuid} PRIMARY KEY, name TEXT NOT NULL, "
        "price {money} NOT NULL, created_at {moment} NOT NULL)"
    ),
    "CREATE TABLE IF NOT EXISTS orders_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
"""The catalogs' tables (`Database.create` fills in the column types)."""


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


MAX_PAGE_SIZE = 100
"""The largest page of products."""


class Catalog:
    """The customers and products tables.

    Args:
        database: The database beside the event store; `open` creates the tables.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    def __repr__(self) -> str:
        return f"<Catalog in {self._db!r}>"

    async def open(self) -> None:
        """Create the tables if they are missing."""
        await self._db.create(SCHEMA)

    async def add_customer(self, name: str, email: str) -> UUID:
        """Add a customer and return their new id."""
        customer_id = uuid4()
        await self._db.write(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            (customer_id, name, email, datetime.now(UTC)),
        )
        return customer_id

    async def customer(self, customer_id: UUID) -> Customer:
        """Return the customer with `customer_id`.

        Raises:
            UnknownCustomerError: There is none.
        """
        rows = await self._db.fetch(
            "SELECT name, email FROM customers WHERE id = ?", (customer_id,)
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
        price = _price(price)
        product_id = uuid4()
        await self._db.write(
            "INSERT INTO products VALUES (?, ?, ?, ?)",
            (product_id, name, price, datetime.now(UTC)),
        )
        return product_id

    async def reprice(self, product_id: UUID, price: Decimal) -> None:
        """Change a product's price; lines already in orders keep the price they were opened at.

        Raises:
            InvalidOrderError: The price is negative or not in cents.
            UnknownProductError: There is no such product.
        """
        price = _price(price)
        await self.product(product_id)
        await self._db.write("UPDATE products SET price = ? WHERE id = ?", (price, product_id))

    async def product(self, product_id: UUID) -> Product:
        """Return the product with `product_id`, at its current price.

        Raises:
            UnknownProductError: There is none.
        """
        rows = await self._db.fetch("SELECT name, price FROM products WHERE id = ?", (product_id,))
        if not rows:
            raise UnknownProductError(f"there is no product {product_id}")
        ((name, price),) = rows
        return Product(product_id, str(name), as_money(price))

    async def products(
        self, *, page_size: int, cursor: str | None, codec: fabula.CursorCodec
    ) -> fabula.Page[Product]:
        """Return a page of products, in the order they were added.

        Raises:
            InvalidPageSizeError: `page_size` is not between 1 and 100.
            InvalidCursorError: `cursor` is malformed, altered, or of another listing.
        """
        size = fabula.check_page_size(page_size, maximum=MAX_PAGE_SIZE)
        where, params = "", []
        if cursor is not None:
            created, after_id = codec.decode(cursor, (datetime, UUID), scope="products")
            where, params = "WHERE (created_at, id) > (?, ?)", [created, after_id]
        rows = await self._db.fetch(
            f"SELECT id, name, price, created_at FROM products {where} "  # noqa: S608 - our own SQL
            "ORDER BY created_at, id LIMIT ?",
            (*params, size + 1),
        )
        added = {as_uuid(i): as_moment(c) for i, _, _, c in rows}
        return fabula.Page.from_rows(
            [Product(as_uuid(i), str(n), as_money(p)) for i, n, p, _ in rows],
            size,
            key=lambda product: (added[product.id], product.id),
            codec=codec,
            scope="products",
        )

    async def secret(self, name: str) -> bytes:
        """Return the secret called `name`, made and kept in the database on first use."""
        await self._db.write(
            "INSERT INTO orders_settings VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (name, secrets.token_hex(32)),
        )
        ((value,),) = await self._db.fetch(
            "SELECT value FROM orders_settings WHERE key = ?", (name,)
        )
        return bytes.fromhex(str(value))


def _price(price: Decimal) -> Decimal:
    price = money(price)
    if price < 0:
        raise InvalidOrderError(f"a price cannot be negative, not {price}")
    return price
