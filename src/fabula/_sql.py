"""One SQL read model for SQLite and PostgreSQL: portable statements, typed rows.

A read model's SQL is written once:

- parameters are named, `:name`, with Python values (UUID, Decimal, aware
  datetime, int, str, bool, None); each dialect turns the statement and the
  values into what its driver takes (`%(name)s` and native values for
  psycopg, `:name` and text for sqlite3);
- table definitions use `{uuid}`, `{decimal}`, `{datetime}`, `{date}`,
  `{bigint}`, `{text}` and `{bool}` for column types, filled in per database;
- rows are read into a class of the caller's (an attrs class whose fields
  are the statement's column names), so values come back as the same
  Python types from either database.

On SQLite a `{decimal}` column holds the exact text of the number, so SQL
there cannot order or compare it numerically: sort money in Python, or
keep integer minor units (cents) in a `{bigint}` column beside it.
`{datetime}` columns sort and compare correctly on both (SQLite holds
fixed-width UTC text).

`Sql` runs statements on one connection, in its caller's transaction (a
projection handler's); `ReadModel` is the async side that queries use,
which each store provides (`store.read_model()`). `SqlProjection` gives
its handlers a `Sql` on whichever store runs it.
"""

from __future__ import annotations

import abc
import functools
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import attrs
import cattrs

from fabula._projection import Projection
from fabula._store import RecordedEvent

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "Dialect",
    "ReadModel",
    "Sql",
    "SqlProjection",
    "dialect_of",
]

T = TypeVar("T")
R = TypeVar("R")

Params = Mapping[str, object]
"""A statement's parameters, by name."""

# A named parameter outside quotes: `:name`, not `::type` (a PostgreSQL cast).
_NAMED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|:([A-Za-z_][A-Za-z0-9_]*)|%")


@attrs.frozen
class Dialect:
    """How one database spells portable read-model SQL.

    Attributes:
        name: `"sqlite"` or `"postgresql"`.
        types: The column type each `{placeholder}` of a table definition stands for.
        as_text: Whether UUIDs, Decimals and datetimes are stored as text
            (SQLite) rather than as native values (PostgreSQL).
    """

    name: str
    types: Mapping[str, str] = attrs.field(repr=False)
    as_text: bool = attrs.field(repr=False)

    def ddl(self, statement: str) -> str:
        """`statement` (a table or index definition) with its column types filled in.

        Raises:
            ValueError: It names a type placeholder no dialect has.
        """
        try:
            return statement.format_map(self.types)
        except (KeyError, IndexError, ValueError) as exc:
            known = ", ".join(f"{{{name}}}" for name in self.types)
            msg = f"a table definition may use the column types {known}, not {exc}: {statement!r}"
            raise ValueError(msg) from None

    def statement(self, statement: str) -> str:
        """`statement` with this driver's placeholders (cached: it is on the hot path)."""
        return statement if self.as_text else _psycopg_spelling(statement)

    def params(self, params: Params | None) -> dict[str, object]:
        """The values of `params` as this driver takes them."""
        if not params:
            return {}
        if not self.as_text:
            return dict(params)
        return {name: _as_text(value) for name, value in params.items()}


