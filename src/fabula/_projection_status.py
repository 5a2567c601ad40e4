"""What a `Projector` keeps and reports of each projection: its state, failure and status."""

from __future__ import annotations

import asyncio
import enum
import logging
import traceback
from typing import TYPE_CHECKING, Any

import attrs

from fabula._events import DomainEvent
from fabula._projection import Projection
from fabula._store import RecordedEvent
from fabula.exceptions import FabulaError, ProjectionError

if TYPE_CHECKING:
    from fabula._projection_parking import Parking

__all__ = ["Outage", "ProjectionFailure", "ProjectionState", "ProjectionStatus", "Track"]

logger = logging.getLogger("fabula.projections")


class ProjectionState(enum.StrEnum):
    """What a projection is doing in a `Projector`; each equals its str value."""

    RUNNING = "running"
    """Following the log."""
    FAILING = "failing"
    """Stopped at an event whose handler raised, retrying it with backoff."""
    RETRYING = "retrying"
    """The store failed (a full disk, a lost connection): retrying with backoff until it is back."""
    STANDBY = "standby"
    """Another process runs it; this one takes over if that one stops."""
    STOPPED = "stopped"
    """Not running here."""


@attrs.frozen
class ProjectionFailure:
    """Why a projection stopped.

    Attributes:
        position: The position of the event it could not apply.
        event_class: The event's class name (`__qualname__`).
        error: The exception, as `repr`.
        traceback: The formatted traceback.
        attempts: How many times it was tried.
    """

    position: int
    event_class: str
    error: str
    traceback: str
    attempts: int


@attrs.frozen
class ProjectionStatus:
    """Where a projection is.

    Attributes:
        name: The projection.
        checkpoint: The position of the last event it has applied.
        lag: How many events (of the types it handles) it has yet to apply.
        state: What it is doing (a `ProjectionState`, equal to its str value).
        last_error: The current failure, if it is failing.
        store_error: While it is retrying, the store's error, as `repr`.
        parked_streams: How many of its streams are parked (a projection with
            `park_after` only).
        parked_events: How many events are parked in them.
    """

    name: str
    checkpoint: int
    lag: int
    state: ProjectionState
    last_error: ProjectionFailure | None
    store_error: str | None = None
    parked_streams: int = 0
    parked_events: int = 0


@attrs.define
class Track:
    """What a `Projector` keeps of one projection: where it is, and what is wrong."""

    projection: Projection[Any]
    event_types: tuple[type[DomainEvent[Any]], ...]
    checkpoint: int = 0
    state: ProjectionState = ProjectionState.STOPPED
    following: bool = False
    failure: ProjectionFailure | None = None
    outage: Outage | None = None
    waiters: list[tuple[int, asyncio.Future[None]]] = attrs.Factory(list)
    parking: Parking | None = None

    def clear_failure(self) -> None:
        """Forget the failure: the event it was about is behind the checkpoint now."""
        self.failure = None
        self.state = ProjectionState.RUNNING if self.following else ProjectionState.STOPPED

    def attempts_at(self, position: int) -> int:
        """Which attempt at the event at `position` a failure now is (failures elsewhere aside)."""
        failure = self.failure
        return failure.attempts + 1 if failure is not None and failure.position == position else 1

    def status(self, lag: int) -> ProjectionStatus:
        """Where the projection is, `lag` events behind."""
        parked = {} if self.parking is None else self.parking.streams
        return ProjectionStatus(
            name=self.projection.name,
            checkpoint=self.checkpoint,
            lag=lag,
            state=self.state,
            last_error=self.failure,
            store_error=None if self.outage is None else self.outage.error,
            parked_streams=len(parked),
            parked_events=sum(len(events) for events in parked.values()),
        )

    def failed_at(self, recorded: RecordedEvent, cause: BaseException) -> ProjectionError:
        """Record (and log) a handler's failure on `recorded`; return the error to raise."""
        attempts = self.attempts_at(recorded.position)
        event_class = type(recorded.event).__qualname__
        self.failure = ProjectionFailure(
            position=recorded.position,
            event_class=event_class,
            error=repr(cause),
            traceback="".join(traceback.format_exception(cause)),
            attempts=attempts,
        )
        self.state = ProjectionState.FAILING
        name = self.projection.name
        logger.error(
            "projection %s failed on %s at position %d (attempt %d)",
            name,
            event_class,
            recorded.position,
            attempts,
            exc_info=cause,
        )
        return ProjectionError(name, recorded.position, event_class, cause)

    def store_failed(self, exc: FabulaError) -> int:
        """Record a failed read or commit, logged if it is news; return the failures in a row."""
        name, error = self.projection.name, repr(exc)
        outage = self.outage
        if outage is None:
            outage = self.outage = Outage(error)
            logger.warning(
                "projection %s: the store failed (%s); retrying with backoff until it is back",
                name,
                exc,
            )
        else:
            outage.attempts += 1
            if error != outage.error:
                outage.error = error
                logger.warning("projection %s: the store now fails with: %s", name, exc)
        self.state = ProjectionState.RETRYING
        return outage.attempts

    def store_back(self) -> None:
        """End the outage this projection was in, if any, with one log line."""
        outage, self.outage = self.outage, None
        if outage is not None:
            took = asyncio.get_running_loop().time() - outage.since
            logger.warning(
                "projection %s: the store is back after %d failed attempts in %.1f s",
                self.projection.name,
                outage.attempts,
                took,
            )


@attrs.define
class Outage:
    """The store errors a projection has met in a row, since its last successful call."""

    error: str
    attempts: int = 1
    since: float = attrs.Factory(lambda: asyncio.get_running_loop().time())
