"""Parking for the projections that opt into it (`Projection.park_after`).

By default a projection stops at an event its handler cannot apply and
never skips it. A projection with `park_after = N` instead parks the
event's stream once N attempts have failed: the event, and every later
event of that stream, are recorded as parked in the same transaction that
moves the checkpoint past them (`ReactionStore.commit_projection_parked`),
and every other stream goes on. An operator's retry applies the parked
events in order, each in one transaction with its release; a skip passes
over the first one, recording the reason. Parked events are kept under
`projection:<name>`, beside reactions' (`fabula reactions parked` lists
both).

This module decides; the `Projector` reads, commits and waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic

import attrs

from fabula._events import DomainEvent
from fabula._guards import utcnow
from fabula._projection import HandlerFailedError, Projection, TxT, apply_all
from fabula._projection_status import Track
from fabula._projection_store import LogReader, ProjectionStore
from fabula._reaction_store import (
    PARKING_PREFIX,
    ParkedEvent,
    ParkRequest,
    ReactionStore,
    ask_parked,
)
from fabula._store import RecordedEvent

__all__ = [
    "PARKING_PREFIX",
    "Parking",
    "ParkingProjector",
    "parking_key",
    "parks_after",
    "take_requests",
]

logger = logging.getLogger("fabula.projections")


def parking_key(name: str) -> str:
    """The name a projection's parked events are kept under."""
    return PARKING_PREFIX + name


def parks_after(projection: Projection[Any]) -> int | None:
    """The projection's `park_after`, checked: None (it stops) or an int of at least 1.

    Raises:
        ValueError: It is something else.
    """
    after = getattr(projection, "park_after", None)
    if after is None:
        return None
    if isinstance(after, bool) or not isinstance(after, int) or after < 1:
        msg = (
            f"{type(projection).__qualname__}.park_after must be None or at least 1, not {after!r}"
        )
        raise ValueError(msg)
    return after


@attrs.define
class Parking:
    """One parking projection's parked streams, as its projector knows them.

    Attributes:
        key: Where its parked events are kept (`projection:<name>`).
        after: Failed attempts at one event before its stream is parked.
        streams: The parked events of each parked stream, in log order.
        looked_at: When the operators' requests were last looked for (loop time).
    """

    key: str
    after: int
    streams: dict[str, list[ParkedEvent]] = attrs.Factory(dict)
    looked_at: float = float("-inf")

    async def load(self, store: ReactionStore) -> None:
        """Take the parked events the store holds."""
        self.streams = {}
        for parked in await store.load_parked(self.key):
            self.streams.setdefault(parked.stream_id, []).append(parked)

    def split(
        self, events: Sequence[RecordedEvent]
    ) -> tuple[list[RecordedEvent], list[ParkedEvent]]:
        """The events to apply, and those to park behind their stream's parked event."""
        applied, parked = [], []
        for recorded in events:
            waiting = self.streams.get(recorded.stream_id)
            if waiting is None:
                applied.append(recorded)
            else:
                parked.append(self.row(recorded, None, 0))
        return applied, parked

    def row(self, recorded: RecordedEvent, error: str | None, attempts: int) -> ParkedEvent:
        """The parked event `recorded` becomes."""
        return ParkedEvent(
            reaction=self.key,
            position=recorded.position,
            stream_id=recorded.stream_id,
            version=recorded.event.version,
            event_class=type(recorded.event).__qualname__,
            error=error,
            attempts=attempts,
            parked_at=utcnow(),
        )

    def kept(self, parked: Sequence[ParkedEvent]) -> None:
        """Note `parked` as stored (their streams are parked from now on)."""
        for row in parked:
            self.streams.setdefault(row.stream_id, []).append(row)

    def due(self, now: float, every: float) -> bool:
        """Whether to look for requests now (at most every `every` seconds, if any is parked)."""
        if not self.streams or now - self.looked_at < every:
            return False
        self.looked_at = now
        return True

    def requested(self, rows: Sequence[ParkedEvent]) -> list[str]:
        """Take the store's parked events (`rows`); return the streams an operator asked for.

        The store's rows replace what this projector knew, so a drain cut
        short by a failed commit (applied, or not) resumes from the truth.
        """
        self.streams = {}
        for row in rows:
            self.streams.setdefault(row.stream_id, []).append(row)
        return [stream for stream, waiting in self.streams.items() if waiting[0].request]


async def drain(
    parking: Parking,
    store: ReactionStore,
    stream: str,
    apply_one: Callable[[ParkedEvent], Any],
) -> str | None:
    """Carry out the request on parked `stream`: handle (or skip) its events in order.

    `apply_one(parked)` applies one event and releases it in one transaction,
    returning None, or the error if the handler failed again (then the
    stream stays parked from that event, which records the new failure).

    Returns:
        None once the stream is drained, else the error that stopped it.
    """
    waiting = parking.streams[stream]
    while waiting:
        first = waiting[0]
        if first.request is ParkRequest.SKIP:
            reason = first.reason or "skipped"
            await store.release_parked(
                parking.key, first.position, skipped=(first.event_class, reason)
            )
        else:
            error = await apply_one(first)
            if error is not None:
                attempts = first.attempts + 1
                await store.repark(parking.key, first.position, error=error, attempts=attempts)
                waiting[0] = attrs.evolve(
                    first, error=error, attempts=attempts, request=None, reason=None
                )
                return str(error)
        waiting.pop(0)
    del parking.streams[stream]
    return None