@functools.lru_cache(maxsize=1024)
def _psycopg_spelling(statement: str) -> str:
    """`statement` with `:name` as psycopg's `%(name)s`, and its other `%` doubled.

    Cached, and bounded: statements built per call (a filter added, say)
    come and go.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if match.group(1) is not None:
            return f"%({match.group(1)})s"
        return token.replace("%", "%%")  # psycopg reads % everywhere, quotes included

    return _NAMED.sub(replace, statement)


def _as_text(value: object) -> object:
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            msg = f"a read-model datetime must be timezone-aware, not {value.isoformat()}"
            raise ValueError(msg)
        # Fixed width, always UTC: the text sorts as the moments do.
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    return value


SQLITE = Dialect(
    "sqlite",
    {
        "uuid": "TEXT",
        "decimal": "TEXT",
        "datetime": "TEXT",
        "date": "TEXT",
        "bigint": "INTEGER",
        "text": "TEXT",
        "bool": "INTEGER",
    },
    as_text=True,
)
"""SQLite: text columns for UUIDs, Decimals and datetimes; `:name` parameters."""

POSTGRESQL = Dialect(
    "postgresql",
    {
        "uuid": "uuid",
        "decimal": "numeric",
        "datetime": "timestamptz",
        "date": "date",
        "bigint": "bigint",
        "text": "text",
        "bool": "boolean",
    },
    as_text=False,
)
"""PostgreSQL: native `uuid`, `numeric` and `timestamptz` columns; `%(name)s` for psycopg."""


def dialect_of(connection: object) -> Dialect:
    """The dialect of a driver connection: a `sqlite3.Connection` or a psycopg one.

    Raises:
        TypeError: It is neither.
    """
    if isinstance(connection, sqlite3.Connection):
        return SQLITE
    if type(connection).__module__.partition(".")[0] == "psycopg":
        return POSTGRESQL
    msg = f"no SQL dialect for {type(connection).__qualname__}: expected sqlite3 or psycopg"
    raise TypeError(msg)


def _rows_converter() -> cattrs.Converter:
    """Structures rows from either driver: text from SQLite, native values from psycopg."""
    converter = cattrs.Converter()

    def uuid(value: object, _: type) -> UUID:
        return value if isinstance(value, UUID) else UUID(str(value))

    def decimal(value: object, _: type) -> Decimal:
        if isinstance(value, float):  # a float has lost the digits already
            msg = f"a read-model Decimal came back as the float {value!r}: store it as text"
            raise TypeError(msg)
        return value if isinstance(value, Decimal) else Decimal(str(value))

    def moment(value: object, _: type) -> datetime:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if parsed.utcoffset() is None:
            msg = f"a read-model datetime came back without a timezone: {value!r}"
            raise ValueError(msg)
        return parsed

    def day(value: object, _: type) -> date:
        if isinstance(value, datetime):
            msg = f"a read-model date came back as a datetime: {value!r}"
            raise TypeError(msg)
        return value if isinstance(value, date) else date.fromisoformat(str(value))

    def boolean(value: object, _: type) -> bool:
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        msg = f"not a boolean: {value!r}"
        raise TypeError(msg)

    converter.register_structure_hook(UUID, uuid)
    converter.register_structure_hook(Decimal, decimal)
    converter.register_structure_hook(datetime, moment)
    converter.register_structure_hook(date, day)
    converter.register_structure_hook(bool, boolean)
    return converter


_ROWS = _rows_converter()


def _structure(row_type: type[T], columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[T]:
    _check_row_type(row_type)
    try:
        return [_ROWS.structure(dict(zip(columns, row, strict=True)), row_type) for row in rows]
    except cattrs.BaseValidationError as exc:
        details = "; ".join(cattrs.transform_error(exc, path="row"))
        msg = f"a row does not fit {row_type.__qualname__}: {details}"
        raise TypeError(msg) from exc


def _check_row_type(row_type: type) -> None:
    if not attrs.has(row_type):
        msg = f"rows are read into an attrs class, not {row_type!r}"
        raise TypeError(msg)


class Sql:
    """Read-model SQL on one connection, in its caller's transaction.

    A projection handler gets one (see `SqlProjection`); `ReadModel.transaction`
    gives one to a function that runs several statements at once.

    Args:
        connection: A `sqlite3.Connection` or a psycopg connection.
        dialect: How that database spells the SQL (from the connection if omitted).
    """

    def __init__(self, connection: Any, dialect: Dialect | None = None) -> None:  # noqa: ANN401 - either driver's connection
        self.connection = connection
        self.dialect = dialect_of(connection) if dialect is None else dialect

    def __repr__(self) -> str:
        return f"<Sql {self.dialect.name}>"

    def execute(self, statement: str, params: Params | None = None) -> int:
        """Run one statement; return how many rows it changed."""
        cursor = self.connection.execute(
            self.dialect.statement(statement), self.dialect.params(params)
        )
        return int(cursor.rowcount)

    def fetch_all(self, statement: str, params: Params | None = None, *, row: type[T]) -> list[T]:
        """Run one query; return its rows as `row`s (an attrs class, fields named as columns)."""
        cursor = self.connection.execute(
            self.dialect.statement(statement), self.dialect.params(params)
        )
        columns = [column[0] for column in cursor.description or ()]
        return _structure(row, columns, cursor.fetchall())

    def fetch_one(self, statement: str, params: Params | None = None, *, row: type[T]) -> T | None:
        """Run one query; return its first row as a `row`, or None."""
        found = self.fetch_all(statement, params, row=row)
        return found[0] if found else None

    def create(self, *definitions: str) -> None:
        """Run table and index definitions, with the dialect's column types filled in."""
        for definition in definitions:
            self.connection.execute(self.dialect.ddl(definition))


