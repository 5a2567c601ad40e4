"""A timer-firing process for the PostgreSQL test: `Timers.run` on a schema until killed.

python timers_child.py URL SCHEMA

Prints "ready" once it fires timers. It claims a timer for one second, so
another process takes over the timers of a killed one quickly.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fabula
from fabula.postgres import PostgresEventStore
from tests.support.reactions import make_bus


async def main(url: str, schema: str) -> None:
    async with PostgresEventStore(url, schema=schema, poll_interval=0.05) as store:
        timers = fabula.Timers(store, make_bus(store), poll_interval=0.02, claim_for=1.0)
        running = asyncio.create_task(timers.run())
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await running


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
