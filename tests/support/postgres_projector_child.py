"""A projector process for the PostgreSQL takeover test.

python postgres_projector_child.py URL SCHEMA

Runs the Balances projection until killed, printing "active" when this
process holds the projection's lease.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabula import Projector
from fabula.postgres import PostgresEventStore
from tests.support.postgres import Balances


async def main(url: str, schema: str) -> None:
    async with PostgresEventStore(url, schema=schema, poll_interval=0.1) as store:
        projector = Projector(store, [Balances()], batch_size=20)
        running = asyncio.create_task(projector.run())
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        state = "standby"
        while not running.done():
            (status,) = await projector.status()
            if status.state != state:
                state = status.state
                sys.stdout.write(f"{state}\n")
                sys.stdout.flush()
            await asyncio.sleep(0.02)
        running.result()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