class SqlProjection(Projection[object]):
    """A projection into SQL tables that runs unchanged on SQLite and on PostgreSQL.

    Its handlers and `create` get a `Sql` on the store's projection
    transaction; list the tables in `tables` and their definitions in
    `definitions` (with `{uuid}`-style column types), and they are created
    on first use and on each rebuild:

        class OpenTickets(fabula.SqlProjection):
            name = "open_tickets"
            tables = ("open_tickets",)
            definitions = (
                "CREATE TABLE IF NOT EXISTS open_tickets (id {uuid} PRIMARY KEY, title {text})",
            )

            @fabula.handles
            def _opened(self, event: TicketOpened, sql: fabula.Sql) -> None:
                sql.execute(
                    "INSERT INTO open_tickets VALUES (:id, :title)",
                    {"id": event.aggregate_id, "title": event.title},
                )
    """

    definitions: ClassVar[tuple[str, ...]] = ()
    """The read model's table and index definitions (`CREATE ... IF NOT EXISTS`)."""

    def setup(self, tx: object) -> None:
        """Create the tables of `definitions` on the store's transaction."""
        Sql(tx).create(*self.definitions)

    def handle(self, recorded: RecordedEvent, tx: object) -> None:
        """Apply one event through its handler, which gets a `Sql` on the store's transaction."""
        handler = self.handlers().get(type(recorded.event))
        if handler is not None:
            handler(self, recorded.event, Sql(tx))


class ReadModel(abc.ABC):
    """The async side of a SQL read model: what queries use (`store.read_model()`).

    Reads run off the event loop on a connection of their own; writes (a
    catalog's rows, say) are committed when the call returns.
    """

    dialect: Dialect

    @abc.abstractmethod
    async def transaction(self, work: Callable[[Sql], R], *, write: bool = False) -> R:
        """Run `work` in one transaction, off the event loop; return what it returns.

        Raises:
            StoreUnavailableError: The database cannot be reached or is locked.
            StoreError: A statement failed.
        """

    async def fetch_all(
        self, statement: str, params: Params | None = None, *, row: type[T]
    ) -> list[T]:
        """Run one query; return its rows as `row`s."""
        return await self.transaction(lambda sql: sql.fetch_all(statement, params, row=row))

    async def fetch_one(
        self, statement: str, params: Params | None = None, *, row: type[T]
    ) -> T | None:
        """Run one query; return its first row as a `row`, or None."""
        return await self.transaction(lambda sql: sql.fetch_one(statement, params, row=row))

    async def execute(self, statement: str, params: Params | None = None) -> int:
        """Run one write statement, committed when this returns; return the rows it changed."""
        return await self.transaction(lambda sql: sql.execute(statement, params), write=True)

    async def create(self, *definitions: str) -> None:
        """Create tables (with the dialect's column types), committed when this returns."""
        await self.transaction(lambda sql: sql.create(*definitions), write=True)
