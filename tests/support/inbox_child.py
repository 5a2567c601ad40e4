"""A consuming process for the kill tests: JetStream into an inbox on SQLite, handled at once.

python inbox_child.py DATABASE NATS_URL STREAM PREFIX

Each `<prefix>.v1.Deposited` message becomes a `Note` of its `n` in the
tally of its subject. Prints "ready" once running; runs until killed.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fabula
from fabula.nats import JetStreamConsumer
from fabula.sqlite import SQLiteEventStore
from fabula.testing import register_contract_events
from tests.support.reactions import Note, make_bus


def inbox(prefix: str) -> fabula.Inbox:
    """The tests' inbox: each deposit message noted once in its subject's tally."""

    async def note(message: fabula.IntegrationEvent, ctx: fabula.ReactionContext) -> None:
        await ctx.send(Note(tally=f"tally-{message.subject}", source=message.data["n"]))

    return fabula.Inbox("bank", {f"{prefix}.v1.Deposited": note})


async def main(database: str, url: str, stream: str, prefix: str) -> None:
    register_contract_events(fabula.default_registry)
    store = SQLiteEventStore(database)
    taker = inbox(prefix)
    consumer = JetStreamConsumer(url, stream=stream, durable="bank", batch=20, ack_wait=2.0)
    reactor = fabula.Reactor(
        store, make_bus(store), [taker], retry_delay=0.01, max_retry_delay=0.2, idle_wait=0.05
    )
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(consumer.run(taker, store))
            group.create_task(reactor.run())
            sys.stdout.write("ready\n")
            sys.stdout.flush()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
