"""fabula beside the `eventsourcing` library: the same workloads, in one process, on SQLite.

    nox -s compare          # installs eventsourcing in the session, then runs this
    python benchmarks/bench_compare.py [--quick]

Both libraries store the same aggregate (one event type with a ~200-byte
payload: a UUID, a Decimal, text) in a SQLite file in WAL mode, with the
`synchronous` setting each uses by default, which the report prints as
read from the files' connections. Each workload runs for one library,
then the other, alternating over several rounds; the report gives the
median of the rounds. eventsourcing is synchronous, so fabula's async calls
run one at a time too: no concurrency helps either side.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Basket, print_table, Row  # noqa: I001 - the local helper module first

import fabula
from fabula.sqlite import SQLiteEventStore

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


# -- the workloads: each returns a rate (or milliseconds for the load) ---------------


def es_command_path(path: Path, streams: int, rounds: int) -> float:
    """Get, add one line, save; `streams` x `rounds` commands."""
    app = es_app(path)
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


async def fabula_command_path(path: Path, streams: int, rounds: int) -> float:
    """Get, add one line, save; `streams` x `rounds` commands."""
    async with SQLiteEventStore(path) as store:
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


def es_read_all(path: Path) -> float:
    """Read the whole log (the notifications) in pages of 1000, decoding each. Events/s."""
    app = es_app(path)
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


async def fabula_read_all(path: Path) -> float:
    """Read the whole log in pages of 1000, decoded. Events/s."""
    async with SQLiteEventStore(path) as store:
        start = time.perf_counter()
        count = after = 0
        while page := await store.read_all(after=after, limit=1000):
            count += len(page)
            after = page[-1].position
        return count / (time.perf_counter() - start)


async def _open_fabula(path: Path) -> None:
    async with SQLiteEventStore(path):
        pass


def journal_mode(path: Path, opener: Callable[[], object]) -> str:
    """The journal mode `opener` leaves the database file `path` in."""
    opener()
    with sqlite3.connect(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return str(mode)


def median(values: list[float]) -> float:
    """The median of the rounds."""
    return statistics.median(values)


def run(folder: Path, *, quick: bool, rounds: int) -> list[Row]:
    """Run every workload `rounds` times per library, alternating; return the rows."""
    scale = 10 if quick else 1
    streams, per_stream = 500 // scale, 10
    bulk_events = 10_000 // scale
    results: dict[str, dict[str, list[float]]] = {}

    def record(workload: str, library: str, value: float) -> None:
        results.setdefault(workload, {}).setdefault(library, []).append(value)

    for number in range(rounds):
        base = folder / f"round-{number}"
        base.mkdir()
        record("C1", "es", es_command_path(base / "es-c1.db", streams, per_stream))
        record(
            "C1", "fabula", asyncio.run(fabula_command_path(base / "f-c1.db", streams, per_stream))
        )
        record("C2", "es", es_bulk(base / "es-c2.db", bulk_events))
        record("C2", "fabula", asyncio.run(fabula_bulk(base / "f-c2.db", bulk_events)))
        record("C3", "es", es_load(base / "es-c3.db", 1000, 20 // scale or 2))
        record("C3", "fabula", asyncio.run(fabula_load(base / "f-c3.db", 1000, 20 // scale or 2)))
        # The log of the bulk workload, read back whole.
        record("C4", "es", es_read_all(base / "es-c2.db"))
        record("C4", "fabula", asyncio.run(fabula_read_all(base / "f-c2.db")))

    def row(workload: str, label: str, unit: str) -> Row:
        return Row(
            label, median(results[workload]["fabula"]), median(results[workload]["es"]), unit, "-"
        )

    return [
        row("C1", f"C1 command path ({streams} aggregates x {per_stream})", "cmd/s"),
        row("C2", f"C2 save aggregates of 100 events ({bulk_events:,})", "ev/s"),
        row("C3", "C3 load an aggregate of 1,000 events (median)", "ms"),
        row("C4", f"C4 read the whole log and decode ({bulk_events:,})", "ev/s"),
    ]


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per library (median)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabula-compare-") as scratch:
        folder = Path(scratch)
        rows = run(folder, quick=arguments.quick, rounds=arguments.rounds)
        es_mode = journal_mode(folder / "mode-es.db", lambda: es_app(folder / "mode-es.db"))
        f_path = folder / "mode-f.db"
        f_mode = journal_mode(f_path, lambda: asyncio.run(_open_fabula(f_path)))
    default_sync = sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0]
    their = importlib.metadata.version("eventsourcing")
    print(
        f"fabula {fabula.__version__}, eventsourcing {their}, "
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}"
    )
    print(
        f"journal modes: fabula {f_mode}, eventsourcing {es_mode}; fabula synchronous=FULL "
        f"(its default), eventsourcing sets none: this SQLite's default is {default_sync} "
        f"(2 = FULL)"
    )
    print(f"medians of {arguments.rounds} alternating rounds; ratio = fabula / eventsourcing")
    print("(for C3, lower is better: the ratio is fabula's time over eventsourcing's)")
    print()
    print_table(rows, baseline="eventsourcing")


if __name__ == "__main__":
    main()
