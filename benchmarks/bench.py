"""fabula's benchmark suite: each workload beside a raw sqlite3 baseline, in one run.

    nox -s bench            # or: python benchmarks/bench.py [--quick]

The raw baselines write the same rows into the same tables (fabula's own
schema, so the same indexes) with the same pragmas, through the stdlib
`sqlite3` module directly: no validation, no JSON, no objects. Ratios are
fabula's rate divided by the raw rate measured in the same process, so
they compare like with like on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import attrs

import fabula
from fabula._uuids import new_event_id
from fabula.sqlite import SQLiteEventStore, Synchronous
from fabula.sqlite import _schema as schema


@fabula.event("bench.ItemAdded")
@attrs.frozen
class ItemAdded(fabula.DomainEvent):
    """A ~200-byte payload: the size of a typical order line event."""

    product_id: UUID
    sku: str
    quantity: int
    unit_price: Decimal
    warehouse: str
    note: str


@attrs.define
class Basket(fabula.Aggregate):
    """A small aggregate whose state depends on every event."""

    lines: int = 0
    total: Decimal = Decimal(0)

    def add(self, n: int) -> None:
        """Record one line."""
        self.record(
            ItemAdded(
                product_id=uuid4(),
                sku=f"SKU-{n:08d}",
                quantity=1 + n % 5,
                unit_price=Decimal("19.99"),
                warehouse="Amsterdam-North-3",
                note="gift wrap, leave at the neighbours if nobody is home",
            )
        )

    @fabula.apply
    def _added(self, event: ItemAdded) -> None:
        self.lines += 1
        self.total += event.unit_price * event.quantity


def payload(n: int) -> str:
    """The JSON the raw baseline stores: what fabula stores for one ItemAdded."""
    return json.dumps(
        {
            "product_id": str(uuid4()),
            "sku": f"SKU-{n:08d}",
            "quantity": 1 + n % 5,
            "unit_price": "19.99",
            "warehouse": "Amsterdam-North-3",
            "note": "gift wrap, leave at the neighbours if nobody is home",
        },
        separators=(",", ":"),
    )


# -- raw baselines ---------------------------------------------------------------


def raw_connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """Open `path` with fabula's schema and pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    for statement in schema.CREATE_SCHEMA:
        conn.execute(statement)
    return conn


def raw_row(stream_id: str, version: int, n: int) -> tuple[object, ...]:
    """One event row as fabula writes it."""
    return (
        stream_id,
        version,
        new_event_id().bytes,  # the time-ordered ids fabula gives events
        "bench.ItemAdded",
        1,
        datetime.now(UTC).isoformat(),
        payload(n),
        "{}",
    )


def raw_command_path(path: Path, synchronous: Synchronous, streams: int, per_stream: int) -> float:
    """Per command: select the stream, insert one row, commit. Returns commands/s."""
    with closing(raw_connect(path, synchronous)) as conn:
        ids = [str(uuid4()) for _ in range(streams)]
        start = time.perf_counter()
        for round_number in range(per_stream):
            for stream_id in ids:
                rows = conn.execute(
                    "SELECT * FROM fabula_events WHERE stream_id = ? ORDER BY version", (stream_id,)
                ).fetchall()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(schema.INSERT_EVENT, raw_row(stream_id, len(rows) + 1, round_number))
                conn.execute("COMMIT")
        return streams * per_stream / (time.perf_counter() - start)


def raw_bulk(path: Path, synchronous: Synchronous, events: int) -> float:
    """Insert every row with executemany in one transaction. Returns events/s."""
    rows = [raw_row(f"bulk-{n // 100}", n % 100 + 1, n) for n in range(events)]
    with closing(raw_connect(path, synchronous)) as conn:
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(schema.INSERT_EVENT, rows)
        conn.execute("COMMIT")
        return events / (time.perf_counter() - start)


def raw_read_all(path: Path) -> float:
    """Fetch every row of the log in pages of 1000, without decoding. Returns events/s."""
    with closing(sqlite3.connect(path)) as conn:
        start = time.perf_counter()
        count = after = 0
        while rows := conn.execute(schema.READ_ALL, (after, 1000)).fetchall():
            count += len(rows)
            after = rows[-1][0]
        return count / (time.perf_counter() - start)


# -- fabula workloads --------------------------------------------------------------


async def command_path(
    store: fabula.EventStore, streams: int, per_stream: int, tasks: int
) -> float:
    """Get, add one line, save: `streams` x `per_stream` commands over `tasks` tasks."""
    repo = fabula.Repository(store)
    ids = [uuid4() for _ in range(streams)]

    async def worker(mine: list[UUID]) -> None:
        for round_number in range(per_stream):
            for basket_id in mine:
                if round_number == 0:
                    basket = Basket(id=basket_id)
                else:
                    basket = await repo.get(Basket, basket_id)
                basket.add(round_number)
                await repo.save(basket)

    start = time.perf_counter()
    await asyncio.gather(*(worker(ids[k::tasks]) for k in range(tasks)))
    return streams * per_stream / (time.perf_counter() - start)


