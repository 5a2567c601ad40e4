"""Process managers: reactions with state of their own, kept as events with the commands they issue.

A process manager coordinates a long-running piece of work (reserve every
line of an order, then confirm it) across events from several streams.
Each event is routed to one *process*, by an id the manager takes from it
(`process_id`), and events of one process are handled one at a time, in
log order (they share a lane; see `Reaction.lane`).

A handler decides from the process's state and the event: it may change
the state, queue commands, schedule or cancel timers, or finish the
process. What it decided is appended as one `ProcessStepped` event to the
process's own stream, `process:<manager>:<process id>`, *before* any of it
is carried out: the new state and the effects are saved together, in one
append. The effects then run, each command keyed to the step. If the
process dies in between, the event is delivered again, the step is found
in the stream, and its effects run again from what was saved, not decided
anew: their keys make the second run commit nothing new. So a handler may
read the clock or a read model; it is never asked the same question twice.
Only a process's last step is ever carried out again: a later step exists
only once the earlier ones were carried out in full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID, uuid5

import attrs
import cattrs

from fabula._command_codec import PlannedCommand, decode_command, encode_command
from fabula._commands import Command
from fabula._converter import decode_json, encode_json, make_converter
from fabula._events import DomainEvent, EventRegistry, default_registry, event
from fabula._reaction import Reaction, ReactionContext
from fabula._store import RecordedEvent
from fabula.exceptions import DomainError

__all__ = [
    "Process",
    "ProcessManager",
    "ProcessStepped",
    "register_process_events",
]

S = TypeVar("S")

logger = logging.getLogger("fabula.reactions")


@attrs.frozen
class PlannedTimer:
    """A timer a process step decided to schedule, as stored.

    Attributes:
        name: The timer's name.
        at: When it fires.
        command: What it dispatches.
    """

    name: str
    at: datetime
    command: PlannedCommand


@event("fabula.ProcessStepped")
@attrs.frozen(kw_only=True)
class ProcessStepped(DomainEvent[str]):
    """What a process manager decided on one event: its new state and the effects, saved together.

    Attributes:
        trigger_position: The global position of the event it handled.
        trigger_id: That event's id.
        state: The process's state after the step, as JSON.
        commands: The commands to send, in order.
        schedules: The timers to schedule.
        cancels: The names of the timers to cancel.
        finished: Whether the process is over (later events are ignored).
    """

    trigger_position: int
    trigger_id: UUID
    state: str
    commands: tuple[PlannedCommand, ...] = ()
    schedules: tuple[PlannedTimer, ...] = ()
    cancels: tuple[str, ...] = ()
    finished: bool = False


def register_process_events(registry: EventRegistry) -> None:
    """Register `ProcessStepped` in `registry` (it is in `default_registry` already).

    A store built with a serializer over a registry of its own needs it to
    keep process managers' steps.
    """
    if registry is not default_registry:
        registry.register(ProcessStepped, "fabula.ProcessStepped")


@attrs.define
class Process(Generic[S]):
    """One process as a handler sees it: its state, and what the handler decides.

    Nothing here is carried out while the handler runs: the decisions are
    saved as one step when it returns, then carried out.

    Attributes:
        id: The process's id (from `ProcessManager.process_id`).
        state: Its state: replace it to change it (attrs classes are best
            changed with `attrs.evolve`).
        started: Whether an earlier step exists (False on its first event).
    """

    id: str
    state: S
    started: bool
    _converter: cattrs.Converter
    _commands: list[PlannedCommand] = attrs.Factory(list)
    _schedules: list[PlannedTimer] = attrs.Factory(list)
    _cancels: list[str] = attrs.Factory(list)
    _finished: bool = False

    def send(self, command: Command[Any]) -> None:
        """Queue `command`, sent once the step is saved (keyed to it: exactly once)."""
        self._commands.append(encode_command(self._converter, command))

    def schedule(self, name: str, *, at: datetime, command: Command[Any]) -> None:
        """Schedule durable timer `name` to dispatch `command` at `at` (replacing one so named)."""
        if not isinstance(at, datetime) or at.utcoffset() is None:
            msg = f"a timer's time must be a timezone-aware datetime, not {at!r}"
            raise ValueError(msg)
        self._schedules.append(PlannedTimer(name, at, encode_command(self._converter, command)))

    def cancel(self, name: str) -> None:
        """Cancel durable timer `name` (if it is pending) once the step is saved."""
        self._cancels.append(name)

    def finish(self) -> None:
        """End the process: its later events are ignored."""
        self._finished = True

    def step(self, recorded: RecordedEvent, before: str, name: str) -> ProcessStepped | None:
        """The step to save, or None when the handler changed and decided nothing."""
        state = encode_json(self._converter.unstructure(self.state))
        if (
            state == before
            and not (self._commands or self._schedules or self._cancels)
            and not self._finished
        ):
            return None
        return ProcessStepped(
            trigger_position=recorded.position,
            trigger_id=recorded.event.event_id,
            state=state,
            commands=tuple(self._commands),
            schedules=tuple(self._schedules),
            cancels=tuple(self._cancels),
            finished=self._finished,
            event_id=uuid5(recorded.event.event_id, f"process:{name}"),
        )


class ProcessManager(Reaction, Generic[S]):
    """Base class of process managers: a reaction whose events are routed to stateful processes.

    Subclass it with a stable `name`, the `state` class (an attrs class whose
    fields all have defaults: a new process starts from `state()`), a
    `process_id` that routes an event to its process, and `@reacts`
    handlers taking `(self, event, process: Process[S])`:

        class Reservation(fabula.ProcessManager[Reserving]):
            name = "reservation"
            state = Reserving

            def process_id(self, recorded: fabula.RecordedEvent) -> str | None:
                return str(recorded.event.aggregate_id)

            @fabula.reacts
            async def _submitted(self, event: OrderSubmitted, process: fabula.Process[Reserving]):
                process.send(ReserveStock(...))

    A handler's decisions are saved as one `ProcessStepped` event in the
    process's stream before they are carried out (see this module's
    docstring), so they happen exactly once, crash or not. A command
    refused with a `DomainError` when carried out is logged and passed
    over: the decision stands, and the process learns of the state that
    refused it from the events that follow (an order cancelled meanwhile).
    """

    state: ClassVar[type[Any]]
    """The process state's class: `state()` is a new process's state."""

    converter: cattrs.Converter = make_converter()
    """Encodes the state and the commands; override for custom types."""

    def process_id(self, recorded: RecordedEvent) -> str | None:
        """Return the id of the process `recorded` belongs to, or None to ignore it.

        The default is the event's correlation id; override it to route by a
        field of the events.
        """
        correlation = recorded.event.metadata.correlation_id
        return None if correlation is None else str(correlation)

    def lane(self, recorded: RecordedEvent) -> str:
        """A process's events share a lane: they are handled one at a time, in order."""
        pid = self.process_id(recorded)
        return recorded.stream_id if pid is None else f"process:{pid}"

    def stream_of(self, process_id: str) -> str:
        """The stream that keeps process `process_id`'s steps."""
        return f"process:{self.name}:{process_id}"

    async def handle(self, recorded: RecordedEvent, ctx: ReactionContext) -> None:
        """Route `recorded` to its process, decide and save a step, then carry it out."""
        handler = self.handlers().get(type(recorded.event))
        pid = self.process_id(recorded) if handler is not None else None
        if handler is None or pid is None:
            return
        store = ctx.store
        stream = self.stream_of(pid)
        steps = [
            r.event for r in await store.read_stream(stream) if isinstance(r.event, ProcessStepped)
        ]
        done = next((s for s in steps if s.trigger_position == recorded.position), None)
        if done is not None and done is not steps[-1]:
            # A later step exists: this one was carried out in full before it
            # was taken (one event at a time per process). Carrying it out
            # again would undo what the later steps did (a timer cancelled).
            return
        if done is None:
            if steps and steps[-1].finished:
                return
            if steps and steps[-1].trigger_position > recorded.position:
                return  # handled before a later step was saved: nothing of it to carry out
            stored = steps[-1].state if steps else None
            state = self._load_state(stored)
            # A new process's "before" is its initial state: one whose first
            # event changes and decides nothing saves no step.
            before = stored or encode_json(self.converter.unstructure(state))
            process: Process[Any] = Process(pid, state, bool(steps), self.converter)
            await handler(self, recorded.event, process)
            done = process.step(recorded, before, self.name)
            if done is None:
                return
            await store.append(stream, [done], expected_version=len(steps))
        await self._carry_out(done, ctx)

    async def _carry_out(self, step: ProcessStepped, ctx: ReactionContext) -> None:
        """Carry out a saved step; its effects are keyed to the step, whoever carries it out."""
        for name in step.cancels:
            await ctx.cancel(name)
        for timer in step.schedules:
            command = self._command(ctx, timer.command)
            generation = uuid5(step.event_id, f"timer:{timer.name}")
            await ctx.schedule(timer.name, at=timer.at, command=command, generation=generation)
        for n, planned in enumerate(step.commands):
            command = self._command(ctx, planned)
            key = f"process:{step.event_id}:{n}"
            try:
                await ctx.send(attrs.evolve(command, idempotency_key=key))
            except DomainError as refused:
                # Decided and saved: a refusal cannot change the step. The
                # process learns what refused it from the events that follow.
                logger.info(
                    "process %s of %s: %s was refused: %s",
                    step.aggregate_id,
                    self.name,
                    type(command).__qualname__,
                    refused,
                )

    def _command(self, ctx: ReactionContext, planned: PlannedCommand) -> Command[Any]:
        return decode_command(self.converter, ctx.bus, planned.command_type, planned.fields)

    def _load_state(self, stored: str | None) -> object:
        kind: Callable[[], object] = type(self).state
        if stored is None:
            return kind()
        return self.converter.structure(decode_json(stored), type(self).state)
