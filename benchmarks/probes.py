"""Small measurements behind the choices in docs/performance.md, one per subcommand.

    python benchmarks/probes.py ids          # random vs time-ordered event ids, raw sqlite3
    python benchmarks/probes.py wal          # a commit's sync: WAL written over vs grown
    python benchmarks/probes.py reuse        # fabula's own WAL checkpoints on and off, by level
    python benchmarks/probes.py decode       # fabula's row decode vs a decoder written by hand
    python benchmarks/probes.py upserts      # a projection's two upserts: execute vs executemany
    python benchmarks/probes.py timestamps   # timestamps as ISO text vs integers, both ways

Each prints medians of a few repetitions, measured in one process; the
ratios matter, not the absolute figures, on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Basket, ItemAdded, payload

import fabula
from fabula import RecordedEvent
from fabula._events import EventMetadata
from fabula._uuids import new_event_id, uuid_from_bytes, uuid_from_hex
from fabula.sqlite import SQLiteEventStore, Synchronous
from fabula.sqlite import _schema as schema


def ids(scratch: Path) -> None:
    """WAL written and rate for 10,000 events in batches of 100 at FULL, per kind of id."""
    makers: dict[str, Callable[[], bytes]] = {
        "random (version 4)": lambda: uuid4().bytes,
        "time-ordered (version 7)": lambda: new_event_id().bytes,
    }
    for rep in range(2):
        for name, make in makers.items():
            path = scratch / f"ids-{rep}-{name[:4]}.db"
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the log keeps every frame
                for statement in schema.CREATE_SCHEMA:
                    conn.execute(statement)
                now = datetime.now(UTC).isoformat()
                batches = [
                    [
                        (f"s{b}", v + 1, make(), "bench.ItemAdded", 1, now, payload(v), "{}")
                        for v in range(100)
                    ]
                    for b in range(100)
                ]
                start = time.perf_counter()
                for rows in batches:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(schema.INSERT_EVENT, rows)
                    conn.execute("COMMIT")
                rate = 10_000 / (time.perf_counter() - start)
                wal = Path(f"{path}-wal").stat().st_size / 100 / 1024  # before close empties it
            print(f"{name:26s} {rate:8,.0f} events/s  {wal:5.0f} KiB of WAL per batch")


def wal(scratch: Path) -> None:
    """Median seconds of a one-row COMMIT at FULL: the WAL written over from its start, or grown.

    SQLite's own checkpoint every 1,000 pages lets it write the log from
    its start again (what fabula's writer does every 256 commits); with
    no checkpoint the log file grows with every commit.
    """
    for rep in range(2):
        for name, pages in (("written over", 1000), ("grown", 0)):
            path = scratch / f"wal-{rep}-{pages}.db"
            with closing(sqlite3.connect(path, isolation_level=None)) as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
                for statement in schema.CREATE_SCHEMA:
                    conn.execute(statement)
                now = datetime.now(UTC).isoformat()
                spent = []
                for n in range(3000):
                    row = (f"s{n % 300}", n // 300 + 1, new_event_id().bytes, "bench.ItemAdded",
                           1, now, payload(n), "{}")  # fmt: skip
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(schema.INSERT_EVENT, row)
                    start = time.perf_counter()
                    conn.execute("COMMIT")
                    spent.append(time.perf_counter() - start)
            print(f"WAL {name:13s} commit median {statistics.median(spent) * 1e6:5.0f} us")


def reuse(scratch: Path) -> None:
    """One caller's commands per second with the writer's own WAL checkpoints on and off.

    Medians of four alternating runs of `command_floor`'s command path at
    each synchronous level, the checkpoints forced on or off whatever the
    level (fabula takes them at FULL only).
    """
    import command_floor  # noqa: PLC0415 - the local benchmark module

    from fabula.sqlite import _checkpoints  # noqa: PLC0415 - patched below, for this probe only

    shipped = _checkpoints.Checkpoints.__init__
    for level in ("NORMAL", "FULL"):
        synchronous: Synchronous = "FULL" if level == "FULL" else "NORMAL"
        rates: dict[bool, list[float]] = {True: [], False: []}
        for run in range(4):
            for forced, rate in rates.items():

                def init(self: Any, *args: Any, forced: bool = forced, **options: Any) -> None:  # noqa: ANN401
                    shipped(self, *args, **{**options, "reuse": forced})

                _checkpoints.Checkpoints.__init__ = init  # type: ignore[method-assign]
                path = scratch / f"reuse-{level}-{run}-{forced}.db"
                try:
                    commands = command_floor.fabula_commands(path, synchronous, on_loop=False)
                    rate.append(asyncio.run(commands))
                finally:
                    _checkpoints.Checkpoints.__init__ = shipped  # type: ignore[method-assign]
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        print(f"{level:6s} checkpoints on {on:6,.0f} cmd/s, off {off:6,.0f} cmd/s")


def _hand_written(rows: list[Any]) -> list[RecordedEvent]:
    """The same rows decoded with every check left out: the floor of a decode in Python."""
    out = []
    empty = EventMetadata()
    aggregate_id = UUID(rows[0][1])
    for position, stream_id, version, raw_id, _, _, stamp, data, _ in rows:
        p = orjson.loads(data)
        event = ItemAdded(
            product_id=uuid_from_hex(p["product_id"].replace("-", "")),
            sku=p["sku"],
            quantity=p["quantity"],
            unit_price=Decimal(p["unit_price"]),
            warehouse=p["warehouse"],
            note=p["note"],
            aggregate_id=aggregate_id,
            version=version,
            event_id=uuid_from_bytes(raw_id),
            timestamp=datetime.fromisoformat(stamp),
            metadata=empty,
        )
        out.append(RecordedEvent(event, position, stream_id))
    return out


async def _decode(scratch: Path) -> None:
    async with SQLiteEventStore(scratch / "decode.db") as store:
        basket = Basket(id=uuid4())
        for n in range(1000):
            basket.add(n)
        await fabula.Repository(store).save(basket)
        query = (str(basket.id), 1, -1)
        times: dict[str, list[float]] = {"fetch": [], "fabula": [], "by hand": []}
        with closing(sqlite3.connect(store.path)) as conn:
            for _ in range(50):
                start = time.perf_counter()
                rows = conn.execute(schema.READ_STREAM, query).fetchall()
                fetched = time.perf_counter()
                mine = store._decode_rows(rows)  # noqa: SLF001 - the store's own decode
                decoded = time.perf_counter()
                theirs = _hand_written(rows)
                done = time.perf_counter()
                times["fetch"].append(fetched - start)
                times["fabula"].append(decoded - fetched)
                times["by hand"].append(done - decoded)
        assert [r.event for r in mine] == [r.event for r in theirs]  # noqa: S101
        for name, spent in times.items():
            print(f"{name:8s} {statistics.median(spent) * 1000:6.3f} us per row (1,000 rows)")


def decode(scratch: Path) -> None:
    """One stream's 1,000 rows: fetch, fabula's decode, and a decode written by hand."""
    asyncio.run(_decode(scratch))


def upserts(_: Path) -> None:
    """The basket-summary projection's two upserts for 1,000 events: execute vs executemany."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(
        "CREATE TABLE basket_summary (basket_id TEXT PRIMARY KEY, lines INTEGER, total TEXT)"
    )
    conn.execute(
        "CREATE TABLE basket_lines (basket_id TEXT, sku TEXT, quantity INTEGER, "
        "PRIMARY KEY (basket_id, sku))"
    )
    summary = (
        "INSERT INTO basket_summary VALUES (?, 1, ?) ON CONFLICT (basket_id) DO UPDATE SET "
        "lines = lines + 1, total = CAST(total AS REAL) + excluded.total"
    )
    lines = (
        "INSERT INTO basket_lines VALUES (?, ?, ?) ON CONFLICT (basket_id, sku) "
        "DO UPDATE SET quantity = quantity + excluded.quantity"
    )
    baskets = [str(uuid4()) for _ in range(100)]
    one: list[float] = []
    many: list[float] = []
    for batch in range(20):
        firsts = [(baskets[n % 100], "39.98") for n in range(1000)]
        seconds = [(baskets[n % 100], f"SKU-{batch}-{n}", 2) for n in range(1000)]
        conn.execute("BEGIN")
        start = time.perf_counter()
        for first, second in zip(firsts, seconds, strict=True):
            conn.execute(summary, first)
            conn.execute(lines, second)
        one.append(time.perf_counter() - start)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        start = time.perf_counter()
        conn.executemany(summary, firsts)
        conn.executemany(lines, seconds)
        many.append(time.perf_counter() - start)
        conn.execute("COMMIT")
    print(f"execute per event    {statistics.median(one) * 1000:5.2f} us per event (2 upserts)")
    print(f"executemany a batch  {statistics.median(many) * 1000:5.2f} us per event (2 upserts)")


def timestamps(_: Path) -> None:
    """Reading and writing a timestamp as ISO text (fabula's column) or as integer microseconds."""
    now = datetime.now(UTC)
    text = now.isoformat()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = (now - epoch) // timedelta(microseconds=1)
    cases = {
        "read ISO text": lambda: datetime.fromisoformat(text),
        "read integer (exact)": lambda: epoch + timedelta(microseconds=micros),
        "write ISO text": now.isoformat,
        "write integer": lambda: (now - epoch) // timedelta(microseconds=1),
    }
    for name, case in cases.items():
        best = min(timeit.repeat(case, number=100_000, repeat=5)) / 100_000
        print(f"{name:22s} {best * 1e9:6.0f} ns")


def main() -> None:
    """Run one probe."""
    probes: dict[str, Callable[[Path], None]] = {
        "ids": ids,
        "wal": wal,
        "reuse": reuse,
        "decode": decode,
        "upserts": upserts,
        "timestamps": timestamps,
    }
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=sorted(probes))
    arguments = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="fabula-probe-") as scratch:
        probes[arguments.probe](Path(scratch))


if __name__ == "__main__":
    main()
