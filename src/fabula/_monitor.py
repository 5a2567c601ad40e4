"""The Monitor: measures lag, parked events and the PostgreSQL horizon, for metrics and people."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import attrs

from fabula._capabilities import Store
from fabula._guards import positive_number, utcnow
from fabula._metrics import Horizon, HorizonSource, observation, watch
from fabula._projections import Projector
from fabula._reactor import Reactor
from fabula.exceptions import FabulaError, StoreClosedError

__all__ = ["LagReading", "Monitor"]

logger = logging.getLogger("fabula.monitor")


@attrs.frozen
class LagReading:
    """What a `Monitor` measured of one projection or reaction.

    Attributes:
        kind: `projection` or `reaction` (relays and inboxes are reactions).
        name: Its name.
        lag: Events of its types after its checkpoint.
        age: Seconds since the oldest of them was written (0 with none).
        parked: Events parked (reactions, and projections that park).
    """

    kind: str
    name: str
    lag: int
    age: float
    parked: int


@attrs.define(eq=False)
class Monitor:
    """Measures lag, parked events and the PostgreSQL horizon for the metrics, every `interval`.

    Run it beside the projector and the reactor (`await monitor.run()`);
    its readings are the `fabula.lag`, `fabula.lag.age`, `fabula.parked`
    and `fabula.postgres.horizon.age` gauges. A horizon older than
    `horizon_warning` seconds is logged as a warning naming the backend's
    pid and application name, once per transaction.

    Args:
        store: The event store.
        projector: Its projections are measured (if given).
        reactor: Its reactions are measured (if given).
        interval: Seconds between measurements.
        horizon_warning: Seconds an open write transaction may hold readers
            back before a warning.
    """

    store: Store
    projector: Projector[Any] | None = None
    reactor: Reactor | None = None
    interval: float = attrs.field(default=5.0, validator=positive_number)
    horizon_warning: float = attrs.field(default=30.0, validator=positive_number)
    readings: list[LagReading] = attrs.field(init=False, factory=list)
    horizon: Horizon | None = attrs.field(init=False, default=None)
    _warned: int | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        watch(self)

    async def run(self) -> None:
        """Measure every `interval` seconds until cancelled (a store failure is logged)."""
        while True:
            try:
                await self.measure()
            except StoreClosedError:
                raise
            except FabulaError as exc:
                logger.warning("the monitor could not measure: %s", exc)
            await asyncio.sleep(self.interval)

    async def measure(self) -> list[LagReading]:
        """Measure now; return (and keep, for the gauges) the readings."""
        readings: list[LagReading] = []
        if self.projector is not None:
            types = {p.name: tuple(p.handlers()) for p in self.projector.projections}
            for status in await self.projector.status():
                age = await self._age(status.checkpoint, types[status.name])
                readings.append(
                    LagReading("projection", status.name, status.lag, age, status.parked_events)
                )
        if self.reactor is not None:
            types = {r.name: tuple(r.handlers()) for r in self.reactor.reactions}
            for reacting in await self.reactor.status():
                age = await self._age(reacting.checkpoint, types[reacting.name])
                readings.append(
                    LagReading("reaction", reacting.name, reacting.lag, age, reacting.parked_events)
                )
        self.readings = readings
        if isinstance(self.store, HorizonSource):
            self.horizon = await self.store.horizon()
            self._warn_about_horizon()
        return readings

    def observations(self, name: str) -> Iterable[Any]:
        """The observations of gauge `name` from the last measurement."""
        if name == "fabula.postgres.horizon.age":
            if isinstance(self.store, HorizonSource):
                yield observation(self.horizon.age if self.horizon else 0.0)
            return
        for reading in self.readings:
            attributes = {"fabula.kind": reading.kind, f"fabula.{reading.kind}": reading.name}
            value = {"fabula.lag": reading.lag, "fabula.lag.age": reading.age}.get(
                name, reading.parked
            )
            yield observation(value, attributes)

    async def _age(self, checkpoint: int, types: tuple[type, ...]) -> float:
        page = await self.store.read_log(after=checkpoint, limit=1, event_types=types)
        if not page.events:
            return 0.0
        written: datetime = page.events[0].event.timestamp
        return max(0.0, (utcnow() - written).total_seconds())

    def _warn_about_horizon(self) -> None:
        horizon = self.horizon
        if horizon is None or horizon.age < self.horizon_warning:
            self._warned = None
            return
        if self._warned == horizon.pid:
            return
        self._warned = horizon.pid
        logger.warning(
            "a transaction open for %.0f s (PostgreSQL backend pid %d, application_name %r, %s) "
            "holds every reader of the log back: events committed after it began are not read "
            "until it ends",
            horizon.age,
            horizon.pid,
            horizon.application_name,
            horizon.state,
        )
