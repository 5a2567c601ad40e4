"""The command path `telemetry_child.py` measures (imported once the mode is set up)."""

from __future__ import annotations

import attrs

import fabula


@fabula.event("bench.Counted")
@attrs.frozen
class Counted(fabula.DomainEvent[str]):
    """What each command appends."""

    units: int


@attrs.define
class Counter(fabula.Aggregate[str]):
    """One per counter id."""

    total: int = 0

    @fabula.apply
    def _counted(self, event: Counted) -> None:
        self.total += event.units


@attrs.frozen(kw_only=True)
class Count(fabula.Command[None]):
    """Append one `Counted` to a counter."""

    counter: str


def make_bus(store: fabula.Store) -> fabula.CommandBus:
    """Correlation, idempotency, and the one handler: load (or open) the counter, append."""
    repo = fabula.Repository(store)
    bus = fabula.CommandBus()
    bus.use(fabula.Correlation())
    bus.use(fabula.Idempotency(store))

    async def handle(command: Count) -> None:
        try:
            counter = await repo.get(Counter, command.counter)
        except fabula.AggregateNotFoundError:
            counter = Counter(id=command.counter)
        counter.record(Counted(units=1))
        await repo.save(counter)

    bus.register(Count, handle)
    return bus
