"""A child process for the SQLite crash and multi-process tests.

python sqlite_child.py crash PATH SYNCHRONOUS SEED
    appends batches of 1-5 events to a few streams forever, printing one
    line per acknowledged append: "ack STREAM VERSION POSITION ID,ID,...".
python sqlite_child.py contend PATH NAME COUNT
    appends COUNT single events to shared streams, reading each stream's
    version first and retrying on ConcurrencyError; prints "ack ..." lines.
"""

import asyncio
import random
import sys
from decimal import Decimal

from fabula import ConcurrencyError, ExpectedVersion, default_registry
from fabula.sqlite import SQLiteEventStore
from fabula.testing import Deposited, register_contract_events

register_contract_events(default_registry)

STREAMS = ["acc-1", "acc-2", "acc-3"]


def ack(stream_id: str, version: int, position: int, events: list[Deposited]) -> None:
    ids = ",".join(str(e.event_id) for e in events)
    sys.stdout.write(f"ack {stream_id} {version} {position} {ids}\n")
    sys.stdout.flush()


async def crash(path: str, synchronous: str, seed: int) -> None:
    rng = random.Random(seed)
    store = SQLiteEventStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    batch_number = 0
    while True:
        stream_id = rng.choice(STREAMS)
        size = rng.randint(1, 5)
        batch_number += 1
        tag = f"{seed}-{batch_number}"
        events = [
            Deposited(amount=Decimal(rng.randint(1, 999)), note=f"{tag}:{i}/{size}")
            for i in range(size)
        ]
        result = await store.append(stream_id, events, expected_version=ExpectedVersion.ANY)
        ack(stream_id, result.version, result.position, events)


async def contend(path: str, name: str, count: int, synchronous: str) -> None:
    rng = random.Random(name)
    store = SQLiteEventStore(path, busy_timeout=30, synchronous=synchronous)  # type: ignore[arg-type]
    for n in range(count):
        stream_id = rng.choice(STREAMS)
        event = Deposited(amount=Decimal(n), note=name)
        while True:
            version = len(await store.read_stream(stream_id))
            try:
                result = await store.append(stream_id, [event], expected_version=version)
            except ConcurrencyError:
                continue
            ack(stream_id, result.version, result.position, [event])
            break
    await store.close()


def main() -> None:
    command, path, *rest = sys.argv[1:]
    if command == "crash":
        asyncio.run(crash(path, rest[0], int(rest[1])))
    else:
        asyncio.run(contend(path, rest[0], int(rest[1]), rest[2]))


if __name__ == "__main__":
    main()
