"""Reaction throughput beside the plain command path, in one run (SQLite, NORMAL).

    nox -s bench            # or: python benchmarks/bench_reactions.py [--quick]

R1: a reaction handles each of N logged events by sending one command
(keyed, through `Idempotency`) that appends one event. Its baseline is the
plain command path of the same run: the same N keyed commands dispatched
straight to the bus by as many tasks as the reactor runs lanes at once.
Both count commands committed per second; the ratio is what following
the log costs a command: reading and decoding the events, the lanes, and
the checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs

import fabula
from fabula.sqlite import SQLiteEventStore

CONCURRENCY = 8


@fabula.event("bench.Ordered")
@attrs.frozen
class Ordered(fabula.DomainEvent[str]):
    """What the reaction reacts to."""

    units: int


@fabula.event("bench.Counted")
@attrs.frozen
class Counted(fabula.DomainEvent[str]):
    """What each command appends."""

    units: int


@attrs.define
class Counter(fabula.Aggregate[str]):
    """One per source stream: counts what it was told."""

    total: int = 0

    @fabula.apply
    def _counted(self, event: Counted) -> None:
        self.total += event.units


@attrs.frozen(kw_only=True)
class Count(fabula.Command[None]):
    """Append one `Counted` to a counter."""

    counter: str
    units: int


def make_bus(store: fabula.Store) -> fabula.CommandBus:
    """The bus both paths use: idempotency, and the one handler."""
    repo = fabula.Repository(store)
    bus = fabula.CommandBus()
    bus.use(fabula.Idempotency(store))

    async def count(command: Count) -> None:
        try:
            counter = await repo.get(Counter, command.counter)
        except fabula.AggregateNotFoundError:
            counter = Counter(id=command.counter)
        counter.record(Counted(units=command.units))
        await repo.save(counter)

    bus.register(Count, count)
    return bus


class Counting(fabula.Reaction):
    """One command per `Ordered`."""

    name = "counting"

    @fabula.reacts
    async def _ordered(self, event: Ordered, ctx: fabula.ReactionContext) -> None:
        await ctx.send(Count(counter=f"count-{ctx.recorded.stream_id}", units=event.units))


async def fill(store: fabula.Store, streams: int, per_stream: int) -> None:
    """`streams` x `per_stream` `Ordered` events, interleaved across the streams."""
    for n in range(per_stream):
        for s in range(streams):
            await store.append(f"order-{s}", [Ordered(units=n)], expected_version=n)


async def reaction_rate(path: Path, streams: int, per_stream: int) -> float:
    """R1: commands per second sent by a reactor catching up on the filled log."""
    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        await fill(store, streams, per_stream)
        reactor = fabula.Reactor(store, make_bus(store), [Counting()], concurrency=CONCURRENCY)
        start = time.perf_counter()
        await reactor.catch_up()
        return streams * per_stream / (time.perf_counter() - start)


async def command_rate(path: Path, streams: int, per_stream: int) -> float:
    """The baseline: the same keyed commands, dispatched by `CONCURRENCY` tasks."""
    async with SQLiteEventStore(path, synchronous="NORMAL") as store:
        bus = make_bus(store)
        ids = [f"order-{s}" for s in range(streams)]

        async def worker(mine: list[str]) -> None:
            for n in range(per_stream):
                for stream in mine:
                    key = f"bench:{stream}:{n}"
                    await bus.dispatch(
                        Count(counter=f"count-{stream}", units=n, idempotency_key=key)
                    )

        start = time.perf_counter()
        await asyncio.gather(*(worker(ids[k::CONCURRENCY]) for k in range(CONCURRENCY)))
        return streams * per_stream / (time.perf_counter() - start)


def main() -> None:
    """Run R1 and its baseline in alternating rounds; print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the work (smoke test)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    arguments = parser.parse_args()
    streams, per_stream = (40, 10) if arguments.quick else (400, 10)
    reactions, commands = [], []
    with tempfile.TemporaryDirectory(prefix="fabula-bench-r-") as folder:
        for number in range(arguments.rounds):
            commands.append(
                asyncio.run(command_rate(Path(folder) / f"c{number}.db", streams, per_stream))
            )
            reactions.append(
                asyncio.run(reaction_rate(Path(folder) / f"r{number}.db", streams, per_stream))
            )
    reaction, command = statistics.median(reactions), statistics.median(commands)
    events = streams * per_stream
    print(f"fabula {fabula.__version__}, Python {sys.version.split()[0]}, SQLite NORMAL")
    print(f"R1 reaction, one keyed command per event ({events:,} events, {CONCURRENCY} lanes)")
    print(f"  reaction path       {reaction:>9,.0f} cmd/s  (rounds: {_rounds(reactions)})")
    print(f"  plain command path  {command:>9,.0f} cmd/s  (rounds: {_rounds(commands)})")
    print(f"  ratio               {reaction / command:>9.2f}      target >= 0.80")


def _rounds(rates: list[float]) -> str:
    return ", ".join(f"{rate:,.0f}" for rate in rates)


if __name__ == "__main__":
    main()
