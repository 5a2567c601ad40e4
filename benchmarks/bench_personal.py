"""What sealing personal data costs, as ratios of one run (SQLite, NORMAL).

    nox -s bench            # or: python benchmarks/bench_personal.py [--quick]

Two event classes with the same fields, one with two of them marked
`fabula.personal`, are appended (100 events a call) and read back with
`read_all` (pages of 1,000) from two stores in the same run, in alternating rounds. The
events belong to 1,000 subjects, so a page of the log needs many keys.
The ratios printed are "personal / plain" for appends and for reads
(the issue's target: reads >= 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import attrs

import fabula
from fabula.sqlite import SQLiteEventStore

SUBJECTS = 1000
BATCH = 100


@fabula.event("bench.personal.Plain")
@attrs.frozen(kw_only=True)
class Plain(fabula.DomainEvent[uuid.UUID]):
    """An order line with a customer's name and street, stored as they are."""

    customer_id: uuid.UUID
    name: str | None
    street: str | None
    sku: str
    quantity: int


@fabula.event("bench.personal.Personal")
@attrs.frozen(kw_only=True)
class Personal(fabula.DomainEvent[uuid.UUID]):
    """The same, with the name and street personal data of the customer."""

    customer_id: uuid.UUID
    name: str | None = attrs.field(metadata=fabula.personal("customer_id"))
    street: str | None = attrs.field(metadata=fabula.personal("customer_id"))
    sku: str
    quantity: int


def events(cls: type[Plain | Personal], count: int) -> list[list[Plain | Personal]]:
    """`count` events of `cls` in batches of one stream each, spread over the subjects."""
    customers = [uuid.uuid4() for _ in range(SUBJECTS)]
    batches = []
    for start in range(0, count, BATCH):
        order = uuid.uuid4()
        batches.append([
            cls(
                aggregate_id=order, customer_id=customers[(start + n) % SUBJECTS],
                name="Ada Lovelace", street="12 Analytical Row", sku="SKU-1", quantity=n,
            )
            for n in range(min(BATCH, count - start))
        ])  # fmt: skip
    return batches


async def measure(path: Path, batches: list[list[Plain | Personal]]) -> tuple[float, float]:
    """Events per second appended, then read with read_all, on a fresh store."""
    key = fabula.KeyEncryptionKey(b"b" * 32)
    async with SQLiteEventStore(path, synchronous="NORMAL", key_encryption_key=key) as store:
        total = sum(map(len, batches))
        started = time.perf_counter()
        for batch in batches:
            await store.append(str(batch[0].aggregate_id), batch, expected_version=0)
        appended = total / (time.perf_counter() - started)
        started, after, read = time.perf_counter(), 0, 0
        while page := await store.read_all(after=after, limit=1000):
            after, read = page[-1].position, read + len(page)
        reads = read / (time.perf_counter() - started)
        if read != total:
            msg = f"read {read} events of {total}"
            raise SystemExit(msg)
        return appended, reads


async def run(count: int, rounds: int) -> None:
    """Alternate the two classes over `rounds`; print medians and ratios."""
    rates: dict[str, list[tuple[float, float]]] = {"plain": [], "personal": []}
    with tempfile.TemporaryDirectory() as folder:
        for number in range(rounds):
            for name, cls in (("plain", Plain), ("personal", Personal)):
                path = Path(folder) / f"{name}-{number}.db"
                rates[name].append(await measure(path, events(cls, count)))
    medians = {
        name: (statistics.median(a for a, _ in found), statistics.median(r for _, r in found))
        for name, found in rates.items()
    }
    print(f"personal data: {count:,} events x {rounds} rounds, {SUBJECTS:,} subjects (SQLite)")
    for name, (append, read) in medians.items():
        print(f"  {name:<9} append {append:>9,.0f} events/s   read_all {read:>9,.0f} events/s")
    plain, personal = medians["plain"], medians["personal"]
    print(f"  append personal / plain: {personal[0] / plain[0]:.2f}")
    print(f"  read_all personal / plain: {personal[1] / plain[1]:.2f} (target >= 0.5)")


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke test)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    arguments = parser.parse_args()
    asyncio.run(run(2000 if arguments.quick else 20000, arguments.rounds))


if __name__ == "__main__":
    main()
