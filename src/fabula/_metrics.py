"""OpenTelemetry metrics, when `opentelemetry-api` is installed (`fabula[otel]`); nothing otherwise.

Counted as they happen (by the stores' appends): `fabula.events.appended`,
`fabula.append.duration` and `fabula.concurrency.conflicts`, each by
`fabula.store`. The gauges (`fabula.lag`, `fabula.lag.age`,
`fabula.parked`, `fabula.postgres.horizon.age`) read what a
`fabula.Monitor` (`_monitor.py`) last measured.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import attrs

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError:  # pragma: no cover - the extra is installed where this is tested
    _metrics = None  # type: ignore[assignment]

__all__ = [
    "Horizon",
    "HorizonSource",
    "Observed",
    "counting",
    "observation",
    "record_append",
    "record_conflict",
    "watch",
]


@attrs.frozen
class Horizon:
    """The oldest open write transaction of a PostgreSQL cluster: it holds every log reader back.

    `PostgresEventStore.horizon()` returns it; `fabula.Monitor` reports its age.

    Attributes:
        pid: Its server process.
        application_name: The `application_name` of its connection ("" if unset).
        state: What the session is doing (`idle in transaction`: waiting on its client).
        age: How long the transaction has been open, in seconds.
    """

    pid: int
    application_name: str
    state: str
    age: float


@runtime_checkable
class HorizonSource(Protocol):
    """A store that can tell its cluster's horizon (`PostgresEventStore`)."""

    async def horizon(self) -> Horizon | None:
        """The oldest open write transaction, or None when there is none."""
        ...


class _Instruments:
    """The counters and histograms, made once."""

    def __init__(self) -> None:
        meter = _metrics.get_meter("fabula")
        self.appended = meter.create_counter(
            "fabula.events.appended", unit="{event}", description="Events appended, by store."
        )
        self.duration = meter.create_histogram(
            "fabula.append.duration", unit="s", description="How long appends take, by store."
        )
        self.conflicts = meter.create_counter(
            "fabula.concurrency.conflicts",
            unit="{conflict}",
            description="Appends refused because their stream moved on, by store.",
        )
        gauges = (
            ("fabula.lag", "{event}", "Events after a projection's or reaction's checkpoint."),
            (
                "fabula.lag.age",
                "s",
                "Age of the oldest event a projection or reaction has not handled.",
            ),
            ("fabula.parked", "{event}", "Events parked, by projection or reaction."),
            ("fabula.postgres.horizon.age", "s", "Age of the oldest open write transaction."),
        )
        for name, unit, description in gauges:
            meter.create_observable_gauge(
                name, callbacks=[_observer(name)], unit=unit, description=description
            )


_INSTRUMENTS: _Instruments | None = None
_MONITORS: weakref.WeakSet[Observed] = weakref.WeakSet()


_SDK = False  # a meter provider of an SDK was set up (it cannot be taken back)


def counting() -> bool:
    """Whether metrics are recorded: the API is installed and an SDK's provider is set up."""
    global _SDK  # noqa: PLW0603 - once true, for good
    if not _SDK and _metrics is not None:
        _SDK = type(_metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
    return _SDK


def _instruments(*, made: bool = False) -> _Instruments | None:
    """The instruments, once an SDK is set up (or `made`: the gauges need them early)."""
    global _INSTRUMENTS  # noqa: PLW0603 - made once, on first use
    if _metrics is None or not (made or counting()):
        return None
    if _INSTRUMENTS is None:
        _INSTRUMENTS = _Instruments()
    return _INSTRUMENTS


def record_append(store: str, events: int, seconds: float) -> None:
    """Count an append of `events` events to `store` that took `seconds`."""
    made = _instruments()
    if made is not None:
        attributes = {"fabula.store": store}
        made.appended.add(events, attributes)
        made.duration.record(seconds, attributes)


def record_conflict(store: str) -> None:
    """Count an append `store` refused with a ConcurrencyError."""
    made = _instruments()
    if made is not None:
        made.conflicts.add(1, {"fabula.store": store})


class Observed(Protocol):
    """What the gauges read: a `fabula.Monitor`'s last measurements."""

    def observations(self, name: str) -> Iterable[Any]:
        """The observations of gauge `name`."""
        ...


def watch(monitor: Observed) -> None:
    """Report `monitor`'s measurements through the gauges (while it lives)."""
    _instruments(made=True)
    _MONITORS.add(monitor)


def observation(value: float, attributes: dict[str, str] | None = None) -> Any:  # noqa: ANN401
    """An OpenTelemetry observation (None without OpenTelemetry)."""
    return None if _metrics is None else Observation(value, attributes)


def _observer(name: str) -> Any:  # noqa: ANN401 - an OTel callback
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        del options
        for monitor in list(_MONITORS):
            yield from monitor.observations(name)

    return observe
