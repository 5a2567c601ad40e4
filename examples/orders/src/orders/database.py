"""The tables beside the event store: one SQL interface over SQLite and PostgreSQL.

The catalogs and the read model are plain tables in the event store's own
database: the SQLite file, or the PostgreSQL schema. Their SQL is written
once, with `?` placeholders and Python values (UUID, Decimal, aware
datetime); a `Dialect` turns it into what each driver takes:

- SQLite keeps ids, money and moments as text (fixed-width UTC timestamps,
  so that the text sorts as the moments do) and takes `?` as it is;
- PostgreSQL has real `uuid`, `numeric` and `timestamptz` columns, and
  psycopg wants `%s`.

Read values come back as either; `as_uuid`, `as_money` and `as_moment`
accept both. `Database` runs statements for the async code (catalog
writes, queries); projection handlers run theirs through
`Dialect.execute` on the store's own transaction.
"""

import abc
import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import fabula

__all__ = [
    "SQLITE",
    "Cursor",
    "Database",
    "Dialect",
    "SQLiteDatabase",
    "as_moment",
    "as_money",
    "as_uuid",
]

TxT = TypeVar("TxT")
Row = tuple[Any, ...]


class Cursor(Protocol):
    """What `Dialect.execute` returns: a driver's cursor."""

    @property
    def rowcount(self) -> int:
        """How many rows the statement changed."""
        ...

    def fetchone(self) -> Any:  # noqa: ANN401 - a driver's row
        """The next row, or None."""
        ...


def as_uuid(value: object) -> UUID:
    """A stored id as a UUID (PostgreSQL returns one, SQLite its text)."""
    return value if isinstance(value, UUID) else UUID(str(value))


def as_money(value: object) -> Decimal:
    """A stored amount as a Decimal (PostgreSQL returns one, SQLite its text)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def as_moment(value: object) -> datetime:
    """A stored moment as an aware UTC datetime (PostgreSQL returns one, SQLite its text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


# --8<-- [start:dialect]
class Dialect(abc.ABC, Generic[TxT]):
    """How one database spells the shared SQL: column types, placeholders and values.

    Args:
        name: The database's name, for messages.
        types: The column type for each of `{uuid}`, `{money}` and `{moment}`
            in table definitions.
    """

    def __init__(self, name: str, types: Mapping[str, str]) -> None:
        self.name = name
        self._types = dict(types)
        self._statements: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"

    def ddl(self, statement: str) -> str:
        """A table definition with this database's column types filled in."""
        return statement.format_map(self._types)

    def statement(self, statement: str) -> str:
        """`statement` with this database's placeholders (cached: it is on the hot path)."""
        spelled = self._statements.get(statement)
        if spelled is None:
            spelled = self._statements[statement] = self._spell(statement)
        return spelled

    def _spell(self, statement: str) -> str:
        return statement

    @abc.abstractmethod
    def value(self, value: object) -> object:
        """A Python value as this database's driver should get it."""

    def params(self, params: Sequence[object]) -> tuple[object, ...]:
        """Every value of `params`, converted by `value`."""
        return tuple(self.value(param) for param in params)

    @abc.abstractmethod
    def execute(self, tx: TxT, statement: str, params: Sequence[object] = ()) -> Cursor:
        """Run `statement` on a projection's transaction `tx`."""


# --8<-- [end:dialect]
class _SQLiteDialect(Dialect[sqlite3.Connection]):
    def value(self, value: object) -> object:
        if isinstance(value, datetime):
            # Fixed width, always UTC: the text sorts as the moments do.
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        if isinstance(value, UUID | Decimal):
            return str(value)
        return value

    def execute(
        self, tx: sqlite3.Connection, statement: str, params: Sequence[object] = ()
    ) -> Cursor:
        return tx.execute(statement, self.params(params))


SQLITE: Dialect[sqlite3.Connection] = _SQLiteDialect(
    "SQLite", {"uuid": "TEXT", "money": "TEXT", "moment": "TEXT"}
)
"""The SQLite dialect: text columns, `?` placeholders."""


class Database(abc.ABC):
    """Runs the catalogs' and the read model's statements, off the event loop.

    Attributes:
        dialect: How this database spells the shared SQL.
    """

    dialect: Dialect[Any]

    @abc.abstractmethod
    async def create(self, statements: Sequence[str]) -> None:
        """Create tables (`Dialect.ddl` is applied), safely when several processes start at once.

        Raises:
            StoreUnavailableError: The database cannot be reached or is locked.
        """

    @abc.abstractmethod
    async def fetch(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one read statement and return its rows.

        Raises:
            StoreUnavailableError: The database cannot be reached.
            StoreError: The statement failed.
        """

    @abc.abstractmethod
    async def write(self, statement: str, params: Sequence[object] = ()) -> None:
        """Run one write statement, committed when this returns.

        Raises:
            StoreUnavailableError: The database cannot be reached or is locked.
            StoreError: The statement failed.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connections."""


class SQLiteDatabase(Database):
    """The tables of one SQLite file (the event store's), over two connections.

    Writes go through one connection, reads through a read-only one, each in
    a worker thread and one statement at a time, so that reads never queue
    behind a write waiting for the file's lock.

    Args:
        path: The database file.
        busy_timeout: Seconds a write waits for another process's lock.
    """

    dialect = SQLITE

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._writer = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
        self._reader: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteDatabase {self.path!r}>"

    async def create(self, statements: Sequence[str]) -> None:
        """Create tables (see `Database.create`)."""
        async with self._write_lock:
            for statement in statements:
                await self._call(self._writer, self.dialect.ddl(statement), ())
        if self._reader is None:
            # Read-only, and opened once the tables exist.
            self._reader = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )

    async def fetch(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one read statement (see `Database.fetch`)."""
        if self._reader is None:
            msg = "SQLiteDatabase.create must run before the first read"
            raise fabula.StoreError(msg)
        async with self._read_lock:
            return await self._call(self._reader, statement, params)

    async def write(self, statement: str, params: Sequence[object] = ()) -> None:
        """Run one write statement (see `Database.write`)."""
        async with self._write_lock:
            await self._call(self._writer, statement, params)

    async def _call(
        self, conn: sqlite3.Connection, statement: str, params: Sequence[object]
    ) -> list[Row]:
        values = self.dialect.params(params)
        try:
            return await asyncio.to_thread(lambda: conn.execute(statement, values).fetchall())
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and (
                "locked" in str(exc) or "busy" in str(exc) or "unable to open" in str(exc)
            ):
                msg = f"the database {self.path!r} is unavailable: {exc}"
                raise fabula.StoreUnavailableError(msg) from exc
            raise fabula.StoreError(f"the database {self.path!r} failed: {exc}") from exc

    async def close(self) -> None:
        """Close both connections."""
        self._writer.close()
        if self._reader is not None:
            self._reader.close()
