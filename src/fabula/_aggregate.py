"""The Aggregate base class and the `apply` decorator for its event handlers."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Self, TypeVar
from uuid import UUID

import attrs

from fabula._events import _EMPTY_METADATA, AggregateId, DomainEvent, _current_metadata
from fabula._store import StreamAppend
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
E = TypeVar("E", bound=DomainEvent)

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


def _check_id(cls: type, value: object) -> None:
    if isinstance(value, UUID):
        return
    if not isinstance(value, str):
        raise InvalidAggregateIdError(cls, value, "an aggregate id must be a UUID or a str")
    if not value:
        raise InvalidAggregateIdError(cls, value, "an aggregate id must not be empty")


@attrs.define
class Aggregate:
    """Base class of event-sourced aggregates.

    Subclass it (an `@attrs.define` subclass is the natural form; give every
    state field a default, because the repository builds the blank aggregate
    with `cls(id=...)` before replaying its history). Domain methods check
    invariants and raise a `DomainError` before recording anything; then they
    call `record`, which stamps the event, applies it through its `@apply`
    handler, and keeps it as pending until the repository saves it.

    Attributes:
        id: The aggregate's id: a UUID, or a non-empty string. Its stream in
            the event store is `str(id)`.
    """

    # The id is checked in __attrs_post_init__, not by an attrs validator: a
    # validator would make every attribute assignment of every subclass run
    # attrs' on_setattr machinery, which costs apply handlers dearly.
    id: AggregateId = attrs.field(kw_only=True)
    _version: int = attrs.field(default=0, init=False)
    _pending: list[DomainEvent] = attrs.field(factory=list, init=False, eq=False, repr=False)

    snapshot_version: ClassVar[int] = 1
    """The schema version of this class's snapshots: bump it when its state fields change."""

    _fabula_handlers: ClassVar[dict[type[DomainEvent], _Handler] | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._fabula_handlers = None
        try:
            cls._fabula_handlers = _collect_handlers(cls)
        except NameError:
            # A forward reference to an event class defined further down the
            # module: resolve on first use instead.
            cls._fabula_handlers = None

    def __attrs_post_init__(self) -> None:
        _check_id(type(self), self.id)

    @property
    def version(self) -> int:
        """The version of the last event applied, saved or pending (0 when new)."""
        return self._version

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """The events recorded since the last load or save, oldest first."""
        return tuple(self._pending)

    @classmethod
    def from_events(cls, id: AggregateId, events: Iterable[DomainEvent]) -> Self:  # noqa: A002
        """Rebuild an aggregate by replaying its history.

        Args:
            id: The aggregate's id.
            events: Its stored events, in version order from 1.

        Raises:
            EventVersionError: The versions do not run 1, 2, 3...
            StreamMismatchError: An event belongs to another aggregate.
            MissingApplyHandlerError: An event has no apply handler here.
        """
        aggregate = cls(id=id)
        aggregate.replay(events)
        return aggregate

    def replay(self, events: Iterable[DomainEvent]) -> None:
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
        if event.aggregate_id not in ("", self.id):
            raise StreamMismatchError(
                str(self.id), event.aggregate_id, context=f"cannot record into {self._named()}"
            )
        metadata = _current_metadata.get()
        if metadata is not None and event.metadata == _EMPTY_METADATA:
            stamped = attrs.evolve(
                event, aggregate_id=self.id, version=self._version + 1, metadata=metadata
            )
        else:
            stamped = attrs.evolve(event, aggregate_id=self.id, version=self._version + 1)
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

    def mark_saved(self, events: Sequence[DomainEvent]) -> None:
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

    def _apply(self, event: DomainEvent) -> None:
        handlers = type(self)._fabula_handlers  # noqa: SLF001 - our own class attribute
        if handlers is None:
            handlers = type(self)._fabula_handlers = _resolve_handlers(type(self))  # noqa: SLF001
        handler = handlers.get(type(event))
        if handler is None:
            raise MissingApplyHandlerError(type(self), type(event), self.id)
        handler(self, event)
        self._version = event.version


def _resolve_handlers(cls: type) -> dict[type[DomainEvent], _Handler]:
    try:
        return _collect_handlers(cls)
    except NameError as exc:
        msg = (
            f"cannot resolve the event annotation of an apply handler of {cls.__qualname__}: "
            f"{exc}; define event classes at module level"
        )
        raise EventTypeError(msg) from exc


def _collect_handlers(cls: type) -> dict[type[DomainEvent], _Handler]:
    return collect_marked(cls, _MARK, "apply handler", ("self", "event"))


def collect_marked(
    cls: type, mark: str, kind: str, signature: tuple[str, ...]
) -> dict[type[DomainEvent], Any]:
    """Find the methods of `cls` (and its bases) marked with `mark`, by their event type.

    The event type is the annotation of each method's second parameter; a
    subclass's handler for a type replaces its base's.

    Raises:
        EventTypeError: A method does not take `signature`, its event
            parameter is not annotated with an event class, or one class has
            two handlers for one type.
    """
    handlers: dict[type[DomainEvent], Any] = {}
    for klass in reversed(cls.__mro__):
        own: dict[type[DomainEvent], str] = {}
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


def _event_type_of(
    where: str, method: Callable[..., None], signature: tuple[str, ...]
) -> type[DomainEvent]:
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
