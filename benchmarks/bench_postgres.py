"""fabula's PostgreSQL benchmarks: each workload beside raw psycopg, in one run.

    nox -s bench            # runs bench.py, then this (skipped without a server)
    python benchmarks/bench_postgres.py [--quick] [--url postgresql://...]

The raw baselines write the same rows into fabula's own tables (so the same
indexes) through psycopg directly: no validation, no JSON encoding, no
concurrency check, no objects. Every workload runs in a fresh schema that
is dropped afterwards. Ratios compare rates measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import attrs
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Basket, Row, bulk, command_path, payload, print_table, read_all

import fabula
from fabula._uuids import new_event_id
from fabula.postgres import PostgresEventStore
from fabula.postgres import _schema as schema

DEFAULT_URL = os.environ.get("FABULA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def new_schema() -> str:
    """A fresh schema name."""
    return f"fabula_bench_{uuid.uuid4().hex[:12]}"


def drop(url: str, name: str) -> None:
    """Drop a benchmark schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def raw_schema(url: str) -> str:
    """Create fabula's tables in a fresh schema (through the store) and return its name."""
    name = new_schema()
    async with PostgresEventStore(url, schema=name):
        pass
    return name


def raw_insert(name: str) -> str:
    """One event row, positioned as fabula positions it."""
    return (
        f'INSERT INTO "{name}".fabula_events (position, stream_id, version, event_id, type, '  # noqa: S608
        "schema_version, timestamp, data, metadata) VALUES "
        f"((pg_current_xact_id()::text::bigint << {schema.TX_SHIFT}) + %s, "
        "%s, %s, %s, %s, 1, %s, %s, '{}')"
    )


def raw_command_path(url: str, name: str, streams: int, per_stream: int) -> float:
    """Per command: select the stream's rows, insert one row, commit. Returns commands/s."""
    insert = raw_insert(name)
    select = f'SELECT * FROM "{name}".fabula_events WHERE stream_id = %s ORDER BY version'  # noqa: S608
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [str(uuid.uuid4()) for _ in range(streams)]
        start = time.perf_counter()
        for round_number in range(per_stream):
            for stream_id in ids:
                rows = conn.execute(select, (stream_id,)).fetchall()
                with conn.transaction():
                    conn.execute(
                        insert,
                        (
                            1,
                            stream_id,
                            len(rows) + 1,
                            new_event_id(),
                            "bench.ItemAdded",
                            datetime.now(UTC),
                            payload(round_number),
                        ),
                    )
        return streams * per_stream / (time.perf_counter() - start)


def raw_bulk(url: str, name: str, events: int) -> float:
    """Insert every row with executemany in one transaction. Returns events/s."""
    insert = raw_insert(name)
    rows = [
        (n + 1, f"bulk-{n // 100}", n % 100 + 1, new_event_id(), "bench.ItemAdded",
         datetime.now(UTC), payload(n))
        for n in range(events)
    ]  # fmt: skip
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.executemany(insert, rows)
        conn.commit()
        return events / (time.perf_counter() - start)


def raw_read_all(url: str, name: str) -> float:
    """Fetch every row of the log in pages of 1000, without decoding. Returns events/s."""
    query = (
        f'SELECT * FROM "{name}".fabula_events WHERE position > %s '  # noqa: S608
        "ORDER BY position LIMIT 1000"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        count = after = 0
        while rows := conn.execute(query, (after,)).fetchall():
            count += len(rows)
            after = rows[-1][0]
        return count / (time.perf_counter() - start)


async def writer(url: str, name: str, tag: str, commands: int) -> float:
    """One W5 writer: `commands` single-event appends to streams of its own. Returns cmd/s."""
    async with PostgresEventStore(url, schema=name, max_size=2) as store:
        streams = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}-{n}")) for n in range(20)]
        versions = dict.fromkeys(streams, 0)
        start = time.perf_counter()
        for n in range(commands):
            stream = streams[n % len(streams)]
            basket = Basket(id=stream)
            basket.add(n)
            event = attrs.evolve(basket.pending_events[0], version=0)  # unversioned
            await store.append(stream, [event], expected_version=versions[stream])
            versions[stream] += 1
        return commands / (time.perf_counter() - start)


async def raw_writer(url: str, name: str, tag: str, commands: int) -> float:
    """The W5 baseline's writer: single-row inserts with async psycopg, each its own commit."""
    insert = raw_insert(name)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for n in range(commands):
            row = (1, f"{tag}-{n % 20}", n // 20 + 1, new_event_id(), "bench.ItemAdded",
                   datetime.now(UTC), payload(n))  # fmt: skip
            await conn.execute(insert, row)
        return commands / (time.perf_counter() - start)


