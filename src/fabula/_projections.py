"""Projections: read models built from the global log, exactly once, with checkpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic

import attrs

from fabula import _telemetry as telemetry
from fabula._guards import positive_int, positive_number
from fabula._projection import HandlerFailedError, Projection, TxT, apply_all
from fabula._projection_parking import Parking, ParkingProjector, parking_key, parks_after
from fabula._projection_status import (
    ProjectionFailure,
    ProjectionState,
    ProjectionStatus,
    Track,
)
from fabula._projection_store import ProjectionLeases, ProjectionStore
from fabula._reaction_store import ParkedEvent, ReactionStore
from fabula._store import RecordedEvent
from fabula._tasks import cancel_and_wait, finished
from fabula.exceptions import (
    CheckpointError,
    EventTypeError,
    FabulaError,
    ProjectionError,
    StoreClosedError,
)

__all__ = ["ProjectionFailure", "ProjectionState", "ProjectionStatus", "Projector"]


def _now() -> float:
    return asyncio.get_running_loop().time()


logger = logging.getLogger("fabula.projections")


@attrs.define(repr=False)
class Projector(ParkingProjector[TxT], Generic[TxT]):
    """Feeds projections from the global log, each from its own checkpoint.

    Each batch of events and the projection's checkpoint commit together, so
    with a transactional store (SQLite) every event is applied exactly once,
    across crashes and restarts. A handler that raises stops that projection
    at that event (the others go on); it is retried with capped exponential
    backoff, and `status()` shows the failure. Nothing is ever skipped
    without an operator saying so, and a projection that opts into parking
    (`Projection.park_after`) parks the failing event's stream instead of
    stopping.

    Args:
        store: The event store, which also keeps the checkpoints.
        projections: The projections to run; their names must be unique.
        batch_size: How many events to apply per transaction.
        retry_delay: The first pause after a failure, in seconds.
        max_retry_delay: The longest pause between retries.
        idle_wait: How long to wait for a commit before reading again.
    """

    store: ProjectionStore[TxT]
    projections: Sequence[Projection[TxT]]
    batch_size: int = attrs.field(default=500, validator=positive_int)
    retry_delay: float = attrs.field(default=0.05, validator=positive_number)
    max_retry_delay: float = attrs.field(default=30.0, validator=positive_number)
    idle_wait: float = attrs.field(default=1.0, validator=positive_number)
    _tracks: dict[str, Track] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        for projection in self.projections:
            name = getattr(projection, "name", None)
            if not isinstance(name, str) or not name:
                msg = f"{type(projection).__qualname__} needs a non-empty str `name`"
                raise EventTypeError(msg)
            if name in self._tracks:
                msg = f"two projections are named {name!r}"
                raise EventTypeError(msg)
            types = tuple(projection.handlers())
            self._tracks[name] = track = Track(projection, types)
            after = parks_after(projection)
            if after is not None:
                if not isinstance(self.store, ReactionStore):
                    msg = f"projection {name!r} parks streams, but {self.store!r} keeps none"
                    raise TypeError(msg)
                track.parking = Parking(parking_key(name), after)

    def __repr__(self) -> str:
        return f"<Projector: {', '.join(self._tracks)}>"

    async def run(self) -> None:
        """Run every projection until cancelled: catch up, then follow new events.

        If one projection's loop fails for good (anything but a handler
        failure, which is retried), the others are cancelled and the error
        propagates.
        """
        async with asyncio.TaskGroup() as group:
            for track in self._tracks.values():
                group.create_task(
                    self._follow(track), name=f"fabula-projection-{track.projection.name}"
                )

    async def catch_up(self) -> None:
        """Apply every event committed so far to every projection, then return.

        "So far" is the head of the log when the call starts. On PostgreSQL
        an event committed before the call may not be readable yet, while a
        transaction that drew an earlier position is still open; this waits
        for it (as `wait_for` does), so that a read model queried after
        `catch_up` holds every event saved before it.

        A projection that parks streams retries a failing event until its
        stream parks, and goes on.

        Raises:
            ProjectionError: A handler failed; that projection stopped at the
                event (the others caught up).
        """
        failures = []
        head = await self.store.head_position()
        for track in self._tracks.values():
            await self._start(track)
            if track.parking is not None:
                await self._take_requests(track)
            while True:
                try:
                    moved = await self._step(track)
                except ProjectionError as exc:
                    if track.parking is not None and track.failure is not None:
                        # Tried again until the stream parks, then it goes on.
                        await asyncio.sleep(self.retry_pause(track.failure.attempts))
                        continue
                    failures.append(exc)
                    break
                except CheckpointError:
                    # Another projector (another process starting up) applied
                    # that batch: carry on from where the store says it is.
                    await self._reload(track)
                    continue
                if moved:
                    continue
                if track.checkpoint >= head:
                    break
                # Events up to the head are committed but not yet readable.
                await self.store.wait_for_commit(track.checkpoint, self.idle_wait)
        if failures:
            raise failures[0]

    async def status(self) -> list[ProjectionStatus]:
        """Report each projection's checkpoint, lag, state and current failure."""
        found = []
        for track in self._tracks.values():
            lag = await self.store.count_events(
                after=track.checkpoint, event_types=track.event_types
            )
            found.append(track.status(lag))
        return found

    def states(self) -> dict[str, ProjectionState]:
        """What each projection is doing, by name, without asking the store (for health checks)."""
        return {name: track.state for name, track in self._tracks.items()}

    async def wait_for(self, position: int, timeout: float, *, name: str | None = None) -> None:  # noqa: ASYNC109 - the documented API
        """Return once the projection(s) have applied everything up to `position`.

        Use it to read your own writes: pass the position an append returned.

        Raises:
            TimeoutError: They did not get there within `timeout` seconds.
            KeyError: There is no projection `name`.
        """
        tracks = [self._tracks[name]] if name is not None else list(self._tracks.values())
        loop = asyncio.get_running_loop()
        futures = []
        for track in tracks:
            if track.checkpoint < position:
                future: asyncio.Future[None] = loop.create_future()
                track.waiters.append((position, future))
                futures.append(future)
        if futures:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*futures)

    async def skip(self, name: str, position: int, *, reason: str) -> None:
        """Pass over the event a projection is stopped at, recording who skipped it and why.

        Only the one event the projection failed on can be skipped, and only
        while it is failing there; the skip is stored with the checkpoint.

        Raises:
            CheckpointError: Projection `name` is not stopped at `position`.
            ValueError: `reason` is empty.
            KeyError: There is no projection `name`.
        """
        track = self._tracks[name]
        if not reason.strip():
            msg = "say why the event is skipped: the reason is recorded"
            raise ValueError(msg)
        failure = track.failure
        if failure is None or failure.position != position:
            stopped = None if failure is None else failure.position
            msg = f"projection {name!r} is not stopped at position {position} (it is at {stopped})"
            raise CheckpointError(name, track.checkpoint, position) from ValueError(msg)
        await self.store.skip_event(
            name, position=position, event_class=failure.event_class, reason=reason
        )
        logger.warning(
            "projection %s skipped %s at position %d: %s",
            name,
            failure.event_class,
            position,
            reason,
        )
        track.clear_failure()
        self._set_checkpoint(track, position)

    async def rebuild(
        self, name: str, *, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Rebuild projection `name` from position 0 without readers seeing a half-built model.

        The new read model is built beside the live one, which keeps serving
        (and, if this projector is running, following) until the new one has
        caught up; then one transaction replaces the live tables with it. The
        live projection continues from the rebuilt checkpoint.

        Args:
            name: The projection to rebuild.
            progress: Called as `progress(done, total)` in log positions.

        Raises:
            KeyError: There is no projection `name`.
            StoreError: The store cannot rebuild projections.
        """
        track = self._tracks[name]
        checkpoint = await self.store.rebuild_projection(
            track.projection, batch_size=self.batch_size, progress=progress
        )
        track.clear_failure()
        self._set_checkpoint(track, checkpoint)
        logger.info("projection %s rebuilt up to position %d", name, checkpoint)

    async def _start(self, track: Track) -> None:
        await self._reload(track)
        if track.parking is not None:
            assert isinstance(self.store, ReactionStore)  # noqa: S101 - checked when built
            await track.parking.load(self.store)
        if track.checkpoint == 0:
            try:
                await self.store.commit_projection(
                    track.projection.name, expected=0, position=0, work=track.projection.setup
                )
            except CheckpointError:  # another projector set it up and moved on
                await self._reload(track)

    async def _reload(self, track: Track) -> None:
        """Take the checkpoint the store has (through `_set_checkpoint`, for `wait_for` callers)."""
        self._set_checkpoint(track, await self.store.load_checkpoint(track.projection.name))

    async def _follow(self, track: Track) -> None:
        """Follow the log; with a store that leases projections, only while holding the lease."""
        if not isinstance(self.store, ProjectionLeases):
            await self._follow_log(track)
            return
        lease = self.store.projection_lease
        while True:
            if track.outage is None:
                track.state = ProjectionState.STANDBY
            # While waiting for the lease, follow the active process's checkpoint.
            shadowing = asyncio.create_task(self._shadow(track))
            failed: FabulaError | None = None
            try:
                async with lease(track.projection.name) as lost:
                    await cancel_and_wait(shadowing)
                    logger.info("projection %s: this process is now active", track.projection.name)
                    await self._follow_until(track, lost)
                logger.warning("projection %s: lost the lease; standing by", track.projection.name)
            except StoreClosedError:
                raise
            except FabulaError as exc:  # the lease could not be taken: the store is down
                failed = exc
            finally:
                await cancel_and_wait(shadowing)
            if failed is not None:
                await self._pause_for_store(track, failed)

    async def _follow_until(self, track: Track, lost: asyncio.Event) -> None:
        """Follow the log until `lost` is set; raise what ended the following otherwise."""
        following = asyncio.create_task(self._follow_log(track))
        losing = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({following, losing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(losing)
            if not following.done():
                await cancel_and_wait(following)
        if not following.cancelled():
            following.result()  # following only ends by raising: a closed store, a bug

    async def _shadow(self, track: Track) -> None:
        """While standing by, follow the active process's checkpoint, for `wait_for` callers."""
        while True:
            try:
                if track.waiters:
                    await asyncio.sleep(0.02)
                else:
                    await finished(self.store.wait_for_commit(track.checkpoint, self.idle_wait))
                checkpoint = await finished(self.store.load_checkpoint(track.projection.name))
                self._set_checkpoint(track, checkpoint)
            except StoreClosedError:
                raise
            except FabulaError as exc:
                await self._pause_for_store(track, exc)
                continue
            if track.outage is not None:
                track.store_back()
                track.state = ProjectionState.STANDBY

    async def _follow_log(self, track: Track) -> None:
        """Apply the log as it grows; retry failing handlers and a failing store, for ever."""
        track.following, track.state = True, ProjectionState.RUNNING
        started = False
        try:
            while True:
                try:
                    if not started:
                        await self._start(track)
                        started = True
                    moved = await self._step(track)
                    track.store_back()
                    track.state = ProjectionState.RUNNING
                    parking = track.parking
                    if parking is not None and parking.due(_now(), self.idle_wait):
                        await self._take_requests(track)
                    if not moved:
                        await self.store.wait_for_commit(track.checkpoint, self.idle_wait)
                except ProjectionError:
                    track.store_back()
                    attempts = track.failure.attempts if track.failure else 1
                    await asyncio.sleep(self.retry_pause(attempts))
                except CheckpointError:
                    # Moved under us (a rebuild switched, or another projector ran
                    # it): carry on from where the store says it is.
                    started = False
                except StoreClosedError:
                    raise
                except FabulaError as exc:  # a full disk, a lost connection, an undecodable event
                    await self._pause_for_store(track, exc)
        finally:
            track.following, track.state = False, ProjectionState.STOPPED

    async def _pause_for_store(self, track: Track, exc: FabulaError) -> None:
        """Record a failed read or commit, and back off before the next."""
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            # A pool can turn a cancellation into an error: this is a stop, not an outage.
            raise asyncio.CancelledError from None
        await asyncio.sleep(self.retry_pause(track.store_failed(exc)))

    async def _step(self, track: Track) -> bool:
        """Apply one batch; return whether the checkpoint moved."""
        page = await self.store.read_log(
            after=track.checkpoint, limit=self.batch_size, event_types=track.event_types
        )
        if page.position <= track.checkpoint:
            return False
        events, parked = page.events, list[ParkedEvent]()
        if track.parking is not None:
            events, parked = track.parking.split(page.events)

        def work(tx: TxT) -> None:
            apply_all(track.projection, events, tx)

        try:
            with telemetry.projection_batch(track.projection.name, events, page.position):
                await self._commit(track, page.position, work, parked)
        except HandlerFailedError as failed:
            await self._stop_at(track, events, failed, parked)
            return True  # its stream parked: the checkpoint is at it, the rest comes next
        if track.failure is not None:
            track.clear_failure()
        self._set_checkpoint(track, page.position)
        return True

    async def _stop_at(
        self,
        track: Track,
        events: list[RecordedEvent],
        failed: HandlerFailedError,
        parked: list[ParkedEvent],
    ) -> None:
        """Keep the events before the failing one, record the failure, and raise.

        A projection that parks streams parks the failing event's stream
        instead, once it has failed `park_after` times, and returns.
        """
        projection = track.projection
        before = events[: failed.index]
        if await self._parked_instead(track, failed, before=before, parked=parked):
            return
        stop = failed.recorded.position - 1
        if stop > track.checkpoint:
            if self.store.transactional:  # the batch was rolled back: apply the prefix again

                def work(tx: TxT) -> None:
                    apply_all(projection, before, tx)

            else:  # the prefix is applied already: only move the checkpoint

                def work(tx: TxT) -> None:
                    del tx

            try:
                await self._commit(track, stop, work, [p for p in parked if p.position <= stop])
            except HandlerFailedError as again:  # an earlier event failed this time
                failed = again
            else:
                self._set_checkpoint(track, stop)
        raise track.failed_at(failed.recorded, failed.cause) from failed.cause

    def retry_pause(self, attempts: int) -> float:
        """Seconds to wait before trying a failed event again, after `attempts` tries.

        Doubles from `retry_delay` with each attempt, up to `max_retry_delay`.
        """
        return min(self.max_retry_delay, self.retry_delay * 2.0 ** (attempts - 1))

    def _set_checkpoint(self, track: Track, position: int) -> None:
        """Record where `track` is, and release the `wait_for` callers it has reached."""
        track.checkpoint = position
        waiting = []
        for target, future in track.waiters:
            if future.done():
                continue  # its caller gave up waiting
            if target <= position:
                future.set_result(None)
            else:
                waiting.append((target, future))
        track.waiters = waiting
