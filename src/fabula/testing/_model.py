"""A hypothesis state machine that checks a store against a plain in-memory model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import attrs
import pytest
from hypothesis import settings as Settings  # noqa: N812 - the type, not the profile API
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from fabula._events import DomainEvent
from fabula._store import AppendResult, EventStore, Expected, ExpectedVersion, StreamAppend
from fabula.exceptions import ConcurrencyError
from fabula.testing._contract_events import Deposited, Withdrawn

__all__ = ["check_against_model"]

T = TypeVar("T")

_STREAMS = st.sampled_from(["acc-a", "acc-b", "acc-c"])
_HOWS = st.sampled_from(["exact", "stale", "ahead", "any", "no_stream", "exists"])
_BATCHES = st.lists(st.tuples(st.booleans(), st.integers(0, 999)), min_size=1, max_size=3)


@attrs.frozen
class _Entry:
    event_id: UUID
    stream_id: str
    version: int
    position: int
    kind: type[DomainEvent[Any]]


def _expectation(how: str, version: int) -> tuple[Expected, bool]:
    """Return an expected version of kind `how` for a stream at `version`, and if it holds."""
    match how:
        case "exact":
            return version, True
        case "stale":
            return (version - 1, False) if version else (0, True)
        case "ahead":
            return version + 1, False
        case "any":
            return ExpectedVersion.ANY, True
        case "no_stream":
            return ExpectedVersion.NO_STREAM, version == 0
        case _:
            return ExpectedVersion.STREAM_EXISTS, version > 0


def _events(batch: list[tuple[bool, int]]) -> list[DomainEvent[Any]]:
    return [
        Withdrawn(amount=Decimal(n)) if out else Deposited(amount=Decimal(n)) for out, n in batch
    ]


class _StoreModel(RuleBasedStateMachine):
    factory: ClassVar[Callable[[], Awaitable[EventStore]]]

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.log: list[_Entry] = []
        self.store: EventStore = self.run(type(self).factory())
        self.last: tuple[str, list[DomainEvent[Any]], Expected, AppendResult] | None = None

    def teardown(self) -> None:
        try:
            self.runner.run(self.store.close())
        finally:
            self.runner.close()

    def run(self, call: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await call

        return self.runner.run(wrapped())

    def version(self, stream_id: str) -> int:
        return sum(1 for e in self.log if e.stream_id == stream_id)

    def remember(
        self, stream_id: str, events: list[DomainEvent[Any]], result: AppendResult
    ) -> None:
        first = result.version - len(events) + 1
        stored = self.run(self.store.read_stream(stream_id, from_version=first))
        assert [r.event.event_id for r in stored] == [e.event_id for e in events]
        assert stored[-1].position == result.position
        previous = self.log[-1].position if self.log else 0
        assert stored[0].position > previous, "positions must increase with every append"
        self.log.extend(
            _Entry(r.event.event_id, stream_id, r.event.version, r.position, type(r.event))
            for r in stored
        )

    @rule(stream_id=_STREAMS, batch=_BATCHES, how=_HOWS)
    def append(self, stream_id: str, batch: list[tuple[bool, int]], how: str) -> None:
        version = self.version(stream_id)
        expected, holds = _expectation(how, version)
        events = _events(batch)
        call = self.store.append(stream_id, events, expected_version=expected)
        if not holds:
            with pytest.raises(ConcurrencyError):
                self.run(call)
            return
        result = self.run(call)
        assert (result.stream_id, result.version) == (stream_id, version + len(events))
        self.remember(stream_id, events, result)
        self.last = (stream_id, events, expected, result)

    @rule(
        streams=st.lists(_STREAMS, min_size=2, max_size=2, unique=True),
        batches=st.lists(_BATCHES, min_size=2, max_size=2),
        hows=st.lists(_HOWS, min_size=2, max_size=2),
    )
    def append_many(
        self, streams: list[str], batches: list[list[tuple[bool, int]]], hows: list[str]
    ) -> None:
        plans = []
        for stream_id, batch, how in zip(streams, batches, hows, strict=True):
            expected, holds = _expectation(how, self.version(stream_id))
            plans.append(
                (StreamAppend(stream_id, _events(batch), expected_version=expected), holds)
            )
        call = self.store.append_many([plan for plan, _ in plans])
        if not all(holds for _, holds in plans):
            with pytest.raises(ConcurrencyError):
                self.run(call)
            return
        results = self.run(call)
        for (plan, _), result in zip(plans, results, strict=True):
            self.remember(plan.stream_id, list(plan.events), result)

    @rule()
    def retry_last_append(self) -> None:
        if self.last is None:
            return
        stream_id, events, expected, result = self.last
        assert self.run(self.store.append(stream_id, events, expected_version=expected)) == result

    @rule(
        stream_id=_STREAMS,
        from_version=st.integers(1, 8),
        limit=st.none() | st.integers(1, 4),
    )
    def read_stream(self, stream_id: str, from_version: int, limit: int | None) -> None:
        entries = [e for e in self.log if e.stream_id == stream_id][from_version - 1 :]
        if limit is not None:
            entries = entries[:limit]
        got = self.run(self.store.read_stream(stream_id, from_version=from_version, limit=limit))
        assert [(r.event.event_id, r.event.version, r.position) for r in got] == [
            (e.event_id, e.version, e.position) for e in entries
        ]

    @rule(
        data=st.data(),
        limit=st.integers(1, 6),
        kinds=st.sampled_from([None, (Deposited,), (Withdrawn,), (Deposited, Withdrawn)]),
    )
    def read_all(
        self, data: st.DataObject, limit: int, kinds: tuple[type[DomainEvent[Any]], ...] | None
    ) -> None:
        index = data.draw(st.integers(0, len(self.log)))
        after = self.log[index - 1].position if index else 0
        entries = [e for e in self.log[index:] if kinds is None or e.kind in kinds][:limit]
        got = self.run(self.store.read_all(after=after, limit=limit, event_types=kinds))
        assert [(r.event.event_id, r.position, r.stream_id) for r in got] == [
            (e.event_id, e.position, e.stream_id) for e in entries
        ]


def check_against_model(
    factory: Callable[[], Awaitable[EventStore]], settings: Settings | None = None
) -> None:
    """Drive stores from `factory` with random operations and check them against a model.

    Args:
        factory: Builds a fresh, empty store (one per example).
        settings: Hypothesis settings for the run.
    """
    machine = type("StoreModel", (_StoreModel,), {"factory": staticmethod(factory)})
    run_state_machine_as_test(machine, settings=settings)
