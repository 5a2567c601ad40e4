"""The projection side of a store: its protocols, and the decisions every store shares.

Backends do I/O; this module decides: whether a checkpoint may move
(`require_checkpoint`), how a failed handler is reported (`apply_events`)
and how a read model is rebuilt from the log (`build_from_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from fabula._projection import Projection, TxT, TxT_co
from fabula._store import EventTypeFilter, RecordedEvent
from fabula._store_base import LogPage
from fabula.exceptions import CheckpointError, ProjectionError

__all__ = [
    "ProjectionLeases",
    "ProjectionStore",
    "SkippedEvent",
    "apply_events",
    "build_from_log",
    "require_checkpoint",
]


@attrs.frozen
class SkippedEvent:
    """An event an operator told a projection to pass over, as recorded.

    Attributes:
        position: The event's global position.
        event_class: The event's class name (`__qualname__`).
        reason: Why, in the operator's words.
        skipped_at: When.
    """

    position: int
    event_class: str
    reason: str
    skipped_at: datetime


@runtime_checkable
class ProjectionStore(Protocol[TxT_co]):
    """A store that keeps projection checkpoints with the projections' writes.

    `transactional` tells whether a failed `commit_projection` undoes what
    its work wrote (SQLite: yes; the in-memory store: no, its read models
    are plain Python objects).
    """

    @property
    def transactional(self) -> bool:
        """Whether a failed `commit_projection` undoes what its work wrote."""
        ...

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        ...

    async def commit_projection(
        self, name: str, *, expected: int, position: int, work: Callable[[TxT_co], None]
    ) -> None:
        """Run `work` and move the checkpoint from `expected` to `position`, atomically."""
        ...

    async def read_log(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> LogPage:
        """Read the log after `after`, and tell how far it was read."""
        ...

    async def wait_for_commit(self, after: int, max_wait: float) -> None:
        """Return once events after `after` may exist, or after `max_wait` seconds."""
        ...

    async def head_position(self) -> int:
        """Return the position of the last committed event."""
        ...

    async def count_events(
        self, *, after: int = 0, event_types: EventTypeFilter | None = None
    ) -> int:
        """Count the committed events after `after` (of `event_types`): a projection's lag."""
        ...

    async def skip_event(self, name: str, *, position: int, event_class: str, reason: str) -> None:
        """Move checkpoint `name` from `position - 1` past `position`, recording the skip."""
        ...

    async def rebuild_projection(
        self,
        projection: Projection[TxT_co],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Build the projection afresh beside the live one, then switch; return its checkpoint."""
        ...

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        ...


@runtime_checkable
class ProjectionLeases(Protocol):
    """A store that decides which of several processes runs each projection.

    `Projector.run` holds a projection's lease while it follows the log, and
    stands by (following the active process's checkpoint) while another
    process holds it.
    """

    def projection_lease(self, name: str) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        """Hold the right to run projection `name`; the event is set if the lease is lost."""
        ...


def require_checkpoint(name: str, stored: int, *, expected: int, moving_to: int) -> None:
    """Check that checkpoint `name` is where a writer expects it before moving it.

    Raises:
        CheckpointError: Another projector moved it.
    """
    if stored != expected:
        raise CheckpointError(name, stored, moving_to)


def apply_events(projection: Projection[TxT], events: Sequence[RecordedEvent], tx: TxT) -> None:
    """Apply events in order during a rebuild; a failing handler stops it.

    Raises:
        ProjectionError: A handler raised; it names the event.
    """
    for recorded in events:
        try:
            projection.handle(recorded, tx)
        except Exception as exc:
            kind = type(recorded.event).__qualname__
            raise ProjectionError(projection.name, recorded.position, kind, exc) from exc


class LogReader(Protocol):
    """What `build_from_log` reads: the log in pages, and its head."""

    async def read_log(
        self, *, after: int = 0, limit: int = 1000, event_types: EventTypeFilter | None = None
    ) -> LogPage:
        """Read the log after `after`, and tell how far it was read."""
        ...

    async def head_position(self) -> int:
        """Return the position of the last committed event."""
        ...


async def build_from_log(
    log: LogReader,
    projection: Projection[TxT],
    apply_batch: Callable[[list[RecordedEvent]], Awaitable[None]],
    *,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Feed a side copy of a read model every event of its types, from position 0.

    Args:
        log: Where the events come from.
        projection: Whose event types to read.
        apply_batch: Applies one batch to the side copy (in a transaction of its own).
        batch_size: Events per batch.
        progress: Called as `progress(done, total)` in log positions.

    Returns:
        The position the side copy is built up to: its checkpoint once swapped in.
    """
    types = tuple(projection.handlers())
    position = 0
    while True:
        head = await log.head_position()
        page = await log.read_log(after=position, limit=batch_size, event_types=types)
        if page.position <= position:
            return position
        await apply_batch(page.events)
        position = page.position
        if progress is not None:
            progress(position, max(head, position))
