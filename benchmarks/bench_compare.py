"""fabula beside the `eventsourcing` library and the raw driver: the same workloads, in one run.

    nox -s compare          # installs eventsourcing in the session, then runs this
    python benchmarks/bench_compare.py [--quick] [--rounds N] [--url postgresql://...]

Both libraries store the same aggregate (one event type with a ~200-byte
payload: a UUID, a Decimal, text). C1-C4 use a SQLite file in WAL mode,
with the `synchronous` setting each uses by default, which the report
prints as read from the files' connections; C5-C7 use the PostgreSQL
server at `--url` (skipped, with the reason, when there is none). Each
workload runs for one library, then the other, then the raw driver
(stdlib `sqlite3` or psycopg writing fabula's rows into fabula's tables:
no objects, no JSON, no checks), alternating over several rounds; the
report gives the median of the rounds, and the ratios of those medians.
eventsourcing is synchronous, so fabula's async calls run one at a time
too, except in C6, where each library runs four writers at once (four
asyncio tasks on one fabula store; four threads on one eventsourcing
application; four threads with a connection each for the raw driver).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import attrs
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import bench_postgres
from bench import Basket

import fabula
from fabula.sqlite import SQLiteEventStore
from fabula.sqlite import _schema as sqlite_schema

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate as EsAggregate
    from eventsourcing.domain import event as es_event
except ImportError:  # pragma: no cover - depends on the environment
    print("bench_compare needs eventsourcing: run it with `nox -s compare`")
    raise SystemExit(1) from None


class EsBasket(EsAggregate):  # type: ignore[misc] - eventsourcing's class, untyped here
    """The same aggregate as `bench.Basket`, in eventsourcing's style."""

    def __init__(self) -> None:
        self.lines = 0
        self.total = Decimal(0)

    @es_event("ItemAdded")  # type: ignore[misc]
    def add_item(  # noqa: PLR0917 - eventsourcing passes an event's fields as arguments
        self,
        product_id: UUID,
        sku: str,
        quantity: int,
        unit_price: Decimal,
        warehouse: str,
        note: str,
    ) -> None:
        """Record one line."""
        del product_id, sku, warehouse, note
        self.lines += 1
        self.total += quantity * unit_price

    def add(self, n: int) -> None:
        """Record one line with the payload `bench.Basket.add` records."""
        self.add_item(
            product_id=uuid4(),
            sku=f"SKU-{n:08d}",
            quantity=1 + n % 5,
            unit_price=Decimal("19.99"),
            warehouse="Amsterdam-North-3",
            note="gift wrap, leave at the neighbours if nobody is home",
        )


class Shop(Application):  # type: ignore[misc]
    """An eventsourcing application holding baskets."""


def es_app(path: Path) -> Any:  # noqa: ANN401 - eventsourcing's application
    """An eventsourcing application on the SQLite file `path`."""
    return Shop(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})


