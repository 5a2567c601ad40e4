"""Where one caller's command goes on SQLite: the disk sync, the hand-off, the work.

    python benchmarks/command_floor.py [--rounds N]

Runs C1's command path (get, add one line, save; 300 aggregates x 10) on
a SQLite store five ways, alternating over the rounds, and prints the
median microseconds per command of each:

- fabula at FULL, as shipped: an append that is still alone after one
  turn of the event loop commits on the loop; appends that meet in the
  queue commit together in the writer's thread;
- fabula at FULL committing on the loop at once, without that turn (a
  diagnostic: it sets a private switch of the writer, to price the turn);
- fabula at NORMAL (no disk sync in the commit);
- raw sqlite3 at FULL and at NORMAL (`bench.raw_command_path`).

FULL minus NORMAL is what the disk sync costs each; fabula's two FULL
rows differ by what the turn of the loop costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
from bench import Basket

import fabula
from fabula.sqlite import SQLiteEventStore, Synchronous

STREAMS, ROUNDS = 300, 10


async def fabula_commands(path: Path, synchronous: Synchronous, *, on_loop: bool) -> float:
    """C1's command path on a new store; returns commands/s."""
    async with SQLiteEventStore(path, synchronous=synchronous) as store:
        if on_loop:
            store._writer._commit_inline = True  # noqa: SLF001 - the diagnostic itself
        repo = fabula.Repository(store)
        baskets = [Basket.new_id() for _ in range(STREAMS)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        for round_number in range(ROUNDS):
            for basket_id in baskets:
                basket = (
                    Basket(id=basket_id) if round_number == 0 else await repo.get(Basket, basket_id)
                )
                basket.add(round_number)
                await repo.save(basket)
        return STREAMS * ROUNDS / (loop.time() - start)


def main() -> None:
    """Run each way `--rounds` times, alternating, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per way (median)")
    arguments = parser.parse_args()
    ways: dict[str, Callable[[Path], float]] = {
        "fabula, FULL": lambda p: asyncio.run(fabula_commands(p, "FULL", on_loop=False)),
        "fabula, FULL, no turn before commit": lambda p: asyncio.run(
            fabula_commands(p, "FULL", on_loop=True)
        ),
        "fabula, NORMAL": lambda p: asyncio.run(fabula_commands(p, "NORMAL", on_loop=False)),
        "raw sqlite3, FULL": lambda p: bench.raw_command_path(p, "FULL", STREAMS, ROUNDS),
        "raw sqlite3, NORMAL": lambda p: bench.raw_command_path(p, "NORMAL", STREAMS, ROUNDS),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="fabula-floor-") as scratch:
        for number in range(arguments.rounds):
            for index, (name, way) in enumerate(ways.items()):
                rates[name].append(way(Path(scratch) / f"{number}-{index}.db"))
    print(f"median of {arguments.rounds} rounds, {STREAMS} aggregates x {ROUNDS} commands")
    for name, measured in rates.items():
        rate = statistics.median(measured)
        print(f"{name:34s} {rate:7,.0f} cmd/s  {1e6 / rate:5.0f} us per command")


if __name__ == "__main__":
    main()
