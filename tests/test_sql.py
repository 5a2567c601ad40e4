"""One read model, one projection and one set of queries, run unchanged on SQLite and PostgreSQL."""

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula import Sql
from fabula._sql import POSTGRESQL, SQLITE
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore

from .support.postgres import drop_schemas, new_schema, require_postgres

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@fabula.event("tests.sql.Paid")
@attrs.frozen
class Paid(fabula.DomainEvent):
    amount: Decimal
    at: datetime
    note: str = ""


@attrs.frozen
class Balance:
    """A row of the read model, as the queries read it."""

    account: UUID
    total: Decimal
    payments: int
    last_at: datetime
    large: bool


class Balances(fabula.SqlProjection):
    """The same projection for both stores: named parameters, portable column types."""

    name = "sql_balances"
    tables = ("sql_balances",)
    definitions = (
        """CREATE TABLE IF NOT EXISTS sql_balances (
            account  {uuid}     PRIMARY KEY,
            total    {decimal}  NOT NULL,
            payments {bigint}   NOT NULL,
            last_at  {datetime} NOT NULL,
            large    {bool}     NOT NULL,
            version  {bigint}   NOT NULL
        )""",
    )

    @fabula.handles
    def _paid(self, event: Paid, sql: Sql) -> None:
        row = sql.fetch_one(
            "SELECT account, total, payments, last_at, large FROM sql_balances WHERE account = :a",
            {"a": event.aggregate_id},
            row=Balance,
        )
        total = event.amount + (row.total if row else Decimal(0))
        sql.execute(
            "INSERT INTO sql_balances VALUES (:a, :total, 1, :at, :large, :v) "
            "ON CONFLICT (account) DO UPDATE SET total = excluded.total, "
            "payments = sql_balances.payments + 1, last_at = excluded.last_at, "
            "large = excluded.large, version = excluded.version "
            "WHERE sql_balances.version < excluded.version",
            {
                "a": event.aggregate_id,
                "total": total,
                "at": event.at,
                "large": total >= 100,
                "v": event.version,
            },
        )


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SQLiteEventStore | PostgresEventStore]:
    if request.param == "sqlite":
        async with SQLiteEventStore(tmp_path / "e.db") as opened:
            yield opened
        return
    schema = new_schema()
    try:
        async with PostgresEventStore(require_postgres(), schema=schema) as pg:
            yield pg
    finally:
        drop_schemas([schema])


async def fill(store: SQLiteEventStore | PostgresEventStore) -> list[UUID]:
    accounts = [uuid4() for _ in range(3)]
    for n in range(9):
        account = accounts[n % 3]
        event = Paid(amount=Decimal(f"{n * 7}.25"), at=START + timedelta(minutes=n))
        await store.append(str(account), [event], expected_version=fabula.ExpectedVersion.ANY)
    return accounts


async def test_the_same_projection_and_queries_on_both_stores(
    store: SQLiteEventStore | PostgresEventStore,
) -> None:
    """Rows come back with the same values and Python types from either database."""
    accounts = await fill(store)
    await fabula.Projector(store, [Balances()]).catch_up()
    read_model = store.read_model()
    rows = await read_model.fetch_all(
        # Moments sort in SQL on both (fixed-width UTC text on SQLite); Decimals, exact
        # text there, do not: order by them in Python, or keep integer cents beside them.
        "SELECT account, total, payments, last_at, large FROM sql_balances ORDER BY last_at DESC",
        row=Balance,
    )
    expected = {
        account: sum((Decimal(f"{n * 7}.25") for n in range(i, 9, 3)), Decimal(0))
        for i, account in enumerate(accounts)
    }
    assert {row.account: row.total for row in rows} == expected
    assert [row.payments for row in rows] == [3, 3, 3]
    assert all(type(row.account) is UUID and type(row.total) is Decimal for row in rows)
    assert rows[0].last_at == START + timedelta(minutes=8)
    assert rows[0].last_at.utcoffset() == timedelta(0)
    assert [row.large for row in rows] == [row.total >= 100 for row in rows]
    one = await read_model.fetch_one(
        "SELECT account, total, payments, last_at, large FROM sql_balances WHERE account = :a",
        {"a": accounts[1]},
        row=Balance,
    )
    assert one is not None
    assert one.total == expected[accounts[1]]
    assert (
        await read_model.fetch_one(
            "SELECT account, total, payments, last_at, large FROM sql_balances WHERE account = :a",
            {"a": uuid4()},
            row=Balance,
        )
        is None
    )


