"""The Aggregate base class and the `apply` decorator for its event handlers."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Generic, Self
from uuid import UUID, uuid4

import attrs
from typing_extensions import TypeVar

from fabula._events import (
    _EMPTY_METADATA,
    AggregateId,
    DomainEvent,
    EventMetadata,
    IdKind,
    IdT,
    _current_metadata,
    coerce_id,
    declared_id_type,
    id_problem,
    id_type,
)
from fabula._store import StreamAppend
from fabula._telemetry import trace_headers
from fabula.exceptions import (
    EventTypeError,
    EventVersionError,
    InvalidAggregateIdError,
    MissingApplyHandlerError,
    StreamMismatchError,
    _shown,
)

__all__ = ["Aggregate", "apply"]

F = TypeVar("F", bound=Callable[..., None])
E = TypeVar("E", bound=DomainEvent[Any])

_MARK = "__fabula_apply__"
_Handler = Callable[[Any, Any], None]


def apply(method: F) -> F:
    """Mark an aggregate method as the apply handler for one event type.

    The event type is read from the annotation of the method's event
    parameter, so the handler is typed without repeating it:

        @fabula.apply
        def _item_added(self, event: OrderItemAdded) -> None:
            self.lines[event.product_id] = event.quantity

    Apply handlers only change state; they never check invariants or fail,
    so replaying history always succeeds.

    Returns:
        The method, unchanged apart from the mark.
    """
    setattr(method, _MARK, True)
    return method


@attrs.define
class Aggregate(Generic[IdT]):
    """Base class of event-sourced aggregates.

    Subclass it (an `@attrs.define` subclass is the natural form; give every
    state field a default, because the repository builds the blank aggregate
    with `cls(id=...)` before replaying its history). Domain methods check
    invariants and raise a `DomainError` before recording anything; then they
    call `record`, which stamps the event, applies it through its `@apply`
    handler, and keeps it as pending until the repository saves it.

    The id's type is the class's parameter: `class Book(fabula.Aggregate)`
    has UUID ids, `class Shelf(fabula.Aggregate[str])` string ones (a
    `typing.NewType` of either works too). An id given as text of the
    declared kind is converted (`Book(id="1b2c...")` holds a UUID), so
    `repo.get(Book, text).id` is a UUID for mypy and at run time.

    Attributes:
        id: The aggregate's id. Its stream in the event store is `str(id)`.
    """

    # The id is checked in __attrs_post_init__, not by an attrs validator: a
    # validator would make every attribute assignment of every subclass run
    # attrs' on_setattr machinery, which costs apply handlers dearly.
    id: IdT = attrs.field(kw_only=True)
    _version: int = attrs.field(default=0, init=False)
    _pending: list[DomainEvent[Any]] = attrs.field(factory=list, init=False, eq=False, repr=False)

    snapshot_version: ClassVar[int] = 1
    """The schema version of this class's snapshots: bump it when its state fields change."""

    _fabula_handlers: ClassVar[dict[type[DomainEvent[Any]], _Handler] | None] = None
    _fabula_id_type: ClassVar[IdKind] = UUID

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._fabula_id_type = declared_id_type(cls, Aggregate)
        cls._fabula_handlers = None
        try:
            cls._fabula_handlers = _collect_handlers(cls)
        except NameError:
            # A forward reference to an event class defined further down the
            # module: resolve on first use instead.
            cls._fabula_handlers = None

    def __attrs_post_init__(self) -> None:
        self.id = type(self).coerce_id(self.id)

    @classmethod
    def coerce_id(cls, value: object) -> IdT:
        """`value` as an id of this class: a UUID (or its text) or a str, as declared.

        Raises:
            InvalidAggregateIdError: It cannot be one.
        """
        kind = cls._fabula_id_type
        problem = id_problem(kind, value)
        if problem is not None:
            raise InvalidAggregateIdError(cls, value, _id_reason(kind, problem))
        return coerce_id(kind, value)  # type: ignore[arg-type, return-value] # checked above

    @classmethod
    def new_id(cls) -> IdT:
        """A fresh, random id of this class's declared type (from a UUID 4)."""
        fresh = uuid4()
        return cls.coerce_id(fresh if issubclass(cls._fabula_id_type, UUID) else str(fresh))

    @property
    def version(self) -> int:
        """The version of the last event applied, saved or pending (0 when new)."""
        return self._version

    @property
    def pending_events(self) -> tuple[DomainEvent[Any], ...]:
        """The events recorded since the last load or save, oldest first."""
        return tuple(self._pending)

    @classmethod
    def from_events(cls, id: AggregateId, events: Iterable[DomainEvent[Any]]) -> Self:  # noqa: A002
        """Rebuild an aggregate by replaying its history.

        Args:
            id: The aggregate's id.
            events: Its stored events, in version order from 1.

        Raises:
            EventVersionError: The versions do not run 1, 2, 3...
            StreamMismatchError: An event belongs to another aggregate.
            MissingApplyHandlerError: An event has no apply handler here.
        """
        aggregate = cls(id=cls.coerce_id(id))
        aggregate.replay(events)
        return aggregate

    def replay(self, events: Iterable[DomainEvent[Any]]) -> None:
        """Apply stored events that follow on from the current version.

        Raises:
            EventVersionError: An event does not have the next version.
            StreamMismatchError: An event belongs to another aggregate.
            MissingApplyHandlerError: An event has no apply handler here.
        """
        own_id = self.id
        for event in events:
            if not isinstance(event, DomainEvent):
                msg = f"cannot replay {event!r} into {self._named()}: it is not a DomainEvent"
                raise EventTypeError(msg)
            if event.version != self._version + 1:
                raise EventVersionError(
                    str(own_id),
                    event.version,
                    self._version + 1,
                    context=f"cannot replay {self._named()}",
                )
            # Comparing ids first spares a str(UUID) per event on the usual path.
            if event.aggregate_id != own_id and str(event.aggregate_id) != str(own_id):
                raise StreamMismatchError(
                    str(own_id), event.aggregate_id, context=f"cannot replay {self._named()}"
                )
            self._apply(event)

    def _named(self) -> str:
        """The aggregate as error messages name it: its class and id."""
        return f"{type(self).__qualname__} {_shown(str(self.id))}"

    def record(self, event: E) -> E:
        """Record a new event: stamp it, apply it, and keep it pending.

        Call it from domain methods after the invariants are checked.

        Args:
            event: The event, with its own fields set; `aggregate_id` and
                `version` are filled in.

        Returns:
            The stamped event.

        Raises:
            EventTypeError: `event` is not a DomainEvent.
            StreamMismatchError: `event` already names another aggregate.
            MissingApplyHandlerError: There is no apply handler for it.
        """
        if not isinstance(event, DomainEvent):
            msg = f"{event!r} is not a DomainEvent"
            raise EventTypeError(msg)
        own_id = self.id
        given_id = event.aggregate_id
        if given_id not in ("", own_id) and str(given_id) != str(own_id):
            raise StreamMismatchError(
                str(own_id), given_id, context=f"cannot record into {self._named()}"
            )
        kind = id_type(type(event))
        # The event carries the id as its own class declares it (a str event of a UUID aggregate).
        if isinstance(own_id, kind):
            stamp_id: UUID | str = own_id
        elif id_problem(kind, own_id) is None:
            stamp_id = coerce_id(kind, own_id)
        else:
            msg = (
                f"{type(event).__qualname__}'s aggregate_id is a {kind.__name__}, but "
                f"{self._named()} has {type(own_id).__name__} ids: declare it "
                f"{type(event).__qualname__}(fabula.DomainEvent[{type(own_id).__name__}])"
            )
            raise EventTypeError(msg)
        metadata = _context_metadata()
        if metadata is not None and event.metadata == _EMPTY_METADATA:
            stamped = attrs.evolve(
                event, aggregate_id=stamp_id, version=self._version + 1, metadata=metadata
            )
        else:
            stamped = attrs.evolve(event, aggregate_id=stamp_id, version=self._version + 1)
        self._apply(stamped)
        self._pending.append(stamped)
        return stamped

    def pending_append(self) -> StreamAppend | None:
        """Return the append that would store the pending events (None if there are none).

        Its expected version is the version the aggregate was loaded at.
        """
        events = self.pending_events
        if not events:
            return None
        return StreamAppend(str(self.id), events, expected_version=self._version - len(events))

    def mark_saved(self, events: Sequence[DomainEvent[Any]]) -> None:
        """Drop `events` from the pending events once they are stored.

        The repository calls this after a successful append; `events` must be
        the oldest pending events, in order.

        Raises:
            ValueError: `events` are not the oldest pending events.
        """
        count = len(events)
        if any(a is not b for a, b in zip(self._pending[:count], events, strict=False)) or (
            count > len(self._pending)
        ):
            msg = "the saved events are not the oldest pending events of this aggregate"
            raise ValueError(msg)
        del self._pending[:count]

    def restore_version(self, version: int) -> None:
        """Set the version of an aggregate rebuilt from a snapshot (used by the repository).

        Raises:
            ValueError: The aggregate has pending events or `version` is below 0.
        """
        if self._pending or version < 0:
            msg = f"cannot restore version {version} on this aggregate"
            raise ValueError(msg)
        self._version = version

    def _apply(self, event: DomainEvent[Any]) -> None:
        handlers = type(self)._fabula_handlers  # noqa: SLF001 - our own class attribute
        if handlers is None:
            handlers = type(self)._fabula_handlers = _resolve_handlers(type(self))  # noqa: SLF001
        handler = handlers.get(type(event))
        if handler is None:
            raise MissingApplyHandlerError(type(self), type(event), self.id)
        handler(self, event)
        self._version = event.version