async def bulk(store: fabula.EventStore, events: int) -> float:
    """Append `events` in batches of 100 to fresh streams. Returns events/s."""
    batches = []
    for b in range(events // 100):
        basket = Basket(id=uuid4())
        for n in range(100):
            basket.add(b * 100 + n)
        batches.append(basket.pending_events)
    start = time.perf_counter()
    for batch in batches:
        await store.append(str(batch[0].aggregate_id), batch, expected_version=0)
    return events / (time.perf_counter() - start)


async def median_ms(action: Callable[[], Awaitable[object]], repeat: int) -> float:
    """The median wall time of `action`, in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def load(store: SQLiteEventStore, events: int, repeat: int) -> tuple[float, float]:
    """Median ms to load a Basket of `events` events, replayed, then from a snapshot."""
    basket = Basket(id=uuid4())
    for n in range(events):
        basket.add(n)
    await fabula.Repository(store).save(basket)
    plain = fabula.Repository(store)
    replay = await median_ms(lambda: plain.get(Basket, basket.id), repeat)
    snapshots = fabula.Repository(store, snapshot_every={Basket: events})
    await store.save_snapshot(snapshots.snapshots.encode(await plain.get(Basket, basket.id)))
    assert (await snapshots.get(Basket, basket.id)) == (await plain.get(Basket, basket.id))  # noqa: S101
    snap = await median_ms(lambda: snapshots.get(Basket, basket.id), repeat * 10)
    return replay, snap


async def read_all(store: fabula.EventStore) -> tuple[int, float]:
    """Read and decode the whole log in pages of 1000. Returns (events, events/s)."""
    start = time.perf_counter()
    count = after = 0
    while page := await store.read_all(after=after, limit=1000):
        count += len(page)
        after = page[-1].position
    return count, count / (time.perf_counter() - start)


# -- projections -----------------------------------------------------------------------


class BasketSummary(fabula.Projection[sqlite3.Connection]):
    """The orders-summary shape: one row per basket, one per basket and SKU."""

    name = "basket_summary"
    tables = ("basket_summary", "basket_lines")

    def setup(self, tx: sqlite3.Connection) -> None:
        """Create the two read-model tables."""
        tx.execute(
            "CREATE TABLE IF NOT EXISTS basket_summary "
            "(basket_id TEXT PRIMARY KEY, lines INTEGER NOT NULL, total TEXT NOT NULL)"
        )
        tx.execute(
            "CREATE TABLE IF NOT EXISTS basket_lines (basket_id TEXT, sku TEXT, "
            "quantity INTEGER NOT NULL, PRIMARY KEY (basket_id, sku))"
        )

    @fabula.handles
    def _added(self, event: ItemAdded, tx: sqlite3.Connection) -> None:
        basket_id = str(event.aggregate_id)
        amount = str(event.unit_price * event.quantity)
        tx.execute(
            "INSERT INTO basket_summary VALUES (?, 1, ?) ON CONFLICT (basket_id) DO UPDATE SET "
            "lines = lines + 1, total = CAST(total AS REAL) + excluded.total",
            (basket_id, amount),
        )
        tx.execute(
            "INSERT INTO basket_lines VALUES (?, ?, ?) ON CONFLICT (basket_id, sku) "
            "DO UPDATE SET quantity = quantity + excluded.quantity",
            (basket_id, event.sku, event.quantity),
        )


async def prepare_log(path: Path, events: int) -> None:
    """Append `events` events, 1,000 per append, to 1,000 baskets."""
    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        baskets = [Basket(id=uuid4()) for _ in range(1000)]
        for n in range(events // 1000):
            basket = baskets[n % len(baskets)]
            for k in range(1000):
                basket.add(n * 1000 + k)
            await fabula.Repository(store).save(basket)


async def project(path: Path, *, rebuild: bool) -> float:
    """Catch the basket summary up from position 0, or rebuild it. Returns events/s."""
    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        head = await store.head_position()
        projector = fabula.Projector(store, [BasketSummary()], batch_size=1000)
        start = time.perf_counter()
        await (projector.rebuild(BasketSummary.name) if rebuild else projector.catch_up())
        return head / (time.perf_counter() - start)


def project_in_child(path: Path, *, rebuild: bool) -> tuple[float, float]:
    """Run `project` in a fresh process; returns (events/s, that process's peak RSS in MiB)."""
    mode = "--rebuild" if rebuild else "--project"
    output = subprocess.run(  # noqa: S603 - this very script
        [sys.executable, __file__, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate, peak = json.loads(output.strip().splitlines()[-1])
    return float(rate), float(peak)


def projection_rows(directory: Path, *, quick: bool, decode_rate: float) -> list[Row]:
    """P1 catch-up and P2 rebuild: rates, and the peak RSS of processes doing only that.

    P1's baseline is `decode_rate`, W4's rate of the same run: what reading
    and decoding the log costs before any projection work.
    """
    sizes = (20_000, 100_000) if quick else (200_000, 1_000_000)
    rows = []
    for label, size in zip(("P1", "P2"), sizes, strict=True):
        path = directory / f"p-{size}.db"
        asyncio.run(prepare_log(path, size))
        rebuild = label == "P2"
        rate, peak = project_in_child(path, rebuild=rebuild)
        if rebuild:
            rows.append(Row(f"P2 rebuild {size:,} events", rate, None, "ev/s", "-"))
        else:
            workload = f"P1 catch-up {size:,} events (baseline: W4's decode)"
            rows.append(Row(workload, rate, decode_rate, "ev/s", ">= 0.90"))
        memory_target = "flat in size" if label == "P1" else "< 150 MiB"
        rows.append(Row(f"{label} peak RSS of that process", peak, None, "MiB", memory_target))
        path.unlink()
    return rows


# -- the report ------------------------------------------------------------------------


@attrs.frozen
class Row:
    """One line of the report."""

    workload: str
    fabula: float
    raw: float | None
    unit: str
    target: str

    def ratio(self) -> str:
        """Return fabula / raw, or a dash when there is no baseline."""
        return "-" if self.raw is None else f"{self.fabula / self.raw:.2f}"


def print_table(rows: list[Row], baseline: str = "raw sqlite3") -> None:
    """Print the rows as an aligned table."""
    header = ("workload", "fabula", baseline, "ratio", "target")

    def cell(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        return f"{value:.3f} ms" if unit == "ms" else f"{value:,.0f} {unit}"

    cells = [header] + [
        (r.workload, cell(r.fabula, r.unit), cell(r.raw, r.unit), r.ratio(), r.target) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for number, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


async def run(directory: Path, *, quick: bool) -> list[Row]:
    """Run every workload and its baseline; returns the report rows."""
    scale = 10 if quick else 1
    streams, per_stream = 2000 // scale, 10
    concurrent_streams = 400 // scale
    rows = []

    store = SQLiteEventStore(directory / "w1.db", synchronous="NORMAL")
    w1 = await command_path(store, streams, per_stream, tasks=1)
    await store.close()
    raw_w1 = raw_command_path(directory / "raw-w1.db", "NORMAL", streams, per_stream)
    rows.append(Row("W1 command path, NORMAL", w1, raw_w1, "cmd/s", ">= 0.40"))

    store = SQLiteEventStore(directory / "w1c.db", synchronous="FULL")
    w1c = await command_path(store, concurrent_streams, per_stream, tasks=16)
    await store.close()
    raw_full = raw_command_path(directory / "raw-w1c.db", "FULL", concurrent_streams // 2, 5)
    rows.append(Row("W1c 16 tasks, FULL", w1c, raw_full, "cmd/s", ">= 1.50"))

    store = SQLiteEventStore(directory / "w2.db", synchronous="NORMAL")
    w2 = await bulk(store, 10_000)
    await store.close()
    raw_w2 = raw_bulk(directory / "raw-w2.db", "NORMAL", 10_000)
    rows.append(Row("W2 bulk append x100, NORMAL", w2, raw_w2, "ev/s", ">= 0.35"))

    store = SQLiteEventStore(directory / "w2.db", synchronous="NORMAL")
    replay, snap = await load(store, 1000, repeat=30 if quick else 100)
    rows.append(Row("W3 load 1,000 events", replay, None, "ms", "-"))
    rows.append(Row("W3 load from snapshot", snap, None, "ms", "-"))
    events, w4 = await read_all(store)
    await store.close()
    raw_w4 = raw_read_all(directory / "w2.db")
    rows.append(Row(f"W4 read_all + decode ({events:,})", w4, raw_w4, "ev/s", ">= 0.35"))
    return rows


def main() -> None:
    """Run the suite and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke test)")
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rebuild", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.project or arguments.rebuild:  # the child process of project_in_child
        path = arguments.project or arguments.rebuild
        rate = asyncio.run(project(path, rebuild=arguments.rebuild is not None))
        print(json.dumps([rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
        return
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="fabula-bench-") as directory:
        started = time.perf_counter()
        rows = asyncio.run(run(Path(directory), quick=arguments.quick))
        decode_rate = next(row.fabula for row in rows if row.workload.startswith("W4"))
        rows += projection_rows(Path(directory), quick=arguments.quick, decode_rate=decode_rate)
        elapsed = time.perf_counter() - started
    python = sys.version.split()[0]
    print(
        f"fabula {fabula.__version__}, Python {python}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    print()
    print_table(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"peak RSS {peak:.0f} MiB; {elapsed:.0f} s in all")


if __name__ == "__main__":
    main()
