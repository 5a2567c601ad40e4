"""What a projection is: a stable name, `@handles` methods per event type, a version guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from fabula._aggregate import marked_handlers
from fabula._events import DomainEvent
from fabula._store import RecordedEvent

__all__ = ["Projection", "TxT", "TxT_co", "TxT_contra", "VersionGuard", "handles"]

TxT = TypeVar("TxT")
"""The type of a store's projection transaction (`sqlite3.Connection`, `fabula.postgres.Tx`)."""
TxT_contra = TypeVar("TxT_contra", contravariant=True)
TxT_co = TypeVar("TxT_co", covariant=True)
F = TypeVar("F", bound=Callable[..., None])

_MARK = "__fabula_projects__"


def handles(method: F) -> F:
    """Mark a projection method as the handler of one event type.

    The event type is read from the annotation of its event parameter; the
    third parameter is the store's transaction (a `sqlite3.Connection` for
    the SQLite store), on which the handler writes its read-model rows:

        @fabula.handles
        def _created(self, event: OrderCreated, tx: sqlite3.Connection) -> None:
            tx.execute("INSERT INTO order_summary ...", (...))

    Returns:
        The method, unchanged apart from the mark.
    """
    setattr(method, _MARK, True)
    return method


class Projection(Generic[TxT_contra]):
    """Base class of projections: a stable `name` and `@handles` methods per event type.

    Events of types it has no handler for are not even read (the projector
    filters them in the store query). Handlers run inside the store's
    transaction, together with the projection's checkpoint.
    """

    name: ClassVar[str]
    """The projection's stable name: its checkpoint is kept under it."""

    tables: ClassVar[tuple[str, ...]] = ()
    """The read-model tables it owns (created by `setup`); `rebuild` replaces them."""

    park_after: ClassVar[int | None] = None
    """None (the default): a failing event stops the projection until it is fixed or
    skipped. N: after N failed attempts at one event, its stream is parked instead (it
    and that stream's later events wait, recorded with the checkpoint) and the other
    streams go on; `Projector.retry_parked` and `skip_parked` drain it in order. The
    store must keep parked events (`fabula.storage.ReactionStore`)."""

    _fabula_handlers: ClassVar[dict[type[DomainEvent[Any]], Any] | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # None while an annotation names a class defined later: resolved on use.
        cls._fabula_handlers = marked_handlers(
            cls, _MARK, "projection handler", _SIGNATURE, late=True
        )

    @classmethod
    def handlers(cls) -> dict[type[DomainEvent[Any]], Any]:
        """Return the handler of each event type this projection handles."""
        found = cls._fabula_handlers
        if found is None:
            found = marked_handlers(cls, _MARK, "projection handler", _SIGNATURE, late=False)
            assert found is not None  # noqa: S101 - late=False returns or raises
            cls._fabula_handlers = found
        return found

    def setup(self, tx: TxT_contra) -> None:
        """Create the read model's tables if they do not exist (default: nothing)."""

    def handle(self, recorded: RecordedEvent, tx: TxT_contra) -> None:
        """Apply one event through its handler (events without one are ignored)."""
        handler = self.handlers().get(type(recorded.event))
        if handler is not None:
            handler(self, recorded.event, tx)


_SIGNATURE = ("self", "event", "tx")


@attrs.define
class VersionGuard:
    """Makes replays harmless for read models outside the store's transaction.

    Remember, per aggregate, the highest event version applied; `fresh`
    answers whether an event is newer, so a handler applies it only once
    even if the projector delivers it again after a crash. Keep the guard's
    state with the read model (`versions` is a plain dict to store), or
    use the same rule in SQL: `UPDATE ... WHERE id = :id AND version < :event_version`.

    Example:
        >>> guard = VersionGuard()
        >>> if guard.fresh(event):
        ...     totals[event.aggregate_id] += event.amount
    """

    versions: dict[str, int] = attrs.Factory(dict)

    def fresh(self, event: DomainEvent[Any]) -> bool:
        """Return True, and remember it, if `event` is newer than any applied for its aggregate."""
        key = str(event.aggregate_id)
        if event.version <= self.versions.get(key, 0):
            return False
        self.versions[key] = event.version
        return True


class HandlerFailedError(Exception):
    """A projection's handler raised: which event (by index in its batch), and what."""

    def __init__(self, index: int, recorded: RecordedEvent, cause: BaseException) -> None:
        self.index = index
        self.recorded = recorded
        self.cause = cause
        super().__init__(repr(cause))


def apply_all(projection: Projection[Any], events: Sequence[RecordedEvent], tx: object) -> None:
    """Apply events in order; a failing handler is reported with its event's index."""
    for index, recorded in enumerate(events):
        try:
            projection.handle(recorded, tx)
        except Exception as exc:
            raise HandlerFailedError(index, recorded, exc) from exc