def es_postgres_app(url: str, schema: str) -> Any:  # noqa: ANN401 - eventsourcing's application
    """An eventsourcing application on PostgreSQL at `url`, its table in `schema`."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    return Shop(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
            "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
            "POSTGRES_PORT": str(parts.get("port", "5432")),
            "POSTGRES_USER": str(parts.get("user", "postgres")),
            "POSTGRES_PASSWORD": str(parts.get("password", "")),
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": "5",
        }
    )


# -- the workloads: each returns a rate (or milliseconds for the load) ---------------


def es_command_path(app: Any, streams: int, rounds: int) -> float:  # noqa: ANN401
    """Get, add one line, save; `streams` x `rounds` commands on `app`."""
    ids = []
    start = time.perf_counter()
    for n in range(streams):
        basket = EsBasket()
        basket.add(n)
        app.save(basket)
        ids.append(basket.id)
    for round_number in range(1, rounds):
        for basket_id in ids:
            basket = app.repository.get(basket_id)
            basket.add(round_number)
            app.save(basket)
    return streams * rounds / (time.perf_counter() - start)


async def fabula_command_path(store: fabula.EventStore, streams: int, rounds: int) -> float:
    """Get, add one line, save; `streams` x `rounds` commands on `store`."""
    repo = fabula.Repository(store)
    ids = []
    start = time.perf_counter()
    for n in range(streams):
        basket = Basket(id=uuid4())
        basket.add(n)
        await repo.save(basket)
        ids.append(basket.id)
    for round_number in range(1, rounds):
        for basket_id in ids:
            loaded = await repo.get(Basket, basket_id)
            loaded.add(round_number)
            await repo.save(loaded)
    return streams * rounds / (time.perf_counter() - start)


async def fabula_sqlite_command_path(path: Path, streams: int, rounds: int) -> float:
    """`fabula_command_path` on a new SQLite file."""
    async with SQLiteEventStore(path) as store:
        return await fabula_command_path(store, streams, rounds)


def es_bulk(path: Path, events: int) -> float:
    """Aggregates of 100 events, each saved at once. Returns events/s."""
    app = es_app(path)
    baskets = []
    for b in range(events // 100):
        basket = EsBasket()
        for n in range(99):  # + the creation event: 100 events
            basket.add(b * 100 + n)
        baskets.append(basket)
    start = time.perf_counter()
    for basket in baskets:
        app.save(basket)
    return events / (time.perf_counter() - start)


async def fabula_bulk(path: Path, events: int) -> float:
    """Aggregates of 100 events, each saved at once. Returns events/s."""
    async with SQLiteEventStore(path) as store:
        repo = fabula.Repository(store)
        baskets = []
        for b in range(events // 100):
            basket = Basket(id=uuid4())
            for n in range(100):
                basket.add(b * 100 + n)
            baskets.append(basket)
        start = time.perf_counter()
        for basket in baskets:
            await repo.save(basket)
        return events / (time.perf_counter() - start)


def es_load(path: Path, events: int, repeat: int) -> float:
    """Median milliseconds to load an aggregate of `events` events."""
    app = es_app(path)
    basket = EsBasket()
    for n in range(events - 1):
        basket.add(n)
    app.save(basket)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        app.repository.get(basket.id)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def fabula_load(path: Path, events: int, repeat: int) -> float:
    """Median milliseconds to load an aggregate of `events` events."""
    async with SQLiteEventStore(path) as store:
        repo = fabula.Repository(store)
        basket = Basket(id=uuid4())
        for n in range(events):
            basket.add(n)
        await repo.save(basket)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            await repo.get(Basket, basket.id)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000


def es_read_all(app: Any) -> float:  # noqa: ANN401 - eventsourcing's application
    """Read the whole log (the notifications) in pages of 1000, decoding each. Events/s."""
    start = time.perf_counter()
    count, after = 0, 0
    while page := app.recorder.select_notifications(
        start=after, limit=1000, inclusive_of_start=False
    ):
        for notification in page:
            app.mapper.to_domain_event(notification)
        count += len(page)
        after = page[-1].id
    return count / (time.perf_counter() - start)


async def fabula_read_all(store: fabula.EventStore) -> float:
    """Read the whole log in pages of 1000, touching each decoded event. Events/s."""
    start = time.perf_counter()
    count = after = 0
    while page := await store.read_all(after=after, limit=1000):
        for recorded in page:
            _ = recorded.event
        count += len(page)
        after = page[-1].position
    return count / (time.perf_counter() - start)


async def fabula_sqlite_read_all(path: Path) -> float:
    """`fabula_read_all` of a SQLite file."""
    async with SQLiteEventStore(path) as store:
        return await fabula_read_all(store)


# -- the raw driver, writing fabula's rows into fabula's tables --------------------


def raw_batches(path: Path, events: int) -> float:
    """Batches of 100 rows, each inserted with executemany and committed. Events/s."""
    batches = [
        [bench.raw_row(f"bulk-{b}", n + 1, b * 100 + n) for n in range(100)]
        for b in range(events // 100)
    ]
    with closing(bench.raw_connect(path, "FULL")) as conn:
        start = time.perf_counter()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sqlite_schema.INSERT_EVENT, rows)
            conn.execute("COMMIT")
        return events / (time.perf_counter() - start)


def raw_load(path: Path, events: int, repeat: int) -> float:
    """Median milliseconds to fetch one stream's `events` rows (no decoding)."""
    with closing(bench.raw_connect(path, "FULL")) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            sqlite_schema.INSERT_EVENT, [bench.raw_row("load", n + 1, n) for n in range(events)]
        )
        conn.execute("COMMIT")
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            conn.execute(sqlite_schema.READ_STREAM, ("load", 1, -1)).fetchall()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000


# -- PostgreSQL ----------------------------------------------------------------------


@attrs.define
class Server:
    """The PostgreSQL server of C5-C7, and the schemas made on it (dropped at the end)."""

    url: str
    made: list[str] = attrs.field(factory=list)

    def schema(self) -> str:
        """A new, empty schema's name (created)."""
        name = bench_postgres.new_schema()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        self.made.append(name)
        return name

    def fabula_schema(self) -> str:
        """A new schema with fabula's tables (for the raw driver)."""
        name = asyncio.run(bench_postgres.raw_schema(self.url))
        self.made.append(name)
        return name

    def drop_all(self) -> None:
        """Drop every schema made."""
        for name in self.made:
            bench_postgres.drop(self.url, name)
        self.made.clear()


def in_threads(work: Callable[[int], object], threads: int) -> float:
    """Run `work(k)` for k in range(threads) at once; return the wall time in seconds."""
    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


