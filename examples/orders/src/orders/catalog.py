"""Customers and products: plain tables beside the event store, not event-sourced.

The catalogs are reference data that orders look up (a product's current
name and price, a customer's name); they live in the event store's own
database (the SQLite file or the PostgreSQL schema), written and read
through the store's `fabula.ReadModel`, off the event loop, with the same
SQL on either database.
"""

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import attrs

import fabula

from .domain import InvalidOrderError, money

__all__ = ["Catalog", "Customer", "Product", "UnknownCustomerError", "UnknownProductError"]

SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS customers (id {uuid} PRIMARY KEY, name {text} NOT NULL, "
        "email {text} NOT NULL, created_at {datetime} NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS products (id {uuid} PRIMARY KEY, name {text} NOT NULL, "
        "price {decimal} NOT NULL, created_at {datetime} NOT NULL)"
    ),
    "CREATE TABLE IF NOT EXISTS orders_settings (key {text} PRIMARY KEY, value {text} NOT NULL)",
    # Who was forgotten, by id alone: their orders can still be listed.
    (
        "CREATE TABLE IF NOT EXISTS forgotten_customers "
        "(id {uuid} PRIMARY KEY, forgotten_at {datetime} NOT NULL)"
    ),
)
"""The catalogs' tables (`fabula.ReadModel.create` fills in the column types)."""


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
    """A product that can be ordered, at its current price, with its stock if it is tracked."""

    id: UUID
    name: str
    price: Decimal
    stock: int | None = None
    """Units available (not reserved by orders); None when the product's stock is not tracked."""


MAX_PAGE_SIZE = 100
"""The largest page of products."""


@attrs.frozen
class _Listed:
    id: UUID
    name: str
    price: Decimal
    stock: int | None
    created_at: datetime


# Stock levels come from the `product_stock` read model (see orders.read_model).
_PRODUCT_COLUMNS = "p.id, p.name, p.price, s.available AS stock"
_WITH_STOCK = "products p LEFT JOIN product_stock s ON s.product_id = p.id"


@attrs.frozen
class _Id:
    id: UUID


@attrs.frozen
class _Setting:
    value: str


class Catalog:
    """The customers and products tables.

    Args:
        tables: The store's SQL read model; `open` creates the tables.
    """

    def __init__(self, tables: fabula.ReadModel) -> None:
        self._tables = tables

    def __repr__(self) -> str:
        return f"<Catalog in {self._tables!r}>"

    async def open(self) -> None:
        """Create the tables if they are missing."""
        await self._tables.create(*SCHEMA)

    async def add_customer(self, name: str, email: str) -> UUID:
        """Add a customer and return their new id."""
        customer_id = uuid4()
        await self._tables.execute(
            "INSERT INTO customers VALUES (:id, :name, :email, :at)",
            {"id": customer_id, "name": name, "email": email, "at": datetime.now(UTC)},
        )
        return customer_id

    async def customer(self, customer_id: UUID) -> Customer:
        """Return the customer with `customer_id`.

        Raises:
            UnknownCustomerError: There is none.
        """
        found = await self._tables.fetch_one(
            "SELECT id, name, email FROM customers WHERE id = :id",
            {"id": customer_id},
            row=Customer,
        )
        if found is None:
            raise UnknownCustomerError(f"there is no customer {customer_id}")
        return found

    async def forget_customer(self, customer_id: UUID) -> None:
        """Remove a customer's name and email, keeping only that their id was forgotten."""

        def forget(sql: fabula.Sql) -> None:
            sql.execute("DELETE FROM customers WHERE id = :id", {"id": customer_id})
            sql.execute(
                "INSERT INTO forgotten_customers VALUES (:id, :at) ON CONFLICT (id) DO NOTHING",
                {"id": customer_id, "at": datetime.now(UTC)},
            )

        await self._tables.transaction(forget, write=True)

    async def known_customer(self, customer_id: UUID) -> bool:
        """Whether `customer_id` is a customer's, present or forgotten."""
        found = await self._tables.fetch_one(
            "SELECT id FROM customers WHERE id = :id "
            "UNION ALL SELECT id FROM forgotten_customers WHERE id = :id",
            {"id": customer_id},
            row=_Id,
        )
        return found is not None

    async def add_product(self, name: str, price: Decimal, product_id: UUID | None = None) -> UUID:
        """Add a product at `price` and return its id (a new one unless given).

        Raises:
            InvalidOrderError: The price is negative or not in cents.
        """
        price = _price(price)
        product_id = uuid4() if product_id is None else product_id
        await self._tables.execute(
            "INSERT INTO products VALUES (:id, :name, :price, :at)",
            {"id": product_id, "name": name, "price": price, "at": datetime.now(UTC)},
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
        await self._tables.execute(
            "UPDATE products SET price = :price WHERE id = :id", {"price": price, "id": product_id}
        )

    async def product(self, product_id: UUID) -> Product:
        """Return the product with `product_id`, at its current price.

        Raises:
            UnknownProductError: There is none.
        """
        found = await self._tables.fetch_one(
            f"SELECT {_PRODUCT_COLUMNS} FROM {_WITH_STOCK} WHERE p.id = :id",  # noqa: S608 - our own SQL
            {"id": product_id},
            row=Product,
        )
        if found is None:
            raise UnknownProductError(f"there is no product {product_id}")
        return found

    async def products(
        self, *, page_size: int, cursor: str | None, codec: fabula.CursorCodec
    ) -> fabula.Page[Product]:
        """Return a page of products, in the order they were added.

        Raises:
            InvalidPageSizeError: `page_size` is not between 1 and 100.
            InvalidCursorError: `cursor` is malformed, altered, or of another listing.
        """
        size = fabula.check_page_size(page_size, maximum=MAX_PAGE_SIZE)
        where, params = "", dict[str, object](limit=size + 1)
        if cursor is not None:
            created, after_id = codec.decode(cursor, (datetime, UUID), scope="products")
            where = "WHERE (p.created_at, p.id) > (:created, :after)"
            params |= {"created": created, "after": after_id}
        rows = await self._tables.fetch_all(
            f"SELECT {_PRODUCT_COLUMNS}, p.created_at FROM {_WITH_STOCK} {where} "  # noqa: S608 - our own SQL
            "ORDER BY p.created_at, p.id LIMIT :limit",
            params,
            row=_Listed,
        )
        added = {row.id: row.created_at for row in rows}
        return fabula.Page.from_rows(
            [Product(row.id, row.name, row.price, row.stock) for row in rows],
            size,
            key=lambda product: (added[product.id], product.id),
            codec=codec,
            scope="products",
        )

    async def secret(self, name: str) -> bytes:
        """Return the secret called `name`, made and kept in the database on first use."""
        await self._tables.execute(
            "INSERT INTO orders_settings VALUES (:key, :value) ON CONFLICT (key) DO NOTHING",
            {"key": name, "value": secrets.token_hex(32)},
        )
        found = await self._tables.fetch_one(
            "SELECT value FROM orders_settings WHERE key = :key", {"key": name}, row=_Setting
        )
        assert found is not None
        return bytes.fromhex(found.value)


def _price(price: Decimal) -> Decimal:
    price = money(price)
    if price < 0:
        raise InvalidOrderError(f"a price cannot be negative, not {price}")
    return price
