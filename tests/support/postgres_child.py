"""A writer process for the PostgreSQL many-writers test.

python postgres_child.py URL SCHEMA WRITER EVENTS SEED

Appends EVENTS events in batches of 1-4 to random streams (some shared
by every writer, some its own) with exact expected versions, retrying on
conflict. Prints one JSON line: the event ids it stored with their
positions, and each conflict it saw with the versions involved.
"""

import asyncio
import json
import random
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabula import ConcurrencyError, default_registry
from fabula.postgres import PostgresEventStore
from fabula.testing import Deposited, register_contract_events

register_contract_events(default_registry)


async def main(url: str, schema: str, writer: int, events: int, seed: int) -> None:
    rng = random.Random(seed)
    stored: list[tuple[str, int, str]] = []
    conflicts: list[tuple[str, int, int]] = []
    versions: dict[str, int] = {}
    async with PostgresEventStore(url, schema=schema, max_size=2) as store:
        written = 0
        while written < events:
            if rng.random() < 0.3:
                stream = f"shared-{rng.randrange(5)}"
            else:
                stream = f"own-{writer}-{rng.randrange(20)}"
            size = min(rng.randint(1, 4), events - written)
            batch = [
                Deposited(amount=Decimal(writer * 100_000 + written + k), note=f"w{writer}")
                for k in range(size)
            ]
            while True:
                expected = versions.get(stream, 0)
                try:
                    result = await store.append(stream, batch, expected_version=expected)
                except ConcurrencyError as error:
                    conflicts.append((stream, expected, int(error.actual)))
                    versions[stream] = int(error.actual)
                    continue
                break
            versions[stream] = result.version
            # One append's events have consecutive positions, the last one returned.
            stored.extend(
                (str(e.event_id), result.position - (size - 1 - k), stream)
                for k, e in enumerate(batch)
            )
            written += size
    json.dump({"stored": stored, "conflicts": conflicts}, sys.stdout)


if __name__ == "__main__":
    url, schema, writer, events, seed = sys.argv[1:]
    asyncio.run(main(url, schema, int(writer), int(events), int(seed)))