def _resolve_handlers(cls: type) -> dict[type[DomainEvent[Any]], _Handler]:
    try:
        return _collect_handlers(cls)
    except NameError as exc:
        msg = (
            f"cannot resolve the event annotation of an apply handler of {cls.__qualname__}: "
            f"{exc}; define event classes at module level"
        )
        raise EventTypeError(msg) from exc


def _collect_handlers(cls: type) -> dict[type[DomainEvent[Any]], _Handler]:
    return collect_marked(cls, _MARK, "apply handler", ("self", "event"))


def collect_marked(
    cls: type, mark: str, kind: str, signature: tuple[str, ...]
) -> dict[type[DomainEvent[Any]], Any]:
    """Find the methods of `cls` (and its bases) marked with `mark`, by their event type.

    The event type is the annotation of each method's second parameter; a
    subclass's handler for a type replaces its base's.

    Raises:
        EventTypeError: A method does not take `signature`, its event
            parameter is not annotated with an event class, or one class has
            two handlers for one type.
    """
    handlers: dict[type[DomainEvent[Any]], Any] = {}
    for klass in reversed(cls.__mro__):
        own: dict[type[DomainEvent[Any]], str] = {}
        for name, member in vars(klass).items():
            if not getattr(member, mark, False):
                continue
            event_type = _event_type_of(f"{kind} {klass.__qualname__}.{name}", member, signature)
            if event_type in own:
                msg = (
                    f"{klass.__qualname__} has two {kind}s for "
                    f"{event_type.__qualname__}: {own[event_type]} and {name}"
                )
                raise EventTypeError(msg)
            own[event_type] = name
            handlers[event_type] = member
    return handlers


