"""Step 5: the same application on PostgreSQL: nothing changes but the store.

Run it with a server's URL: `python step5_postgres.py postgresql://user@host/db`.
It works in a schema of its own, `library_tutorial`, made afresh and dropped after.
"""

import asyncio
import sys

import psycopg  # the driver fabula[postgres] installs; here only to drop the schema
from step4_read_model import tour

from fabula.postgres import PostgresEventStore

SCHEMA = "library_tutorial"


async def main(url: str) -> None:
    """Run step 4's tour in a fresh schema on the server at `url`, then drop it."""

    async def drop() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")

    await drop()
    try:
        async with PostgresEventStore(url, schema=SCHEMA) as store:
            await tour(store)  # step 4's code, unchanged
    finally:
        await drop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
