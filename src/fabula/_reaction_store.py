"""The reaction side of a store: parked events and durable timers, and what stores share.

A store keeps, in its own database, the two things reactions need beyond
a checkpoint: the events each reaction has *parked* (one that kept
failing, and those of its stream waiting behind it), and *timers* (a
command to dispatch at a time). The protocols here say what a store
does; `fabula._reactor` decides when.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import attrs

__all__ = [
    "CHECKPOINT_PREFIX",
    "PARKING_PREFIX",
    "ParkRequest",
    "ParkedEvent",
    "ReactionStore",
    "Timer",
    "TimerStore",
    "ask_parked",
    "checkpoint_name",
    "skips_name",
]

CHECKPOINT_PREFIX = "reaction:"
"""Reactions keep their checkpoints beside projections', under this prefix and their name."""


def checkpoint_name(reaction: str) -> str:
    """The checkpoint (and lease) name of reaction `reaction`."""
    return CHECKPOINT_PREFIX + reaction


PARKING_PREFIX = "projection:"
"""A parking projection's parked events are kept under this prefix and its name."""


def skips_name(parked_as: str) -> str:
    """Where skips of events parked under `parked_as` are recorded (`load_skips`).

    A projection's (`projection:<name>`) under its own name, beside the
    skips of its stopped events; a reaction's under its checkpoint.
    """
    if parked_as.startswith(PARKING_PREFIX):
        return parked_as.removeprefix(PARKING_PREFIX)
    return checkpoint_name(parked_as)


class ParkRequest(enum.StrEnum):
    """What an operator asked of a parked stream; each equals its str value."""

    RETRY = "retry"
    """Handle the parked events again, in order, from the first."""
    SKIP = "skip"
    """Pass over the first parked event (recording the reason), then handle the rest."""


@attrs.frozen
class ParkedEvent:
    """An event a reaction set aside: the one that kept failing, or one waiting behind it.

    Attributes:
        reaction: The reaction's name.
        position: The event's global position.
        stream_id: The lane that is parked: the event's stream (for a process
            manager, `process:<process id>`; see `Reaction.lane`).
        version: Its version in the stream.
        event_class: Its class name (`__qualname__`).
        error: The last error (`repr`), for the event that failed; None for
            the events waiting behind it.
        attempts: How many times it was tried (0 for those waiting).
        parked_at: When it was parked.
        request: What an operator asked for, not yet carried out.
        reason: The operator's reason, with a skip.
    """

    reaction: str
    position: int
    stream_id: str
    version: int
    event_class: str
    error: str | None
    attempts: int
    parked_at: datetime
    request: ParkRequest | None = None
    reason: str | None = None


