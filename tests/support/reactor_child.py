"""A reactor process for the kill tests: `Mirror` and `Pairs` on SQLite or PostgreSQL.

python reactor_child.py sqlite PATH
python reactor_child.py postgres URL SCHEMA

Runs the reactions until killed, printing "ready", then each state the
mirror reaction takes ("running", "standby", ...).
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fabula
from fabula.sqlite import SQLiteEventStore
from fabula.testing import register_contract_events
from tests.support.reactions import Mirror, Pairs, make_bus


def open_store(argv: list[str]) -> fabula.Store:
    if argv[0] == "sqlite":
        return SQLiteEventStore(argv[1])
    from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - psycopg only when asked

    return PostgresEventStore(argv[1], schema=argv[2], poll_interval=0.05)


async def main(argv: list[str]) -> None:
    register_contract_events(fabula.default_registry)
    store = open_store(argv)
    try:
        reactor = fabula.Reactor(
            store, make_bus(store), [Mirror(pause=0.002), Pairs()], idle_wait=0.05
        )
        running = asyncio.create_task(reactor.run())
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        state = "stopped"
        while not running.done():
            status = {s.name: s.state for s in await reactor.status()}
            if status["mirror"] != state:
                state = status["mirror"]
                sys.stdout.write(f"{state}\n")
                sys.stdout.flush()
            await asyncio.sleep(0.02)
        running.result()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
