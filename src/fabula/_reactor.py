"""The Reactor: runs reactions from the global log, each from its own checkpoint.

How one reaction is run (lanes, the checkpoint, parking) is in
`fabula._reaction_run`; this module starts and restarts those runs,
holds a reaction's lease on stores that share them among processes,
reports where each reaction is, and takes operators' requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Sequence

import attrs

from fabula._capabilities import Store
from fabula._commands import CommandBus
from fabula._guards import positive_int, positive_number
from fabula._idempotency import Idempotency
from fabula._projection_store import ProjectionLeases
from fabula._reaction import Reaction, check_reaction_name
from fabula._reaction_run import ReactionRun
from fabula._reaction_store import (
    ParkedEvent,
    ParkRequest,
    TimerStore,
    ask_parked,
    checkpoint_name,
)
from fabula._tasks import cancel_and_wait
from fabula._timers import Timers
from fabula.exceptions import CheckpointError, EventTypeError, FabulaError, StoreClosedError

__all__ = ["ReactionState", "ReactionStatus", "Reactor", "ask_parked"]

logger = logging.getLogger("fabula.reactions")


class ReactionState(enum.StrEnum):
    """What a reaction is doing in a `Reactor`; each equals its str value."""

    RUNNING = "running"
    """Following the log (parked streams, if any, wait; the others go on)."""
    RETRYING = "retrying"
    """The store failed: retrying with backoff until it is back."""
    STANDBY = "standby"
    """Another process runs it; this one takes over if that one stops."""
    STOPPED = "stopped"
    """Not running here."""


@attrs.frozen
class ReactionStatus:
    """Where a reaction is.

    Attributes:
        name: The reaction.
        checkpoint: The position up to which every event is handled or parked.
        lag: How many events (of the types it handles) are after the checkpoint.
        state: What it is doing here.
        parked_streams: How many of its streams are parked.
        parked_events: How many events are parked in them.
        store_error: While it is retrying, the store's error, as `repr`.
    """

    name: str
    checkpoint: int
    lag: int
    state: ReactionState
    parked_streams: int
    parked_events: int
    store_error: str | None = None


@attrs.define
class _Slot:
    """One reaction in the reactor: its current run, if any, and what it is doing."""

    reaction: Reaction
    run: ReactionRun | None = None
    state: ReactionState = ReactionState.STOPPED
    store_error: str | None = None
    outages: int = 0
    moved: asyncio.Event = attrs.Factory(asyncio.Event)


@attrs.define(repr=False)
class Reactor:
    """Runs reactions: events of their types, from their checkpoints, as commands on a bus.

    Each reaction handles its streams in order, up to `concurrency`
    events at once (of different streams). A failing handler is retried
    `attempts` times with capped exponential backoff; then its stream is
    parked (its later events wait behind it) and the other streams go on.
    `parked()` lists parked events; `retry` and `skip` drain a stream.

    On a store that leases among processes (PostgreSQL), one process runs
    each reaction and the others stand by.

    Args:
        store: The event store, which keeps checkpoints, parked events and timers.
        bus: Where reactions send commands; it must use `Idempotency`.
        reactions: The reactions to run; their names must be unique.
        concurrency: Events handled at once per reaction (of different streams).
        attempts: Tries of a failing event before its stream is parked.
        window: Events read ahead of the checkpoint, at most.
        batch_size: Events read per page.
        retry_delay: The first pause after a failure, in seconds.
        max_retry_delay: The longest pause between retries.
        idle_wait: How long to wait for a commit before reading again (and
            how often operators' requests are looked for).
        timers: The durable timers reactions schedule (and `run` fires);
            one over `store` and `bus` if omitted.

    Raises:
        TypeError: `bus` does not use the `Idempotency` middleware.
        EventTypeError: A reaction has no valid name, or two share one.
    """

    store: Store
    bus: CommandBus
    reactions: Sequence[Reaction]
    concurrency: int = attrs.field(default=8, validator=positive_int)
    attempts: int = attrs.field(default=5, validator=positive_int)
    window: int = attrs.field(default=1000, validator=positive_int)
    batch_size: int = attrs.field(default=200, validator=positive_int)
    retry_delay: float = attrs.field(default=0.1, validator=positive_number)
    max_retry_delay: float = attrs.field(default=30.0, validator=positive_number)
    idle_wait: float = attrs.field(default=1.0, validator=positive_number)
    timers: Timers | None = None
    _slots: dict[str, _Slot] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.bus.has_middleware(Idempotency):
            msg = (
                "a Reactor's bus must use fabula.Idempotency for every command: "
                "reactions' commands commit once through their keys"
            )
            raise TypeError(msg)
        for reaction in self.reactions:
            kind = type(reaction).__qualname__
            name = check_reaction_name(getattr(reaction, "name", None), kind)
            if name in self._slots:
                msg = f"two reactions are named {name!r}"
                raise EventTypeError(msg)
            reaction.handlers()
            self._slots[name] = _Slot(reaction)
        if self.timers is None and isinstance(self.store, TimerStore):
            self.timers = Timers(self.store, self.bus)

    def __repr__(self) -> str:
        return f"<Reactor: {', '.join(self._slots)}>"

    async def run(self) -> None:
        """Run every reaction, and fire timers, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for name, slot in self._slots.items():
                group.create_task(self._follow(slot), name=f"fabula-reaction-{name}")
            if self.timers is not None:
                group.create_task(self.timers.run(), name="fabula-timers")

    async def catch_up(self) -> None:
        """Handle every event committed so far (parking those that keep failing), then return.

        Timers are not fired (see `Timers.fire_due`); parked streams stay
        parked unless an operator asked for them.
        """
        head = await self.store.head_position()
        for slot in self._slots.values():
            run = ReactionRun(self, slot.reaction)
            slot.run = run
            try:
                await run.start()
                await run.take_requests()
                while True:
                    read = await run.step()
                    if not read and not run.busy and run.checkpoint >= head:
                        break
                    if not read:
                        await run.idle()
            finally:
                await _stop(run)
                slot.run = None

    async def wait_for(self, position: int, timeout: float, *, name: str | None = None) -> None:  # noqa: ASYNC109 - the documented API
        """Return once the reaction(s) running here have handled or parked everything to `position`.

        Raises:
            TimeoutError: They did not get there within `timeout` seconds.
            KeyError: There is no reaction `name`.
        """
        slots = [self._slots[name]] if name is not None else list(self._slots.values())
        async with asyncio.timeout(timeout):
            for slot in slots:
                while slot.run is None or slot.run.checkpoint < position:
                    slot.moved.clear()
                    await slot.moved.wait()

    def moved(self, name: str, position: int) -> None:
        """Called by a run when its checkpoint moves (wakes `wait_for`)."""
        del position
        self._slots[name].moved.set()

    async def status(self) -> list[ReactionStatus]:
        """Report each reaction's checkpoint, lag, state and parked events."""
        found = []
        parked = await self.store.load_parked()
        for name, slot in self._slots.items():
            if slot.run is not None:
                checkpoint = slot.run.checkpoint
            else:
                checkpoint = await self.store.load_checkpoint(checkpoint_name(name))
            lag = await self.store.count_events(
                after=checkpoint, event_types=tuple(slot.reaction.handlers())
            )
            own = [p for p in parked if p.reaction == name]
            found.append(
                ReactionStatus(
                    name=name,
                    checkpoint=checkpoint,
                    lag=lag,
                    state=slot.state,
                    parked_streams=len({p.stream_id for p in own}),
                    parked_events=len(own),
                    store_error=slot.store_error,
                )
            )
        return found

    async def parked(self, name: str | None = None) -> list[ParkedEvent]:
        """The parked events of reaction `name` (None: of all), by position."""
        return await self.store.load_parked(name)

    async def retry(self, name: str, stream_id: str) -> None:
        """Handle parked stream `stream_id` of reaction `name` again, in order, from its start.

        Raises:
            LookupError: The stream is not parked there (or no reaction `name`).
        """
        self._slot(name)
        await ask_parked(self.store, name, stream_id, ParkRequest.RETRY)
        await self._take_requests(name)

    async def skip(self, name: str, stream_id: str, *, reason: str) -> None:
        """Pass over the first parked event of `stream_id` (recording `reason`); drain the rest.

        Raises:
            ValueError: `reason` is empty.
            LookupError: The stream is not parked there (or no reaction `name`).
        """
        self._slot(name)
        await ask_parked(self.store, name, stream_id, ParkRequest.SKIP, reason)
        await self._take_requests(name)

    def retry_pause(self, attempts: int) -> float:
        """Seconds to wait before trying again, after `attempts` tries."""
        return min(self.max_retry_delay, self.retry_delay * 2.0 ** (attempts - 1))

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            msg = f"no reaction named {name!r} runs in this reactor"
            raise LookupError(msg)
        return slot

    async def _take_requests(self, name: str) -> None:
        run = self._slots[name].run
        if run is not None:
            await run.take_requests()

    async def _follow(self, slot: _Slot) -> None:
        """Run one reaction for ever; with leases, only while this process holds its lease."""
        if not isinstance(self.store, ProjectionLeases):
            await self._keep_running(slot)
            return
        while True:
            slot.state = ReactionState.STANDBY
            try:
                async with self._lease(slot) as lost:
                    logger.info("reaction %s: this process is now active", slot.reaction.name)
                    running = asyncio.create_task(self._keep_running(slot))
                    losing = asyncio.create_task(lost.wait())
                    try:
                        await asyncio.wait({running, losing}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (running, losing):
                            await cancel_and_wait(task)
                    if running.done() and not running.cancelled() and running.exception():
                        raise running.exception()  # type: ignore[misc] # checked just above
                logger.warning("reaction %s: lost the lease; standing by", slot.reaction.name)
            except StoreClosedError:
                raise
            except FabulaError as exc:
                await self._pause(slot, exc)

    @contextlib.asynccontextmanager
    async def _lease(self, slot: _Slot) -> AsyncIterator[asyncio.Event]:
        assert isinstance(self.store, ProjectionLeases)  # noqa: S101 - checked by the caller
        async with self.store.projection_lease(checkpoint_name(slot.reaction.name)) as lost:
            yield lost

    async def _keep_running(self, slot: _Slot) -> None:
        """Run the reaction, starting afresh from the store after a store failure."""
        while True:
            run = ReactionRun(self, slot.reaction)
            slot.run = run
            try:
                await run.start()
                slot.state = ReactionState.RUNNING
                if slot.store_error is not None:
                    logger.warning("reaction %s: the store is back", slot.reaction.name)
                    slot.store_error, slot.outages = None, 0
                while True:
                    if not await run.step():
                        await run.idle()
            except CheckpointError:
                logger.warning("reaction %s: its checkpoint moved; restarting", slot.reaction.name)
            except StoreClosedError:
                raise
            except FabulaError as exc:
                await self._pause(slot, exc)
            finally:
                await _stop(run)
                slot.run = None
                slot.state = ReactionState.STOPPED

    async def _pause(self, slot: _Slot, exc: FabulaError) -> None:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError from None
        slot.outages += 1
        slot.state = ReactionState.RETRYING
        if slot.store_error is None:
            logger.warning("reaction %s: the store failed (%s); retrying", slot.reaction.name, exc)
        slot.store_error = repr(exc)
        await asyncio.sleep(self.retry_pause(slot.outages))


async def _stop(run: ReactionRun) -> None:
    for task in run.stop():
        await cancel_and_wait(task)
