"""How large SQLite's write-ahead log grows under sustained writers and a reader.

    python benchmarks/wal_growth.py [SECONDS] [--wal-limit BYTES]

Sixteen writers append batches of five ~400-byte events to streams of their
own for SECONDS while a reader follows the log; the WAL's size is sampled
every 50 ms. Prints the events appended, the database's size and the WAL's
largest and last sizes, at FULL and at NORMAL.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from fabula.sqlite import SQLiteEventStore, Synchronous
from fabula.testing import deposit


async def measure(seconds: float, synchronous: Synchronous, wal_limit: int | None) -> str:
    """Run the load once; return a line describing it."""
    folder = Path(tempfile.mkdtemp(prefix="fabula-wal-"))
    path = folder / "events.db"
    store = (
        SQLiteEventStore(path, synchronous=synchronous)
        if wal_limit is None
        else SQLiteEventStore(path, synchronous=synchronous, wal_limit=wal_limit)
    )
    wal = Path(f"{path}-wal")
    stop = time.monotonic() + seconds
    appended = 0
    sizes: list[int] = []

    async def write(n: int) -> None:
        nonlocal appended
        version = 0
        while time.monotonic() < stop:
            batch = [deposit(note="x" * 300) for _ in range(5)]
            await store.append(f"s-{n}", batch, expected_version=version)
            version += 5
            appended += 5
            sizes.append(wal.stat().st_size)  # noqa: ASYNC240 - one stat per append, on purpose

    async def read() -> None:
        after = 0
        while time.monotonic() < stop:
            page = await store.read_all(after=after, limit=200)
            if page:
                after = page[-1].position
            await asyncio.sleep(0)

    started = time.monotonic()
    await asyncio.gather(*(write(n) for n in range(16)), read())
    took = time.monotonic() - started
    size = path.stat().st_size
    await store.close()
    limit = "default" if wal_limit is None else f"{wal_limit / 2**20:g} MiB"
    return (
        f"{synchronous:<6} wal_limit {limit}: {appended:,} events in {took:.1f} s "
        f"({appended / took:,.0f}/s); database {size / 1e6:.1f} MB; "
        f"WAL largest {max(sizes) / 1e6:.1f} MB, last {sizes[-1] / 1e6:.1f} MB"
    )


def main() -> None:
    """Run the load at FULL and at NORMAL and print what it did to the WAL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=10.0)
    parser.add_argument("--wal-limit", type=int, default=None, help="bytes (default: the store's)")
    arguments = parser.parse_args()
    for synchronous in ("FULL", "NORMAL"):
        print(asyncio.run(measure(arguments.seconds, synchronous, arguments.wal_limit)))


if __name__ == "__main__":
    main()
