"""What a reaction is: a stable name, `@reacts` handlers per event type, and their context.

A projection turns events into a read model; a reaction turns them into
commands. Its handlers send commands through `ReactionContext.send`,
which gives each one an idempotency key derived from the event and the
reaction, so an event handled twice (after a crash, a retry) commits its
commands' effects once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid5

import attrs

from fabula._aggregate import marked_handlers
from fabula._commands import Command, CommandBus
from fabula._events import DomainEvent
from fabula._store import EventStore, RecordedEvent
from fabula._timers import Timers
from fabula.exceptions import EventTypeError, StoreError

__all__ = ["Reaction", "ReactionContext", "check_reaction_name", "reacts"]

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Awaitable[None]])

_MARK = "__fabula_reacts__"
_SIGNATURE = ("self", "event", "ctx")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def reacts(method: F) -> F:
    """Mark an async reaction method as the handler of one event type.

    The event type is read from the annotation of its event parameter; the
    third parameter is the `ReactionContext`, through which it sends
    commands and schedules timers:

        @fabula.reacts
        async def _submitted(self, event: OrderSubmitted, ctx: fabula.ReactionContext) -> None:
            await ctx.send(ReserveStock(order_id=event.aggregate_id))

    Returns:
        The method, unchanged apart from the mark.
    """
    setattr(method, _MARK, True)
    return method


def check_reaction_name(name: object, owner: str) -> str:
    """Check a reaction's name: 1 to 100 letters, digits, `_`, `.` or `-`.

    Raises:
        EventTypeError: It is not.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"{owner} needs a `name` of 1 to 100 letters, digits, '_', '.' or '-' "
            f"(its checkpoint and commands' keys are made from it), not {name!r}"
        )
        raise EventTypeError(msg)
    return name


class Reaction:
    """Base class of reactions: a stable `name` and `@reacts` methods per event type.

    A `Reactor` feeds each reaction the events of the types it handles,
    in order within each stream (several streams at once), and moves its
    checkpoint once they are handled. Delivery is at least once; the
    effects of the commands it sends through its context are exactly once.
    """

    name: str
    """The reaction's stable name: its checkpoint, parked events and keys are kept under it."""

    _fabula_handlers: ClassVar[dict[type[DomainEvent[Any]], Any] | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # None while an annotation names a class defined later: resolved on use.
        cls._fabula_handlers = marked_handlers(
            cls, _MARK, "reaction handler", _SIGNATURE, late=True
        )

    def handlers(self) -> dict[type[DomainEvent[Any]], Any]:
        """Return the handler of each event type this reaction handles."""
        cls = type(self)
        found = cls._fabula_handlers
        if found is None:
            found = marked_handlers(cls, _MARK, "reaction handler", _SIGNATURE, late=False)
            assert found is not None  # noqa: S101 - late=False returns or raises
            cls._fabula_handlers = found
        return found

    def lane(self, recorded: RecordedEvent) -> str:
        """The lane `recorded` is handled in: a lane's events are handled one at a time, in order.

        A reaction's lane is the event's stream; a process manager's is its
        process. A lane is also what is parked when one of its events keeps
        failing.
        """
        return recorded.stream_id

    async def handle(self, recorded: RecordedEvent, ctx: ReactionContext) -> None:
        """Handle one event through its handler (events without one are ignored)."""
        handler = self.handlers().get(type(recorded.event))
        if handler is not None:
            await handler(self, recorded.event, ctx)


@attrs.define
class ReactionContext:
    """What a reaction handler uses to act on the event it handles.

    Commands sent through it are keyed by the reaction, the event and the
    order they are sent in: the same handler, given the same event again,
    sends the same commands with the same keys, and the idempotency
    middleware commits each one's effect once. A handler should therefore
    decide from the event (and state that the commands' own handlers
    check), so that a second run sends what the first did.

    Attributes:
        recorded: The event being handled, with its position and stream.
        reaction: The reaction's name.
    """

    recorded: RecordedEvent
    reaction: str
    _bus: CommandBus
    _timers: Timers | None
    _store: EventStore
    _sent: int = 0

    @property
    def bus(self) -> CommandBus:
        """The bus commands are sent on."""
        return self._bus

    @property
    def store(self) -> EventStore:
        """The event store the reaction follows (to read a stream; write through commands)."""
        return self._store

    @property
    def event(self) -> DomainEvent[Any]:
        """The event being handled."""
        return self.recorded.event

    def key(self, n: int) -> str:
        """The idempotency key of the `n`th command (from 0) sent for this event."""
        return f"reaction:{self.reaction}:{self.recorded.event.event_id}:{n}"

    async def send(self, command: Command[R]) -> R:
        """Dispatch `command` on the bus, keyed to this event; return its result.

        The command gets the idempotency key `key(n)` for the `n`th command
        sent (unless it carries a key of its own), a message id derived from
        that key, and the event's correlation id (unless it has one).

        Raises:
            Exception: Whatever the command's handler raised.
        """
        n = self._sent
        self._sent += 1
        key = command.idempotency_key or self.key(n)
        keyed = attrs.evolve(
            command,
            idempotency_key=key,
            message_id=uuid5(self.recorded.event.event_id, f"{self.reaction}:{n}"),
            correlation_id=command.correlation_id or self.recorded.event.metadata.correlation_id,
        )
        return await self._bus.dispatch(keyed)

    async def schedule(
        self, name: str, *, at: datetime, command: Command[Any], generation: UUID | None = None
    ) -> None:
        """Schedule `command` to be dispatched at `at`, as durable timer `name`.

        Scheduling a name again replaces its timer (so a deadline moves).
        The timer's generation comes from this event (unless `generation` is
        given), so handling the event again schedules the same timer, and it
        fires once; and it carries this event's position, so handling an
        older event again never undoes what a newer one scheduled or
        cancelled.

        Raises:
            StoreError: The reactor has no timers (its store keeps none).
        """
        timers = self._require_timers()
        if generation is None:
            generation = uuid5(self.recorded.event.event_id, f"{self.reaction}:timer:{name}")
        await timers.schedule(
            name,
            at=at,
            command=command,
            generation=generation,
            sequence=self.recorded.position,
        )

    async def cancel(self, name: str) -> bool:
        """Cancel durable timer `name`; return whether it was pending.

        Raises:
            StoreError: The reactor has no timers (its store keeps none).
        """
        return await self._require_timers().cancel(name, sequence=self.recorded.position)

    def _require_timers(self) -> Timers:
        if self._timers is None:
            msg = f"reaction {self.reaction!r} schedules timers, but its store keeps none"
            raise StoreError(msg)
        return self._timers