def marked_handlers(
    cls: type, mark: str, kind: str, signature: tuple[str, ...], *, late: bool
) -> dict[type[DomainEvent[Any]], Any] | None:
    """`collect_marked` for a class's own use: None (with `late`) while an annotation is unknown.

    A class is built before the event classes later in its module exist:
    at class creation pass `late=True` and collect again on first use.

    Raises:
        EventTypeError: As `collect_marked`; without `late`, also an annotation
            that still cannot be resolved.
    """
    try:
        return collect_marked(cls, mark, kind, signature)
    except NameError as exc:
        if late:
            return None
        msg = f"cannot resolve a handler annotation of {cls.__qualname__}: {exc}"
        raise EventTypeError(msg) from exc


def _event_type_of(
    where: str, method: Callable[..., None], signature: tuple[str, ...]
) -> type[DomainEvent[Any]]:
    parameters = list(inspect.signature(method).parameters.values())
    if len(parameters) != len(signature):
        msg = f"{where} must take exactly ({', '.join(signature)})"
        raise EventTypeError(msg)
    hints = typing.get_type_hints(method)
    event_type = hints.get(parameters[1].name)
    if not (isinstance(event_type, type) and issubclass(event_type, DomainEvent)):
        msg = (
            f"{where}: annotate its event parameter with a DomainEvent "
            f"subclass (found {event_type!r})"
        )
        raise EventTypeError(msg)
    return event_type


def _id_reason(kind: IdKind, problem: str) -> str:
    if issubclass(kind, UUID):
        return f"{problem} (declare the class Aggregate[str] for other ids)"
    return problem


def _context_metadata() -> EventMetadata | None:
    """The metadata events recorded now get: the message's ids, and the current span's context."""
    metadata = _current_metadata.get()
    traced = trace_headers()  # the recording span's W3C context, if a span is current
    if traced:
        base = metadata or _EMPTY_METADATA
        metadata = attrs.evolve(base, headers={**base.headers, **traced})
    return metadata