def writers_in_processes(
    url: str, name: str, processes: int, commands: int, *, raw: bool = False
) -> float:
    """Run W5 writers (fabula's, or raw psycopg's) in `processes` processes at once.

    Returns their total commands per second.
    """
    mode = "--raw-writer" if raw else "--writer"
    started = time.perf_counter()
    children = [
        subprocess.Popen(  # noqa: S603 - this script
            [sys.executable, __file__, mode, url, name, f"p{n}", str(commands)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        msg = f"a W5 writer failed: {outputs}"
        raise RuntimeError(msg)
    spans = [json.loads(out)["seconds"] for out in outputs]
    del started
    # Throughput while they all ran: all commands over the longest writer's span.
    return processes * commands / max(spans)


async def run(url: str, *, quick: bool) -> list[Row]:
    """Run every workload and its baseline; returns the report rows."""
    scale = 10 if quick else 1
    streams, per_stream = 500 // scale, 10
    rows: list[Row] = []
    made: list[str] = []
    try:
        made.append(new_schema())
        async with PostgresEventStore(url, schema=made[-1]) as store:
            w1 = await command_path(store, streams, per_stream, tasks=1)
        made.append(await raw_schema(url))
        raw_w1 = raw_command_path(url, made[-1], streams, per_stream)
        rows.append(Row("W1 command path", w1, raw_w1, "cmd/s", ">= 0.50"))

        made.append(new_schema())
        async with PostgresEventStore(url, schema=made[-1], max_size=16) as store:
            w1c = await command_path(store, streams, per_stream, tasks=16)
        rows.append(Row("W1c 16 tasks", w1c, raw_w1, "cmd/s", "-"))

        made.append(new_schema())
        async with PostgresEventStore(url, schema=made[-1]) as store:
            w2 = await bulk(store, 20_000 // scale)
            events, w4 = await read_all(store)
        made.append(await raw_schema(url))
        raw_w2 = raw_bulk(url, made[-1], 20_000 // scale)
        rows.append(Row("W2 bulk append x100", w2, raw_w2, "ev/s", ">= 0.40"))
        raw_w4 = raw_read_all(url, made[-2])
        rows.append(Row(f"W4 read_all + decode ({events:,})", w4, raw_w4, "ev/s", "-"))

        commands = 2000 // scale
        made.append(await raw_schema(url))
        single = writers_in_processes(url, made[-1], 1, commands)
        made.append(await raw_schema(url))
        four = writers_in_processes(url, made[-1], 4, commands)
        rows.append(Row("W5 4 writer processes (vs 1)", four, single, "cmd/s", ">= 2.00"))
        # The same with raw psycopg: how far this machine lets four async
        # Python writers and their server processes run in parallel.
        made.append(await raw_schema(url))
        raw_single = writers_in_processes(url, made[-1], 1, commands, raw=True)
        made.append(await raw_schema(url))
        raw_four = writers_in_processes(url, made[-1], 4, commands, raw=True)
        rows.append(Row("W5 raw psycopg: 4 vs 1 (ceiling)", raw_four, raw_single, "row/s", "-"))
    finally:
        for name in made:
            drop(url, name)
    return rows


def main() -> None:
    """Run the suite and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke test)")
    parser.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server")
    parser.add_argument("--writer", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--raw-writer", nargs=4, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    child = arguments.writer or arguments.raw_writer
    if child:  # a W5 child process
        url, name, tag, commands = child
        write = writer if arguments.writer else raw_writer
        start = time.perf_counter()
        asyncio.run(write(url, name, tag, int(commands)))
        print(json.dumps({"seconds": time.perf_counter() - start}))
        return
    try:
        with psycopg.connect(arguments.url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        print(f"PostgreSQL benchmarks skipped: no server at {arguments.url} ({exc})")
        return
    started = time.perf_counter()
    rows = asyncio.run(run(arguments.url, quick=arguments.quick))
    elapsed = time.perf_counter() - started
    server = version[0] if version else "?"
    print(f"fabula {fabula.__version__}, PostgreSQL {server}, psycopg {psycopg.__version__}")
    print()
    print_table(rows, baseline="raw psycopg")
    print()
    print(f"{elapsed:.0f} s in all")


if __name__ == "__main__":
    main()
