"""One reaction following the log in the active process: lanes, the checkpoint, parking.

Events are read ahead of the checkpoint into a window (at most `window`
events) and queued in one lane per stream; up to `concurrency` lanes
handle an event at once, so a stream's events are handled in order and
different streams side by side. The checkpoint moves to just before the
oldest event not yet done, so an event is never passed over: a crash
redelivers what was handled after the checkpoint, and the commands'
idempotency keys make that harmless.

An event whose handler fails `attempts` times parks its stream: it and
every later event of that stream are recorded as parked (in the store,
with the checkpoint that passes them), and the other streams go on. An
operator's request (retry, skip) drains the stream in order; once it is
empty, the stream's new events go to a lane again.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import attrs

from fabula import _telemetry as telemetry
from fabula._guards import utcnow
from fabula._reaction import Reaction, ReactionContext
from fabula._reaction_store import ParkedEvent, ParkRequest, checkpoint_name
from fabula._store import RecordedEvent
from fabula.exceptions import (
    BrokerUnavailableError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from fabula._reactor import Reactor

__all__ = ["ReactionRun"]

logger = logging.getLogger("fabula.reactions")


@attrs.define(eq=False)
class _Entry:
    """An event read into the window, with its lane; done once handled or parked."""

    recorded: RecordedEvent
    lane: str
    done: bool = False


@attrs.define(eq=False)
class _Parked:
    """A parked event as this process knows it; `saved` once the store holds it."""

    event: ParkedEvent
    saved: bool
    recorded: RecordedEvent | None = None


@attrs.frozen
class _Failure:
    error: str
    attempts: int
    cause: BaseException


class ReactionRun:
    """One reaction's run in the process that holds it: from its checkpoint, until stopped.

    Built afresh each time the reaction (re)starts, from what the store
    holds: its checkpoint and its parked events.
    """

    def __init__(self, reactor: Reactor, reaction: Reaction) -> None:
        self._reactor = reactor
        self._store = reactor.store
        self.reaction = reaction
        self.name = reaction.name
        self._types = tuple(reaction.handlers())
        self.checkpoint = 0
        self._read_to = 0
        self._window: collections.deque[_Entry] = collections.deque()
        self._lanes: dict[str, collections.deque[_Entry]] = {}
        self.parked: dict[str, list[_Parked]] = {}
        self._unsaved: list[_Parked] = []
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed: BaseException | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(reactor.concurrency)
        self.progress = asyncio.Event()
        self._requests_seen = 0.0
        self._stopped = False
        self._committed = asyncio.Event()
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the checkpoint and the parked events."""
        self.checkpoint = await self._store.load_checkpoint(checkpoint_name(self.name))
        self._read_to = self.checkpoint
        for row in await self._store.load_parked(self.name):
            self.parked.setdefault(row.stream_id, []).append(_Parked(row, saved=True))

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the lanes and drains (and start no more); return them, to be awaited."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    @property
    def busy(self) -> bool:
        """Whether events read are still being handled, or a parked stream drained."""
        return bool(self._window) or bool(self._draining)

    async def step(self) -> bool:
        """Read a page into the lanes and move the checkpoint; return whether anything was read."""
        if self._crashed is not None:
            raise self._crashed
        self.progress.clear()
        read = await self._read()
        await self._commit()
        now = asyncio.get_running_loop().time()
        if self.parked and now - self._requests_seen >= self._reactor.idle_wait:
            self._requests_seen = now
            await self.take_requests()
        return read

    async def idle(self) -> None:
        """Wait for a lane to finish an event or, with room in the window, for a commit.

        The store is asked about commits by a task of its own that is left
        to finish, never cancelled when a lane wakes this first: a store
        call cut off in its pool's connection handover can hold the pool up
        (Python 3.11's asyncio.wait_for, python/cpython#86296).
        """
        events = [self.progress]
        if len(self._window) < self._reactor.window:
            if self._watching is None or self._watching.done():
                self._committed.clear()
                self._watching = self._spawn(self._watch_commits())
            events.append(self._committed)
        waits = [asyncio.create_task(event.wait()) for event in events]
        try:
            await asyncio.wait(
                waits, timeout=self._reactor.idle_wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()  # an Event's wait: nothing of the store's is cut off
            await asyncio.gather(*waits, return_exceptions=True)

    async def _watch_commits(self) -> None:
        """Wait (up to `idle_wait`) for a commit after what was read; then wake `idle`."""
        await self._store.wait_for_commit(self._read_to, self._reactor.idle_wait)
        self._committed.set()

    async def _read(self) -> bool:
        room = self._reactor.window - len(self._window)
        if room <= 0:
            return False
        page = await self._store.read_log(
            after=self._read_to,
            limit=min(room, self._reactor.batch_size),
            event_types=self._types,
        )
        if page.position <= self._read_to:
            return False
        for recorded in page.events:
            self._admit(recorded)
        self._read_to = page.position
        return True

    def _admit(self, recorded: RecordedEvent) -> None:
        try:
            stream = self.reaction.lane(recorded)
        except Exception as exc:  # noqa: BLE001 - the reaction's own code: its event is parked
            self._park_unroutable(recorded, exc)
            return
        entry = _Entry(recorded, stream)
        self._window.append(entry)
        parked = self.parked.get(stream)
        if parked is not None:  # it waits behind the stream's parked event
            row = self._parked_event(recorded, stream, None, 0)
            item = _Parked(row, saved=False, recorded=recorded)
            parked.append(item)
            self._unsaved.append(item)
            entry.done = True
            return
        lane = self._lanes.get(stream)
        if lane is None:
            lane = self._lanes[stream] = collections.deque()
            self._spawn(self._lane(stream, lane))
        lane.append(entry)

    def _park_unroutable(self, recorded: RecordedEvent, exc: Exception) -> None:
        """Park an event whose lane cannot be told, with its stream (no retry would tell it)."""
        stream = recorded.stream_id
        entry = _Entry(recorded, stream, done=True)
        self._window.append(entry)
        row = self._parked_event(recorded, stream, f"cannot tell its lane: {exc!r}", 1)
        item = _Parked(row, saved=False, recorded=recorded)
        self.parked.setdefault(stream, []).append(item)
        self._unsaved.append(item)
        logger.error(
            "reaction %s parked %s at position %d: cannot tell its lane: %r",
            self.name,
            type(recorded.event).__qualname__,
            recorded.position,
            exc,
            exc_info=exc,
        )

    async def _commit(self) -> None:
        """Move the checkpoint to just before the oldest event not done, with the parked ones."""
        window = self._window
        while window and window[0].done:
            window.popleft()
        position = window[0].recorded.position - 1 if window else self._read_to
        if position <= self.checkpoint:
            return
        async with self._lock:
            saving = [item for item in self._unsaved if item.event.position <= position]
            await self._store.commit_reaction(
                self.name,
                expected=self.checkpoint,
                position=position,
                parked=[item.event for item in saving],
            )
            for item in saving:
                item.saved = True
            self._unsaved = [item for item in self._unsaved if not item.saved]
        self.checkpoint = position
        self._reactor.moved(self.name, position)

    async def _lane(self, stream: str, lane: collections.deque[_Entry]) -> None:
        """Handle one stream's events in order; park the stream at one that keeps failing."""
        while lane:
            entry = lane[0]
            failure = await self._attempt(entry.recorded)
            if failure is None:
                entry.done = True
                lane.popleft()
                self.progress.set()
                continue
            items = []
            for index, waiting in enumerate(lane):
                error, attempts = (failure.error, failure.attempts) if index == 0 else (None, 0)
                parked = self._parked_event(waiting.recorded, stream, error, attempts)
                items.append(_Parked(parked, saved=False, recorded=waiting.recorded))
                waiting.done = True
            self.parked[stream] = items
            self._unsaved.extend(items)
            lane.clear()
            self.progress.set()
            logger.error(
                "reaction %s parked stream %s at position %d after %d attempts: %s",
                self.name,
                stream,
                entry.recorded.position,
                failure.attempts,
                failure.error,
                exc_info=failure.cause,
            )
        del self._lanes[stream]

    async def take_requests(self) -> None:
        """Carry out the operators' requests recorded on parked events."""
        rows = await self._store.load_parked(self.name)
        if self._stopped:  # a request made while the run ends: the next run takes it
            return
        for row in rows:
            stream = row.stream_id
            if row.request is None or stream in self._draining:
                continue
            for item in self.parked.get(stream, ()):
                if item.event.position == row.position:
                    item.event = row
            if stream in self.parked:
                self._draining.add(stream)
                self._spawn(self._drain(stream))

    async def _drain(self, stream: str) -> None:
        """Handle a parked stream's events in order, until one fails again or none is left."""
        try:
            items = self.parked[stream]
            while items:
                item = items[0]
                if item.event.request is ParkRequest.SKIP:
                    reason = item.event.reason or "skipped"
                    await self._release(item, skipped=(item.event.event_class, reason))
                    items.pop(0)
                    logger.warning(
                        "reaction %s skipped %s at position %d of stream %s: %s",
                        self.name,
                        item.event.event_class,
                        item.event.position,
                        stream,
                        reason,
                    )
                    continue
                recorded = item.recorded or await self._load(item.event)
                failure = await self._attempt(recorded)
                if failure is not None:
                    await self._repark(item, failure)
                    logger.error(
                        "reaction %s: stream %s is still parked at position %d: %s",
                        self.name,
                        stream,
                        item.event.position,
                        failure.error,
                    )
                    return
                await self._release(item)
                items.pop(0)
            del self.parked[stream]
            logger.warning("reaction %s: stream %s is drained and runs again", self.name, stream)
        finally:
            self._draining.discard(stream)
            self.progress.set()

    async def _release(self, item: _Parked, *, skipped: tuple[str, str] | None = None) -> None:
        async with self._lock:
            if item.saved:
                await self._store.release_parked(self.name, item.event.position, skipped=skipped)
            else:
                self._unsaved.remove(item)

    async def _repark(self, item: _Parked, failure: _Failure) -> None:
        async with self._lock:
            item.event = attrs.evolve(
                item.event,
                error=failure.error,
                attempts=item.event.attempts + failure.attempts,
                request=None,
                reason=None,
            )
            if item.saved:
                await self._store.repark(
                    self.name,
                    item.event.position,
                    error=failure.error,
                    attempts=item.event.attempts,
                )

    async def _load(self, parked: ParkedEvent) -> RecordedEvent:
        """Read a parked event back from the log, by its position."""
        page = await self._store.read_log(
            after=parked.position - 1, limit=1, event_types=self._types
        )
        if not page.events or page.events[0].position != parked.position:
            msg = (
                f"reaction {self.name!r}: parked event {parked.position} "
                f"({parked.event_class}) is no longer in the log"
            )
            raise StoreError(msg)
        return page.events[0]

    async def _attempt(self, recorded: RecordedEvent) -> _Failure | None:
        """Handle one event, retrying with backoff; the failure after the last attempt."""
        reactor = self._reactor
        attempts = outages = 0
        while True:
            context = ReactionContext(recorded, self.name, reactor.bus, reactor.timers, self._store)
            try:
                async with self._slots:
                    if telemetry.enabled():
                        name, attributes = self._span(recorded)
                        links = telemetry.event_links([recorded])
                        with telemetry.span(name, attributes, links=links, kind="consumer"):
                            await self.reaction.handle(recorded, context)
                    else:
                        await self.reaction.handle(recorded, context)
            except (asyncio.CancelledError, StoreClosedError):
                raise
            except (StoreUnavailableError, BrokerUnavailableError) as exc:  # not the event's fault
                outages += 1
                what = "store" if isinstance(exc, StoreUnavailableError) else "broker"
                level = logging.WARNING if outages == 1 else logging.DEBUG  # once per outage
                logger.log(level, "reaction %s: the %s failed (%s); retrying", self.name, what, exc)
                await asyncio.sleep(reactor.retry_pause(outages))
                continue
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then parked
                attempts += 1
                if attempts >= reactor.attempts:
                    return _Failure(repr(exc), attempts, exc)
                logger.warning(
                    "reaction %s failed on %s at position %d (attempt %d of %d): %r",
                    self.name,
                    type(recorded.event).__qualname__,
                    recorded.position,
                    attempts,
                    reactor.attempts,
                    exc,
                )
                await asyncio.sleep(reactor.retry_pause(attempts))
                continue
            return None

    def _span(self, recorded: RecordedEvent) -> tuple[str, dict[str, str | int]]:
        """The name and attributes of the span that handles `recorded` (linked by the caller)."""
        metadata = recorded.event.metadata
        attributes: dict[str, str | int] = {
            "fabula.reaction": self.name,
            "fabula.event.type": type(recorded.event).__qualname__,
            "fabula.stream": recorded.stream_id,
            "fabula.position": recorded.position,
        }
        if metadata.correlation_id is not None:
            attributes["fabula.correlation_id"] = str(metadata.correlation_id)
        if metadata.causation_id is not None:
            attributes["fabula.causation_id"] = str(metadata.causation_id)
        return "fabula.reaction", attributes

    def _parked_event(
        self, recorded: RecordedEvent, lane: str, error: str | None, attempts: int
    ) -> ParkedEvent:
        return ParkedEvent(
            reaction=self.name,
            position=recorded.position,
            stream_id=lane,
            version=recorded.event.version,
            event_class=type(recorded.event).__qualname__,
            error=error,
            attempts=attempts,
            parked_at=utcnow(),
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        if self._stopped:
            work.close()
            return None
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crashed is None:
            self._crashed = task.exception()
            self.progress.set()
