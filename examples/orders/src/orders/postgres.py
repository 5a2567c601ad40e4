"""The orders service's tables in PostgreSQL, beside a `PostgresEventStore`.

Imported only when the service is given a `postgresql://` URL, so that the
SQLite service needs no PostgreSQL driver.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "the orders service on PostgreSQL needs psycopg: pip install 'fabula[postgres]'"
    raise ImportError(msg) from exc

import fabula
from fabula.postgres import Tx

from .database import Cursor, Database, Dialect, Row

__all__ = ["POSTGRES", "PostgresDatabase"]


class _PostgresDialect(Dialect[Tx]):
    def _spell(self, statement: str) -> str:
        if "%" in statement:  # psycopg would read it as a placeholder
            msg = f"the shared SQL must not contain '%': {statement!r}"
            raise ValueError(msg)
        return statement.replace("?", "%s")

    def value(self, value: object) -> object:
        return value  # psycopg adapts UUID, Decimal and aware datetimes itself

    def execute(self, tx: Tx, statement: str, params: Sequence[object] = ()) -> Cursor:
        return tx.execute(self.statement(statement), params)


POSTGRES: Dialect[Tx] = _PostgresDialect(
    "PostgreSQL", {"uuid": "uuid", "money": "numeric", "moment": "timestamptz"}
)
"""The PostgreSQL dialect: uuid, numeric and timestamptz columns, `%s` placeholders."""


class PostgresDatabase(Database):
    """The tables of one PostgreSQL schema (the event store's), over a connection pool.

    Every connection's `search_path` is the schema, so the shared SQL's
    unqualified table names are the schema's tables, as they are for the
    projection handlers. Open it with `await database.open()`.

    Args:
        url: The server's connection string.
        schema: The schema (it must exist: the event store creates it).
        max_size: The most connections the pool opens.
        connect_timeout: Seconds to wait for a connection.
    """

    dialect = POSTGRES

    def __init__(
        self, url: str, *, schema: str, max_size: int = 8, connect_timeout: float = 10.0
    ) -> None:
        self.schema = schema
        self._timeout = connect_timeout
        self._pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={
                "autocommit": True,
                "options": f'-c search_path="{schema}"',  # quoted: Orders is not orders
                "application_name": f"orders:{schema}"[:63],
            },
            timeout=connect_timeout,
            open=False,
            name="orders",
        )

    def __repr__(self) -> str:
        return f"<PostgresDatabase schema={self.schema!r}>"

    async def open(self) -> None:
        """Open the pool.

        Raises:
            StoreUnavailableError: The server cannot be reached in time.
        """
        try:
            await self._pool.open(wait=True, timeout=self._timeout)
        except (psycopg_pool.PoolTimeout, psycopg.Error) as exc:
            await self._pool.close()
            msg = f"cannot connect to PostgreSQL: {exc}"
            raise fabula.StoreUnavailableError(msg) from exc

    async def create(self, statements: Sequence[str]) -> None:
        """Create tables (see `Database.create`); an advisory lock serialises processes."""
        lock = f"orders-schema:{self.schema}"

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            async with conn.transaction():
                # CREATE ... IF NOT EXISTS alone can fail when two sessions race.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                for statement in statements:
                    await conn.execute(self.dialect.ddl(statement))
            return []

        await self._run(run)

    async def fetch(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one read statement (see `Database.fetch`)."""
        spelled = self.dialect.statement(statement)

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            return await (await conn.execute(spelled, params)).fetchall()

        return await self._run(run)

    async def write(self, statement: str, params: Sequence[object] = ()) -> None:
        """Run one write statement (see `Database.write`)."""
        spelled = self.dialect.statement(statement)

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
            await conn.execute(spelled, params)
            return []

        await self._run(run)

    async def _run(
        self, job: Callable[[psycopg.AsyncConnection[Any]], Awaitable[list[Row]]]
    ) -> list[Row]:
        try:
            async with self._pool.connection() as conn:
                return await job(conn)
        except psycopg_pool.PoolTimeout as exc:
            msg = f"no PostgreSQL connection within {self._timeout} s: {exc}"
            raise fabula.StoreUnavailableError(msg) from exc
        except psycopg.OperationalError as exc:
            raise fabula.StoreUnavailableError(f"PostgreSQL is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise fabula.StoreError(f"PostgreSQL error: {exc}") from exc

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()
