"""Durable timers: a command to dispatch at a time, kept in the store's own database.

`Timers.schedule` keeps a timer under a name (scheduling the name again
replaces it); `Timers.run` fires those that fall due, including any that
fell due while no process ran. Firing dispatches the command with the
idempotency key `timer:<name>:<generation>`, then removes the timer: a
process that dies in between fires it again on restart, and the key
makes the second firing commit nothing new. Several processes share the
due timers by claiming them for a while (`claim_for`) before firing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

import attrs
import cattrs

from fabula._command_codec import decode_command, encode_command
from fabula._commands import Command, CommandBus
from fabula._converter import make_converter
from fabula._guards import positive_int, positive_number, text_problem, utcnow
from fabula._reaction_store import Timer, TimerStore
from fabula.exceptions import DomainError, FabulaError, StoreClosedError

__all__ = ["Timers"]

logger = logging.getLogger("fabula.timers")


def _check_aware(at: object) -> datetime:
    if not isinstance(at, datetime) or at.utcoffset() is None:
        msg = f"a timer's time must be a timezone-aware datetime, not {at!r}"
        raise ValueError(msg)
    return at


@attrs.define(repr=False)
class Timers:
    """Schedules, cancels and fires durable timers in a store's database.

    A fired command is looked up among the command types `bus` has
    handlers for (by `module:qualname`), never imported from what the
    database says. If its handler raises a `DomainError`, the refusal is
    the timer's outcome (a deadline that no longer applies): it is logged
    and the timer removed. Any other failure is retried with capped
    exponential backoff, and shown on the timer (`last_error`).

    Args:
        store: Where timers are kept (a `TimerStore`).
        bus: The bus their commands are dispatched on; it must use the
            `Idempotency` middleware for firing to be exactly once.
        poll_interval: Seconds between looks for due timers.
        claim_for: How long a process holds a timer it is firing before
            another may fire it.
        retry_delay: The first pause after a failed firing, in seconds.
        max_retry_delay: The longest pause between retries.
        clock: Returns the current time (for tests).
        converter: Encodes commands; `make_converter()` if omitted.
    """

    store: TimerStore
    bus: CommandBus
    poll_interval: float = attrs.field(default=1.0, validator=positive_number)
    claim_for: float = attrs.field(default=30.0, validator=positive_number)
    retry_delay: float = attrs.field(default=1.0, validator=positive_number)
    max_retry_delay: float = attrs.field(default=300.0, validator=positive_number)
    batch_size: int = attrs.field(default=100, validator=positive_int)
    clock: Callable[[], datetime] = attrs.field(default=utcnow)
    converter: cattrs.Converter = attrs.field(factory=make_converter)
    _wakeup: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.store, TimerStore):
            msg = f"{self.store!r} keeps no timers"
            raise TypeError(msg)

    def __repr__(self) -> str:
        return f"<Timers on {self.store!r}>"

    async def schedule(
        self,
        name: str,
        *,
        at: datetime,
        command: Command[Any],
        generation: UUID | None = None,
        sequence: int | None = None,
    ) -> None:
        """Keep timer `name`: dispatch `command` at `at` (replacing any timer of that name).

        Args:
            name: The timer's name, unique in the store (for example
                `"expire-draft:<order id>"`).
            at: When to fire; a time already past fires at once.
            command: What to dispatch; its class must have a handler on the bus.
            generation: Which schedule this is; a new one if omitted. Reactions
                pass one derived from their event, so that handling an event
                twice schedules one timer.
            sequence: The log position of the event this schedule comes from
                (reactions pass it): a schedule or cancellation of the name
                by a newer event is not undone by this one.

        Raises:
            ValueError: `name` is not a valid id, or `at` is naive.
            SerializationError: The command cannot be stored.
        """
        problem = text_problem(name, limit=200)
        if problem is not None:
            msg = f"a timer's name {problem}"
            raise ValueError(msg)
        when = _check_aware(at)
        planned = encode_command(self.converter, command)
        timer = Timer(
            name=name,
            due_at=when,
            command_type=planned.command_type,
            command=planned.fields,
            generation=uuid4() if generation is None else generation,
            sequence=sequence,
        )
        await self.store.schedule_timer(timer)
        self._wakeup.set()

    async def cancel(self, name: str, *, sequence: int | None = None) -> bool:
        """Cancel timer `name`; return whether it was pending.

        With `sequence` (the log position of the event cancelling it, as
        reactions pass it), a timer scheduled by a newer event stays.
        """
        return await self.store.cancel_timer(name, sequence=sequence)

    async def pending(self) -> list[Timer]:
        """The timers not yet fired, soonest first."""
        return await self.store.load_timers()

    async def run(self) -> None:
        """Fire timers as they fall due, until cancelled."""
        while True:
            try:
                fired = await self.fire_due()
            except StoreClosedError:
                raise
            except FabulaError as exc:
                logger.warning("timers: the store failed (%s); trying again", exc)
                fired = 0
            if fired < self.batch_size:
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass

    async def fire_due(self) -> int:
        """Fire the timers due now (up to `batch_size`); return how many were claimed."""
        now = self.clock()
        until = now + timedelta(seconds=self.claim_for)
        claimed = await self.store.claim_timers(now, until=until, limit=self.batch_size)
        for timer in claimed:
            await self._fire(timer)
        return len(claimed)

    async def _fire(self, timer: Timer) -> None:
        try:
            command = self._command(timer)
            await self.bus.dispatch(command)
        except DomainError as refused:
            logger.info("timer %s: its command was refused (%s); done", timer.name, refused)
        except Exception as exc:  # noqa: BLE001 - any other failure is retried with backoff
            attempts = timer.attempts + 1
            pause = min(self.max_retry_delay, self.retry_delay * 2.0 ** (attempts - 1))
            logger.warning(
                "timer %s failed (attempt %d), trying again in %.0f s: %r",
                timer.name,
                attempts,
                pause,
                exc,
            )
            due = self.clock() + timedelta(seconds=pause)
            await self.store.retry_timer(timer.name, timer.generation, due_at=due, error=repr(exc))
            return
        await self.store.finish_timer(timer.name, timer.generation)

    def _command(self, timer: Timer) -> Command[Any]:
        """Rebuild a timer's command, keyed to this generation of the timer."""
        command = decode_command(self.converter, self.bus, timer.command_type, timer.command)
        key = f"timer:{timer.name}:{timer.generation}"
        return attrs.evolve(
            command, idempotency_key=key, message_id=uuid5(timer.generation, "fire")
        )