@runtime_checkable
class ReactionStore(Protocol):
    """A store that keeps reactions' parked events with their checkpoints.

    Checkpoints are the projection checkpoints (`ProjectionStore`) under
    `checkpoint_name(reaction)`; skipped events are recorded as a
    projection's are (`load_skips`).
    """

    async def commit_reaction(
        self, reaction: str, *, expected: int, position: int, parked: Sequence[ParkedEvent]
    ) -> None:
        """Move `reaction`'s checkpoint from `expected` to `position`, keep `parked`, atomically.

        Raises:
            CheckpointError: The checkpoint is not at `expected`.
        """
        ...

    async def load_parked(self, reaction: str | None = None) -> list[ParkedEvent]:
        """Return the parked events of `reaction` (None: of every reaction), by position."""
        ...

    async def request_parked(
        self, reaction: str, position: int, request: ParkRequest, reason: str | None
    ) -> bool:
        """Record an operator's request on a parked event; return whether it is parked."""
        ...

    async def repark(self, reaction: str, position: int, *, error: str, attempts: int) -> None:
        """Record that a parked event failed again, clearing any request on it."""
        ...

    async def release_parked(
        self, reaction: str, position: int, *, skipped: tuple[str, str] | None = None
    ) -> None:
        """Remove a parked event: handled at last, or skipped (`(event_class, reason)` recorded)."""
        ...

    async def commit_projection_parked(
        self,
        name: str,
        *,
        expected: int,
        position: int,
        work: Callable[[Any], None],
        park: Sequence[ParkedEvent] = (),
        release: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`commit_projection`, keeping `park` and removing `release` in the same transaction.

        A projection that parks streams (`Projection.park_after`) commits
        its read-model writes, its checkpoint and its parked events together;
        `release` names parked events by `(reaction, position)`. `position`
        may equal `expected` (a parked event applied, the checkpoint kept).

        Raises:
            CheckpointError: Checkpoint `name` is not at `expected`.
        """
        ...


@attrs.frozen
class Timer:
    """A command to dispatch at a time, once: a durable timer.

    A timer is known by its `name`: scheduling a name again replaces it.
    Each schedule has a new `generation`, and the command fires with the
    idempotency key `timer:<name>:<generation>`, so even two processes
    firing one timer (or one firing it again after a crash) commit its
    effect once.

    Schedules and cancellations made by reactions carry the log position
    of the event that made them (`sequence`): a store applies one only if
    it is newer than the last applied to that name, and remembers a name
    cancelled or fired. An event handled again after a crash therefore
    neither brings back a timer a later event cancelled, nor moves one a
    later event moved.

    Attributes:
        name: The logical timer, unique in the store.
        due_at: When it fires.
        command_type: The command's class, as `module:qualname`.
        command: The command's fields, as JSON.
        generation: Which schedule of `name` this is.
        attempts: How many times firing it has failed.
        last_error: The last failure, as `repr`.
        claimed_until: While a process fires it, until when it holds it.
        sequence: The log position of the event that scheduled it (None when
            no event did: the last schedule or cancellation then wins).
    """

    name: str
    due_at: datetime
    command_type: str
    command: str
    generation: UUID
    attempts: int = 0
    last_error: str | None = None
    claimed_until: datetime | None = None
    sequence: int | None = None

    def claimable(self, now: datetime) -> bool:
        """Whether it is due at `now` and no process holds it."""
        return self.due_at <= now and (self.claimed_until is None or self.claimed_until <= now)


@runtime_checkable
class TimerStore(Protocol):
    """A store that keeps durable timers in its own database."""

    async def schedule_timer(self, timer: Timer) -> None:
        """Keep `timer`, replacing the timer of the same name, pending or done.

        Unless both carry a `sequence` and the stored one's is not older:
        then nothing changes (an event handled again).
        """
        ...

    async def cancel_timer(self, name: str, *, sequence: int | None = None) -> bool:
        """Cancel timer `name`; return whether it was pending.

        With a `sequence`, a timer scheduled by a newer event is left alone,
        and a name with no timer is remembered as cancelled at `sequence`.
        """
        ...

    async def claim_timers(self, now: datetime, *, until: datetime, limit: int) -> list[Timer]:
        """Claim up to `limit` timers due at `now` and not claimed past `now`, until `until`.

        A claimed timer is not returned again to any caller before `until`,
        so several processes share the due timers between them.
        """
        ...

    async def finish_timer(self, name: str, generation: UUID) -> None:
        """Mark timer `name` fired if it is still generation `generation` (not pending since)."""
        ...

    async def retry_timer(
        self, name: str, generation: UUID, *, due_at: datetime, error: str
    ) -> None:
        """Record a failed firing of generation `generation`: due again at `due_at`."""
        ...

    async def load_timers(self) -> list[Timer]:
        """Return the pending timers (not cancelled, not fired), soonest first."""
        ...


async def ask_parked(
    store: ReactionStore,
    reaction: str,
    stream_id: str,
    request: ParkRequest,
    reason: str | None = None,
) -> ParkedEvent:
    """Record an operator's request on parked stream `stream_id` of `reaction`.

    The request goes on the stream's first parked event (a skip, with its
    reason) and a retry on each one after it, so that a drain cut short (a
    lost connection) carries on from what is left; the process running the
    reaction carries it out (within `idle_wait` seconds). This is what
    `Reactor.retry`/`Reactor.skip`, the projector's `retry_parked` and
    `skip_parked`, and the `fabula` command do.

    Returns:
        The parked event the request is on.

    Raises:
        ValueError: A skip without a reason.
        LookupError: The stream is not parked in that reaction.
    """
    if request is ParkRequest.SKIP and not (reason and reason.strip()):
        msg = "say why the event is skipped: the reason is recorded"
        raise ValueError(msg)
    rows = [p for p in await store.load_parked(reaction) if p.stream_id == stream_id]
    if not rows or not await store.request_parked(reaction, rows[0].position, request, reason):
        msg = f"stream {stream_id!r} is not parked in reaction {reaction!r}"
        raise LookupError(msg)
    for later in rows[1:]:
        await store.request_parked(reaction, later.position, ParkRequest.RETRY, None)
    return attrs.evolve(rows[0], request=request, reason=reason)
