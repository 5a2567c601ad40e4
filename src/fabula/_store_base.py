"""The base of fabula's own stores: `async with`, log reads over `_scan`, wake-ups, `subscribe`."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import attrs

from fabula._events import DomainEvent
from fabula._serialization import EventSerializer
from fabula._store import (
    EventTypeFilter,
    RecordedEvent,
    event_type_names,
    validate_read_all,
)

__all__ = ["LogPage", "StoreBase", "Wakeup", "follow"]

_SUBSCRIBE_BATCH = 500


E = TypeVar("E", bound=DomainEvent[Any])


@attrs.frozen
class LogPage:
    """A page of the global log.

    Attributes:
        events: The matching events, in position order.
        position: How far the log was read: resume after it.
    """

    events: list[RecordedEvent]
    position: int


class StoreBase(abc.ABC):
    """What fabula's stores share: `async with`, and `read_all` and `subscribe` over `_scan`.

    A subclass implements the abstract methods, and sets `serializer`,
    `_closed` and `_wakeup` (notified on every commit through it).
    """

    serializer: EventSerializer
    _wakeup: Wakeup
    _closed: bool
    _poll_interval: float | None = None

    @abc.abstractmethod
    async def _scan(
        self, after: int, limit: int, names: frozenset[str] | None
    ) -> tuple[list[RecordedEvent], int]:
        """Return up to `limit` events of types `names` (None: all) after `after`.

        Also return the position read up to: a reader resumes after it and
        misses nothing (it may be past the last event returned).
        """

    @abc.abstractmethod
    def _check_open(self) -> None:
        """Raise `StoreClosedError` if the store is closed."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's resources and end its subscriptions."""

    @abc.abstractmethod
    async def head_position(self) -> int:
        """Return the position of the last committed event (0 when empty)."""

    async def read_log(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> LogPage:
        """Read like `read_all`, and also tell how far the log was read.

        With a type filter, the events returned may end well before the
        position read up to; a reader that resumes from `LogPage.position`
        skips the non-matching events without reading them again, and misses
        nothing.
        """
        self._check_open()
        validate_read_all(after, limit)
        names = event_type_names(event_types, self.serializer.registry)
        events, position = await self._scan(after, limit, names)
        return LogPage(events=events, position=position)

    async def count_events(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> int:
        """Count the committed events after position `after` (of `event_types`, if given).

        Positions are not consecutive on every store (PostgreSQL's are
        sparse), so this, not a difference of positions, says how many
        events a reader has left: a projection's lag.

        Raises:
            InvalidReadError: `after` is negative, or the filter is malformed.
            UnregisteredEventError: A class in the filter has no stored name.
        """
        self._check_open()
        validate_read_all(after, 1)
        names = event_type_names(event_types, self.serializer.registry)
        if names is not None and not names:
            return 0
        return await self._count(after, names)

    @abc.abstractmethod
    async def _count(self, after: int, names: frozenset[str] | None) -> int:
        """Count the committed events of types `names` (None: all) after `after`."""

    async def wait_for_commit(self, after: int, max_wait: float) -> None:
        """Return once the log may hold events after `after`, or after `max_wait` seconds.

        Commits through this store wake the waiter at once; commits by other
        processes are noticed by the timeout (the caller reads again).
        """
        self._check_open()
        waiter = self._wakeup.waiter()
        if await self.head_position() > after or self._closed:
            return
        await _wait(waiter, max_wait)

    @overload
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: Collection[type[E]]
    ) -> list[RecordedEvent[E]]: ...
    @overload
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> list[RecordedEvent]: ...
    async def read_all(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> list[RecordedEvent] | list[RecordedEvent[Any]]:
        """Read the global log after `after` (see `EventStore.read_all`)."""
        self._check_open()
        validate_read_all(after, limit)
        names = event_type_names(event_types, self.serializer.registry)
        return (await self._scan(after, limit, names))[0]

    @overload
    def subscribe(
        self, *, after: int = 0, event_types: Collection[type[E]]
    ) -> AsyncIterator[RecordedEvent[E]]: ...
    @overload
    def subscribe(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> AsyncIterator[RecordedEvent]: ...
    def subscribe(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Yield stored events after `after`, then new ones as they are committed.

        Commits through this store wake the subscription at once; stores
        with a `poll_interval` also look again that often, for writers in
        other processes. The iteration ends when the store is closed.
        """
        self._check_open()
        validate_read_all(after, 1)
        names = event_type_names(event_types, self.serializer.registry)
        return follow(
            lambda position, limit: self._scan(position, limit, names),
            after,
            self._wakeup,
            lambda: self._closed,
            self._poll_interval,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Wakeup:
    """Wakes the subscriptions of one store when it commits events."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def waiter(self) -> asyncio.Event:
        """Return the event the next `notify` sets; take it before reading."""
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        """Wake every subscription waiting now."""
        if self._event is not None:
            self._event.set()
            self._event = None


async def follow(
    scan: Callable[[int, int], Awaitable[tuple[list[RecordedEvent], int]]],
    after: int,
    wakeup: Wakeup,
    closed: Callable[[], bool],
    poll_interval: float | None = None,
) -> AsyncIterator[RecordedEvent]:
    """Yield events after `after` from `scan`, waiting for wake-ups when there are none.

    Args:
        scan: Returns up to `limit` events after a position, and the position
            read up to.
        after: Where to start.
        wakeup: Set by the store when it commits.
        closed: Whether the store is closed (the iteration then ends).
        poll_interval: Also look again after this many seconds (for writers
            the store is not told about); never, if None.
    """
    position = after
    while not closed():
        # Take the waiter before reading, so a commit between the read and the
        # wait still wakes us.
        waiter = wakeup.waiter()
        batch, position = await scan(position, _SUBSCRIBE_BATCH)
        for recorded in batch:
            yield recorded
        if batch or closed():
            continue
        if poll_interval is None:
            await waiter.wait()
        else:
            await _wait(waiter, poll_interval)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`.

    `asyncio.timeout` rather than `asyncio.wait_for`: on Python 3.11 the
    latter can swallow a cancellation that arrives as the event is set,
    leaving a cancelled task running for ever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