async def fabula_postgres(server: Server, streams: int, rounds: int) -> tuple[float, float, float]:
    """C5, C6 and C7 for fabula: one caller, four writers, then reading C5's log back."""
    from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - only with a server

    async with PostgresEventStore(server.url, schema=server.schema()) as store:
        c5 = await fabula_command_path(store, streams, rounds)
        c7 = await fabula_read_all(store)
    async with PostgresEventStore(server.url, schema=server.schema(), max_size=4) as store:
        started = time.perf_counter()
        share = streams // 4
        await asyncio.gather(*(fabula_command_path(store, share, rounds) for _ in range(4)))
        c6 = 4 * share * rounds / (time.perf_counter() - started)
    return c5, c6, c7


def es_postgres(server: Server, streams: int, rounds: int) -> tuple[float, float, float]:
    """C5, C6 and C7 for eventsourcing."""
    app = es_postgres_app(server.url, server.schema())
    c5 = es_command_path(app, streams, rounds)
    c7 = es_read_all(app)
    app.close()
    app = es_postgres_app(server.url, server.schema())
    share = streams // 4
    seconds = in_threads(lambda _: es_command_path(app, share, rounds), 4)
    app.close()
    return c5, 4 * share * rounds / seconds, c7


def raw_postgres(server: Server, streams: int, rounds: int) -> tuple[float, float, float]:
    """C5, C6 and C7 for raw psycopg (select, insert, commit per command)."""
    name = server.fabula_schema()
    c5 = bench_postgres.raw_command_path(server.url, name, streams, rounds)
    c7 = bench_postgres.raw_read_all(server.url, name)
    name = server.fabula_schema()
    share = streams // 4
    seconds = in_threads(
        lambda _: bench_postgres.raw_command_path(server.url, name, share, rounds), 4
    )
    return c5, 4 * share * rounds / seconds, c7


# -- the report ----------------------------------------------------------------------


@attrs.frozen
class Compared:
    """One line of the report: the medians of fabula, eventsourcing and the raw driver."""

    workload: str
    fabula: float
    peer: float
    raw: float
    unit: str
    target: str

    def cells(self) -> tuple[str, ...]:
        """The line's cells; for times (ms) a ratio is a time over another, lower is better."""

        def value(number: float) -> str:
            return f"{number:.3f} ms" if self.unit == "ms" else f"{number:,.0f} {self.unit}"

        return (
            self.workload,
            value(self.fabula),
            value(self.peer),
            value(self.raw),
            f"{self.fabula / self.peer:.2f}",
            f"{self.fabula / self.raw:.2f}",
            self.target,
        )


def print_compared(rows: list[Compared], raw: str) -> None:
    """Print the rows as an aligned table."""
    header = ("workload", "fabula", "eventsourcing", raw, "f/es", "f/raw", "target (f/es)")
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for number, line in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def median(values: list[float]) -> float:
    """The median of the rounds."""
    return statistics.median(values)


Results = dict[str, dict[str, list[float]]]


def run_sqlite(folder: Path, results: Results, *, quick: bool, rounds: int) -> list[Compared]:
    """C1-C4, `rounds` times per library, alternating; return the rows."""
    scale = 10 if quick else 1
    streams, per_stream = 500 // scale, 10
    bulk_events = 10_000 // scale
    repeat = 20 // scale or 2

    def record(workload: str, library: str, value: float) -> None:
        results.setdefault(workload, {}).setdefault(library, []).append(value)

    for number in range(rounds):
        base = folder / f"round-{number}"
        base.mkdir()
        record("C1", "es", es_command_path(es_app(base / "es-c1.db"), streams, per_stream))
        record(
            "C1",
            "fabula",
            asyncio.run(fabula_sqlite_command_path(base / "f-c1.db", streams, per_stream)),
        )
        record("C1", "raw", bench.raw_command_path(base / "r-c1.db", "FULL", streams, per_stream))
        record("C2", "es", es_bulk(base / "es-c2.db", bulk_events))
        record("C2", "fabula", asyncio.run(fabula_bulk(base / "f-c2.db", bulk_events)))
        record("C2", "raw", raw_batches(base / "r-c2.db", bulk_events))
        record("C3", "es", es_load(base / "es-c3.db", 1000, repeat))
        record("C3", "fabula", asyncio.run(fabula_load(base / "f-c3.db", 1000, repeat)))
        record("C3", "raw", raw_load(base / "r-c3.db", 1000, repeat))
        # The log of the bulk workload, read back whole.
        record("C4", "es", es_read_all(es_app(base / "es-c2.db")))
        record("C4", "fabula", asyncio.run(fabula_sqlite_read_all(base / "f-c2.db")))
        record("C4", "raw", bench.raw_read_all(base / "r-c2.db"))
    return [
        row(results, "C1", f"C1 command path ({streams} aggregates x {per_stream})", "cmd/s"),
        row(results, "C2", f"C2 save aggregates of 100 events ({bulk_events:,})", "ev/s"),
        row(results, "C3", "C3 load an aggregate of 1,000 events (median)", "ms"),
        row(results, "C4", f"C4 read the whole log and decode ({bulk_events:,})", "ev/s"),
    ]