async def take_requests(
    log: LogReader,
    store: ReactionStore,
    parking: Parking,
    *,
    projection: Projection[Any],
    event_types: tuple[type[DomainEvent[Any]], ...],
    checkpoint: int,
) -> None:
    """Carry out the operators' requests on a projection's parked streams, in order."""

    async def apply_one(parked: ParkedEvent) -> str | None:
        page = await log.read_log(after=parked.position - 1, limit=1, event_types=event_types)
        recorded = page.events[0]  # events are never removed from the log

        def work(tx: object) -> None:
            apply_all(projection, [recorded], tx)

        try:
            await store.commit_projection_parked(
                projection.name,
                expected=checkpoint,
                position=checkpoint,
                work=work,
                release=[(parking.key, parked.position)],
            )
        except HandlerFailedError as failed:
            return repr(failed.cause)
        return None

    for stream in parking.requested(await store.load_parked(parking.key)):
        error = await drain(parking, store, stream, apply_one)
        logger.warning(
            "projection %s: stream %s %s",
            projection.name,
            stream,
            "is drained and runs again" if error is None else f"is still parked: {error}",
        )


class ParkingProjector(Generic[TxT]):
    """What a `Projector` does for its projections that park streams (the `Projector` is one).

    Kept apart from the projector's loop, which calls `_commit` for every
    batch, `_parked_instead` when a handler fails and `_take_requests`
    between batches.
    """

    store: ProjectionStore[TxT]
    _tracks: dict[str, Track]

    def _set_checkpoint(self, track: Track, position: int) -> None:
        raise NotImplementedError  # the Projector's own

    async def parked(self, name: str) -> list[ParkedEvent]:
        """The parked events of projection `name` (one with `park_after`), by position.

        Raises:
            KeyError: There is no projection `name`.
            TypeError: It does not park streams.
        """
        return await self._parking_store(name).load_parked(parking_key(name))

    async def retry_parked(self, name: str, stream_id: str) -> None:
        """Apply parked stream `stream_id` of projection `name` again, in order, from its start.

        The projector running it carries the request out (within `idle_wait`).

        Raises:
            LookupError: The stream is not parked there.
            KeyError: There is no projection `name`.
            TypeError: It does not park streams.
        """
        await ask_parked(self._parking_store(name), parking_key(name), stream_id, ParkRequest.RETRY)

    async def skip_parked(self, name: str, stream_id: str, *, reason: str) -> None:
        """Pass over the first parked event of `stream_id` (recording `reason`); apply the rest.

        Raises:
            ValueError: `reason` is empty.
            LookupError: The stream is not parked there.
            KeyError: There is no projection `name`.
            TypeError: It does not park streams.
        """
        store = self._parking_store(name)
        await ask_parked(store, parking_key(name), stream_id, ParkRequest.SKIP, reason)

    def _parking_store(self, name: str) -> ReactionStore:
        if self._tracks[name].parking is None or not isinstance(self.store, ReactionStore):
            msg = f"projection {name!r} does not park streams (it has no park_after)"
            raise TypeError(msg)
        return self.store

    async def _commit(
        self, track: Track, position: int, work: Callable[[TxT], None], park: list[ParkedEvent]
    ) -> None:
        """Commit `work` with the checkpoint (and, when parking, the events parked)."""
        name = track.projection.name
        if track.parking is None:
            await self.store.commit_projection(
                name, expected=track.checkpoint, position=position, work=work
            )
            return
        assert isinstance(self.store, ReactionStore)  # noqa: S101 - checked when built
        await self.store.commit_projection_parked(
            name, expected=track.checkpoint, position=position, work=work, park=park
        )
        track.parking.kept(park)

    async def _parked_instead(
        self,
        track: Track,
        failed: HandlerFailedError,
        *,
        before: list[RecordedEvent],
        parked: list[ParkedEvent],
    ) -> bool:
        """Park the failing event's stream if it has failed `park_after` times; say if it did.

        What precedes the event is committed with it, and the checkpoint
        moves to it.
        """
        parking = track.parking
        attempts = track.attempts_at(failed.recorded.position)
        if parking is None or attempts < parking.after:
            return False
        projection, recorded = track.projection, failed.recorded
        row = parking.row(recorded, repr(failed.cause), attempts)
        done = before if self.store.transactional else []  # else applied already

        def work(tx: TxT) -> None:
            apply_all(projection, done, tx)

        park = [p for p in parked if p.position < recorded.position]
        await self._commit(track, recorded.position, work, [*park, row])
        self._set_checkpoint(track, recorded.position)
        track.clear_failure()
        logger.error(
            "projection %s parked stream %s at position %d after %d attempts: %r",
            projection.name,
            recorded.stream_id,
            recorded.position,
            attempts,
            failed.cause,
            exc_info=failed.cause,
        )
        return True

    async def _take_requests(self, track: Track) -> None:
        """Carry out the operators' requests on the projection's parked streams."""
        assert track.parking is not None  # noqa: S101 - the loop asks only then
        await take_requests(
            self.store,
            self._parking_store(track.projection.name),
            track.parking,
            projection=track.projection,
            event_types=track.event_types,
            checkpoint=track.checkpoint,
        )
