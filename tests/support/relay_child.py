"""A relay process for the kill tests: the contract suite's deposits, from SQLite to JetStream.

python relay_child.py DATABASE NATS_URL STREAM TYPE_PREFIX

Prints "ready" once the relay runs; relays until killed.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fabula
from fabula.nats import JetStreamPublisher
from fabula.sqlite import SQLiteEventStore
from fabula.testing import Deposited, register_contract_events
from tests.support.reactions import make_bus


def contract(prefix: str) -> fabula.IntegrationContract:
    """The deposits, published as `<prefix>.v1.Deposited` with their note as `n`."""
    made = fabula.IntegrationContract(source="urn:test:bank")
    made.add(Deposited, f"{prefix}.v1.Deposited", lambda e: {"n": int(e.note)})
    return made


async def main(database: str, url: str, stream: str, prefix: str) -> None:
    register_contract_events(fabula.default_registry)
    store = SQLiteEventStore(database)
    publisher = JetStreamPublisher(url, stream=stream, subjects=[f"{prefix}.v1.>"], timeout=1.0)
    relay = fabula.Relay("bank", contract(prefix), publisher)
    reactor = fabula.Reactor(
        store, make_bus(store), [relay], retry_delay=0.01, max_retry_delay=0.2, idle_wait=0.05
    )
    try:
        running = asyncio.create_task(reactor.run())
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await running
    finally:
        await publisher.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