def run_postgres(server: Server, results: Results, *, quick: bool, rounds: int) -> list[Compared]:
    """C5-C7, `rounds` times per library, alternating; return the rows."""
    scale = 10 if quick else 1
    streams, per_stream = 200 // scale, 10
    libraries: dict[str, Callable[[Server, int, int], tuple[float, float, float]]] = {
        "es": es_postgres,
        "fabula": lambda *a: asyncio.run(fabula_postgres(*a)),
        "raw": raw_postgres,
    }
    try:
        for _ in range(rounds):
            for library, measure in libraries.items():
                for workload, value in zip(
                    ("C5", "C6", "C7"), measure(server, streams, per_stream), strict=True
                ):
                    results.setdefault(workload, {}).setdefault(library, []).append(value)
            server.drop_all()
    finally:
        server.drop_all()
    logged = streams * per_stream
    return [
        row(results, "C5", f"C5 command path ({streams} aggregates x {per_stream})", "cmd/s"),
        row(results, "C6", "C6 the same, 4 writers at once", "cmd/s"),
        row(results, "C7", f"C7 read C5's log and decode ({logged:,})", "ev/s"),
    ]


TARGETS = {
    "C1": ">= 1.5",
    "C2": ">= 1.5",
    "C3": "<= 0.20",
    "C4": ">= 2.0",
    "C5": ">= 2.0",
    "C6": ">= 2.5",
    "C7": ">= 1.5",
}
"""Issue 18's targets: fabula over eventsourcing (for C3, fabula's time over eventsourcing's)."""


def row(results: Results, workload: str, label: str, unit: str) -> Compared:
    """The report's line for `workload`: the medians of its rounds."""
    of = results[workload]
    return Compared(
        label,
        median(of["fabula"]),
        median(of["es"]),
        median(of["raw"]),
        unit,
        TARGETS[workload],
    )


async def _open_fabula(path: Path) -> None:
    async with SQLiteEventStore(path):
        pass


def journal_mode(path: Path, opener: Callable[[], object]) -> str:
    """The journal mode `opener` leaves the database file `path` in."""
    opener()
    with sqlite3.connect(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return str(mode)


def postgres_server(url: str) -> tuple[Server | None, str]:
    """The server at `url` and its version, or None and why not."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        return None, f"no PostgreSQL server at {url} ({exc})"
    return Server(url), f"PostgreSQL {version[0] if version else '?'}"


def main() -> None:
    """Run the comparison and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per library (median)")
    parser.add_argument("--url", default=bench_postgres.DEFAULT_URL, help="the PostgreSQL server")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one half of the suite")
    arguments = parser.parse_args()
    results: Results = {}
    sqlite_rows: list[Compared] = []
    postgres_rows: list[Compared] = []
    with tempfile.TemporaryDirectory(prefix="fabula-compare-") as scratch:
        folder = Path(scratch)
        if arguments.only != "postgres":
            sqlite_rows = run_sqlite(
                folder, results, quick=arguments.quick, rounds=arguments.rounds
            )
        es_mode = journal_mode(folder / "mode-es.db", lambda: es_app(folder / "mode-es.db"))
        f_path = folder / "mode-f.db"
        f_mode = journal_mode(f_path, lambda: asyncio.run(_open_fabula(f_path)))
    server, server_note = postgres_server(arguments.url)
    if server is not None and arguments.only != "sqlite":
        postgres_rows = run_postgres(
            server, results, quick=arguments.quick, rounds=arguments.rounds
        )
    default_sync = sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0]
    their = importlib.metadata.version("eventsourcing")
    print(
        f"fabula {fabula.__version__}, eventsourcing {their}, SQLite {sqlite3.sqlite_version}, "
        f"{server_note}, psycopg {psycopg.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"journal modes: fabula {f_mode}, eventsourcing {es_mode}; fabula synchronous=FULL "
        f"(its default), eventsourcing sets none: this SQLite's default is {default_sync} "
        f"(2 = FULL); the raw driver runs at FULL"
    )
    print(
        f"medians of {arguments.rounds} alternating rounds; f/es = fabula / eventsourcing, "
        "f/raw = fabula / the raw driver"
    )
    print("(for C3, lower is better: the ratios are fabula's time over the other's)")
    if sqlite_rows:
        print()
        print_compared(sqlite_rows, "raw sqlite3")
    if postgres_rows:
        print()
        print_compared(postgres_rows, "raw psycopg")
    elif arguments.only != "sqlite":
        print()
        print(f"C5-C7 skipped: {server_note}")


if __name__ == "__main__":
    main()