async def test_writes_percent_signs_and_transactions(
    store: SQLiteEventStore | PostgresEventStore,
) -> None:
    """execute commits; a % in a literal is a %; several statements share one transaction."""

    @attrs.frozen
    class Note:
        id: int
        text: str

    read_model = store.read_model()
    await read_model.create("CREATE TABLE IF NOT EXISTS notes (id {bigint} PRIMARY KEY, t {text})")
    insert = "INSERT INTO notes VALUES (:id, :text)"
    assert await read_model.execute(insert, {"id": 1, "text": "50%"}) == 1
    await read_model.execute(insert, {"id": 2, "text": "a:b"})
    found = await read_model.fetch_all(
        "SELECT id, t AS text FROM notes WHERE t LIKE '%\\%%' ESCAPE '\\' ORDER BY id", row=Note
    )
    assert found == [Note(1, "50%")]

    def move(sql: Sql) -> int:
        sql.execute("UPDATE notes SET t = :t WHERE id = :id", {"t": "moved", "id": 2})
        return len(sql.fetch_all("SELECT id, t AS text FROM notes WHERE t = 'moved'", row=Note))

    assert await read_model.transaction(move, write=True) == 1

    def half_done(sql: Sql) -> None:
        sql.execute("UPDATE notes SET t = :t WHERE id = :id", {"t": "lost", "id": 1})
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        await read_model.transaction(half_done, write=True)
    (kept,) = await read_model.fetch_all("SELECT id, t AS text FROM notes WHERE id = 1", row=Note)
    assert kept.text == "50%"  # the failed transaction wrote nothing


async def test_a_rebuild_of_a_sql_projection(store: SQLiteEventStore | PostgresEventStore) -> None:
    """The blue/green rebuild creates the definitions in its side copy, on both stores."""
    await fill(store)
    projector = fabula.Projector(store, [Balances()])
    await projector.catch_up()
    before = await store.read_model().fetch_all(
        "SELECT account, total, payments, last_at, large FROM sql_balances ORDER BY account",
        row=Balance,
    )
    await store.read_model().execute("UPDATE sql_balances SET total = :t", {"t": Decimal(-1)})
    await projector.rebuild("sql_balances")
    after = await store.read_model().fetch_all(
        "SELECT account, total, payments, last_at, large FROM sql_balances ORDER BY account",
        row=Balance,
    )
    assert after == before


class TestDialects:
    def test_named_parameters_become_psycopg_s_outside_quotes_and_casts(self) -> None:
        """:name is %(name)s; quoted text, `::` casts and % signs are kept (% doubled)."""
        statement = "SELECT ':a', \"b:c\", x::text, y % 2 FROM t WHERE id = :id AND n LIKE '5%'"
        assert POSTGRESQL.statement(statement) == (
            "SELECT ':a', \"b:c\", x::text, y %% 2 FROM t WHERE id = %(id)s AND n LIKE '5%%'"
        )
        assert SQLITE.statement(statement) == statement

    def test_values_as_each_driver_takes_them(self) -> None:
        """SQLite gets text for UUIDs, Decimals and (UTC, fixed-width) datetimes; psycopg values."""
        ident, moment = uuid4(), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(hours=0)
        params = {
            "id": ident,
            "amount": Decimal("1.50"),
            "at": moment,
            "day": date(2027, 1, 15),
            "n": 3,
            "flag": True,
        }
        assert SQLITE.params(params) == {
            "id": str(ident),
            "amount": "1.50",
            "at": "2026-01-02T03:04:05.000000+00:00",
            "day": "2027-01-15",
            "n": 3,
            "flag": True,
        }
        assert POSTGRESQL.params(params) == params
        with pytest.raises(ValueError, match="timezone-aware"):
            SQLITE.params({"at": datetime(2026, 1, 1)})  # noqa: DTZ001 - the refused case

    def test_column_types_per_database(self) -> None:
        """{uuid}, {decimal} and {datetime} are text on SQLite, native on PostgreSQL."""
        ddl = "CREATE TABLE t (a {uuid}, b {decimal}, c {datetime}, d {bigint}, e {bool}, f {date})"
        assert SQLITE.ddl(ddl) == (
            "CREATE TABLE t (a TEXT, b TEXT, c TEXT, d INTEGER, e INTEGER, f TEXT)"
        )
        assert POSTGRESQL.ddl(ddl) == (
            "CREATE TABLE t (a uuid, b numeric, c timestamptz, d bigint, e boolean, f date)"
        )

    def test_an_unknown_column_type_is_named(self) -> None:
        """A placeholder no dialect has is a ValueError listing the ones there are."""
        for dialect in (SQLITE, POSTGRESQL):
            with pytest.raises(ValueError, match=r"\{uuid\}.*not 'money'"):
                dialect.ddl("CREATE TABLE t (a {money})")

    def test_a_float_never_becomes_a_decimal(self, tmp_path: Path) -> None:
        """A money column read back as a float is refused, not rounded into a Decimal."""
        import sqlite3  # noqa: PLC0415

        @attrs.frozen
        class Money:
            amount: Decimal

        conn = sqlite3.connect(tmp_path / "f.db")
        sql = Sql(conn)
        assert sql.fetch_all("SELECT '1.10' AS amount", row=Money) == [Money(Decimal("1.10"))]
        with pytest.raises(TypeError, match="float"):
            sql.fetch_all("SELECT 1.1 AS amount", row=Money)
        with pytest.raises(TypeError, match="attrs class"):
            sql.fetch_all("SELECT 1 AS amount", row=dict)
        with pytest.raises(TypeError, match="no SQL dialect"):
            Sql(object())
        conn.close()
