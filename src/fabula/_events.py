"""DomainEvent, its metadata, and the registry of stored event names."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeAlias
from uuid import UUID

import attrs
from typing_extensions import TypeVar

from fabula._frozen import FrozenDict
from fabula._guards import is_int, utcnow
from fabula._personal import check_personal
from fabula._uuids import new_event_id
from fabula.exceptions import DuplicateEventTypeError, EventTypeError, UnregisteredEventError

__all__ = [
    "BASE_FIELDS",
    "AggregateId",
    "DomainEvent",
    "EventMetadata",
    "EventRegistration",
    "EventRegistry",
    "IdT",
    "JSONObject",
    "JSONValue",
    "Upcaster",
    "default_registry",
    "event",
    "upcaster",
]

AggregateId: TypeAlias = UUID | str
"""Any aggregate id: a UUID (the default) or a non-empty string."""

IdT = TypeVar("IdT", bound="UUID | str", default=UUID)
"""The id type an aggregate or an event declares: `Aggregate[str]`; UUID if unsaid."""

IdKind: TypeAlias = type[UUID] | type[str]
"""An id type at run time: UUID or str, or a subclass of either."""

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""Any value JSON can hold."""

JSONObject: TypeAlias = dict[str, JSONValue]
"""A JSON object: what an upcaster receives and returns."""

Upcaster: TypeAlias = Callable[[JSONObject], JSONObject]
"""A function that turns a stored payload of schema version N into version N + 1."""

E = TypeVar("E", bound="DomainEvent[Any]")


def _frozen_headers(headers: Mapping[str, str]) -> FrozenDict[str, str]:
    frozen = headers if isinstance(headers, FrozenDict) else FrozenDict(headers)
    for key, value in frozen.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            msg = f"metadata headers must map str to str, not {key!r}: {value!r}"
            raise TypeError(msg)
    return frozen


_optional_uuid = attrs.validators.optional(attrs.validators.instance_of(UUID))


@attrs.frozen
class EventMetadata:
    """Where an event came from: which request started it and what caused it.

    Attributes:
        correlation_id: Shared by every message and event of one logical
            operation (for example one HTTP request).
        causation_id: The id of the message (usually the command) that caused
            this event.
        headers: Further string key/value pairs, stored with the event.
    """

    correlation_id: UUID | None = attrs.field(default=None, validator=_optional_uuid)
    causation_id: UUID | None = attrs.field(default=None, validator=_optional_uuid)
    headers: FrozenDict[str, str] = attrs.field(factory=FrozenDict, converter=_frozen_headers)


_EMPTY_METADATA = EventMetadata()


@attrs.frozen(kw_only=True)
class DomainEvent(Generic[IdT]):
    """Base class of every event: subclass it as a frozen attrs class.

    Users declare only their own fields; the base fields are filled in for
    them (the aggregate, or the store on a direct append, sets `aggregate_id`
    and `version`). Give each event class a stable stored name with
    `fabula.event`.

    The type of `aggregate_id` is the class's parameter: a UUID unless said
    otherwise (`class Deposited(fabula.DomainEvent[str])` for string ids;
    a `typing.NewType` of either works too). Events read back carry that
    type, and a store refuses to append an event to a stream whose id is
    not one of that type.

    Example:
        >>> import attrs, fabula
        >>> @fabula.event("docs.Renamed")
        ... @attrs.frozen
        ... class Renamed(fabula.DomainEvent):
        ...     name: str
        >>> Renamed(name="x").version
        0

    Attributes:
        aggregate_id: The aggregate (and so the stream, `str(aggregate_id)`)
            this event belongs to; `""` until it is recorded.
        version: The event's position in its stream, from 1; 0 until it is
            recorded.
        event_id: A unique id, used to make retried appends idempotent (by
            default a new UUID of version 7, whose first bits are the time).
        timestamp: When the event happened, timezone-aware UTC.
        metadata: Correlation and causation ids.
    """

    # "" until recorded: typed as the declared id, which every recorded event carries.
    aggregate_id: IdT = ""  # type: ignore[assignment]
    version: int = 0
    event_id: UUID = attrs.field(factory=new_event_id)
    timestamp: datetime = attrs.field(factory=utcnow)
    metadata: EventMetadata = _EMPTY_METADATA

    _fabula_id_type: ClassVar[IdKind] = UUID

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed on as given
        super().__init_subclass__(**kwargs)
        cls._fabula_id_type = declared_id_type(cls, DomainEvent)


def declared_id_type(cls: type, generic: type) -> IdKind:
    """The id type `cls` declares through `generic` (`Aggregate` or `DomainEvent`): UUID if none.

    The nearest `generic[X]` among the class's bases decides; a NewType
    stands for the type it wraps.

    Raises:
        EventTypeError: X is neither UUID, str, nor a subclass or NewType of one.
    """
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is not generic:
                continue
            (declared,) = typing.get_args(base)
            kind = declared
            while isinstance(getattr(kind, "__supertype__", None), type | typing.NewType):
                kind = kind.__supertype__
            if isinstance(kind, TypeVar | typing.TypeVar):
                break  # a generic subclass that leaves the choice to its own subclasses
            if isinstance(kind, type) and issubclass(kind, UUID):
                return kind
            if isinstance(kind, type) and issubclass(kind, str):
                return kind
            msg = (
                f"{cls.__qualname__}: an id type must be UUID or str (or a subclass or "
                f"NewType of one), not {declared!r}"
            )
            raise EventTypeError(msg)
    return UUID


def id_type(cls: type) -> IdKind:
    """The id type an aggregate or event class declares (UUID unless it says otherwise)."""
    kind: IdKind = getattr(cls, "_fabula_id_type", UUID)
    return kind


def id_problem(kind: IdKind, value: object) -> str | None:
    """Why `value` cannot be an id of type `kind` (a UUID or str type), or None if it can."""
    if issubclass(kind, UUID):
        if isinstance(value, UUID):
            return None
        if isinstance(value, str):
            return None if _uuid_text(value) is not None else "it is not the text of a UUID"
        return "an id must be a UUID, or the text of one"
    if isinstance(value, UUID):
        return None
    if not isinstance(value, str):
        return "an id must be a UUID or a str"
    return None if value else "an id must not be empty"


def coerce_id(kind: IdKind, value: UUID | str) -> UUID | str:
    """`value` as an id of type `kind`; check it with `id_problem` first."""
    if isinstance(value, kind):
        return value
    if issubclass(kind, UUID):
        parsed = _uuid_text(value) if isinstance(value, str) else value
        if parsed is None:
            msg = f"{value!r} is not the text of a UUID"
            raise ValueError(msg)
        return parsed if kind is UUID else kind(str(parsed))
    return kind(str(value))


def stream_id_as(kind: IdKind, stream_id: str) -> UUID | str:
    """The id of type `kind` that stream `stream_id` stands for (a stream id is `str(id)`).

    Raises:
        ValueError: `kind` is a UUID type and the stream id is not the
            canonical text of a UUID (as `str(uuid)` writes it).
    """
    if kind is str:
        return stream_id
    if issubclass(kind, UUID):
        parsed = _canonical_uuid(stream_id)
        if parsed is None:
            msg = f"stream {stream_id!r} is not the canonical text of a UUID"
            raise ValueError(msg)
        return parsed if kind is UUID else kind(stream_id)
    return kind(stream_id)


@functools.lru_cache(maxsize=8192)
def _canonical_uuid(text: str) -> UUID | None:
    """The UUID whose `str` is `text`, or None (cached: a stream's events share their id)."""
    parsed = _uuid_text(text) if len(text) == 36 else None  # noqa: PLR2004 - len(str(uuid))
    return parsed if parsed is not None and str(parsed) == text else None


def _uuid_text(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


BASE_FIELDS: frozenset[str] = frozenset(a.name for a in attrs.fields(DomainEvent))
"""The names of the fields every event inherits from `DomainEvent`."""


@attrs.frozen
class EventRegistration:
    """One registered event class.

    Attributes:
        name: The stable stored name.
        cls: The class.
        version: The current schema version of its payload.
    """

    name: str
    cls: type[DomainEvent[Any]]
    version: int


@attrs.define(repr=False)
class EventRegistry:
    """Maps stable stored names to event classes, with schema versions and upcasters.

    Most applications use the process-wide `default_registry` through the
    `fabula.event` and `fabula.upcaster` decorators; a separate registry
    isolates tests or several applications in one process.
    """

    _by_name: dict[str, EventRegistration] = attrs.Factory(dict)
    _by_class: dict[type[DomainEvent[Any]], EventRegistration] = attrs.Factory(dict)
    _upcasters: dict[tuple[str, int], Upcaster] = attrs.Factory(dict)

    def __repr__(self) -> str:
        return (
            f"<EventRegistry: {len(self._by_name)} event types, {len(self._upcasters)} upcasters>"
        )

    def register(
        self, cls: type[DomainEvent[Any]], name: str, *, version: int = 1
    ) -> EventRegistration:
        """Register `cls` under the stored `name` at schema `version`.

        Registering the same class again (same module and qualified name, as
        after a module reload) replaces the earlier registration.

        Raises:
            DuplicateEventTypeError: Another class already has `name`.
            EventTypeError: `cls` is not a decorated attrs subclass of
                `DomainEvent`, `name` is empty, `version` is below 1, the
                class is already registered under another name, or a
                personal field's type does not admit None.
        """
        _check_event_class(cls)
        with contextlib.suppress(NameError):  # a forward reference: checked at the first encode
            check_personal(cls)
        if not isinstance(name, str) or not name.strip():
            msg = f"an event name must be a non-empty string, not {name!r}"
            raise EventTypeError(msg)
        if not is_int(version) or version < 1:
            msg = f"{cls.__qualname__}: schema version must be an int >= 1, not {version!r}"
            raise EventTypeError(msg)
        entry = EventRegistration(name=name, cls=cls, version=version)
        existing = self._by_name.get(name)
        if existing is not None and existing.cls is not cls:
            if _same_definition(existing.cls, cls):
                del self._by_class[existing.cls]
            else:
                raise DuplicateEventTypeError(name, existing.cls, cls)
        other = self._by_class.get(cls)
        if other is not None and other.name != name:
            msg = f"{cls.__qualname__} is already registered as {other.name!r}, not {name!r}"
            raise EventTypeError(msg)
        self._by_name[name] = entry
        self._by_class[cls] = entry
        return entry

    def add_upcaster(self, name: str, from_version: int, function: Upcaster) -> None:
        """Register `function` to turn payloads of `name` from `from_version` to the next.

        Raises:
            EventTypeError: An upcaster for that name and version exists, or
                `from_version` is below 1.
        """
        if not isinstance(name, str) or not name.strip():
            msg = f"an upcaster needs the event's stored name, not {name!r}"
            raise EventTypeError(msg)
        if not callable(function):
            msg = f"upcaster for {name!r} must be callable, not {function!r}"
            raise EventTypeError(msg)
        if not is_int(from_version) or from_version < 1:
            msg = f"upcaster for {name!r}: from_version must be an int >= 1, not {from_version!r}"
            raise EventTypeError(msg)
        key = (name, from_version)
        if key in self._upcasters:
            msg = f"an upcaster for {name!r} from version {from_version} is already registered"
            raise EventTypeError(msg)
        self._upcasters[key] = function

    def upcaster_for(self, name: str, from_version: int) -> Upcaster | None:
        """Return the upcaster from `from_version` of `name`, if one is registered."""
        return self._upcasters.get((name, from_version))

    def by_name(self, name: str) -> EventRegistration | None:
        """Return the registration of the stored `name`, or None."""
        return self._by_name.get(name)

    def by_class(self, cls: type[DomainEvent[Any]]) -> EventRegistration:
        """Return the registration of `cls`.

        Raises:
            UnregisteredEventError: `cls` has no stored name.
        """
        try:
            return self._by_class[cls]
        except KeyError:
            raise UnregisteredEventError(cls) from None

    def __iter__(self) -> Iterator[EventRegistration]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, item: object) -> bool:
        return item in self._by_name or item in self._by_class


def _check_event_class(cls: object) -> None:
    if not isinstance(cls, type) or not issubclass(cls, DomainEvent):
        msg = f"{cls!r} is not a subclass of fabula.DomainEvent"
        raise EventTypeError(msg)
    if "__attrs_attrs__" not in cls.__dict__:
        msg = (
            f"{cls.__qualname__} is not itself an attrs class: decorate it with "
            f"@attrs.frozen, below @fabula.event"
        )
        raise EventTypeError(msg)
    overridden = BASE_FIELDS & set(inspect.get_annotations(cls))
    if overridden:
        msg = f"{cls.__qualname__} redefines base event fields {sorted(overridden)}"
        raise EventTypeError(msg)


def _same_definition(a: type, b: type) -> bool:
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


_current_metadata: contextvars.ContextVar[EventMetadata | None] = contextvars.ContextVar(
    "fabula_current_metadata", default=None
)


def current_metadata() -> EventMetadata | None:
    """Return the metadata that events recorded now receive (set by `Correlation`)."""
    return _current_metadata.get()


default_registry = EventRegistry()
"""The process-wide registry used by `fabula.event`, `fabula.upcaster` and the stores."""


def event(
    name: str, *, version: int = 1, registry: EventRegistry | None = None
) -> Callable[[type[E]], type[E]]:
    """Give an event class its stable stored name (class decorator).

    Put it above `@attrs.frozen`. The stored name, not the Python class name,
    identifies stored events, so classes can be renamed and moved freely.

    Args:
        name: The stored name, for example `"orders.OrderItemAdded"`.
        version: The schema version of the class's payload; bump it when the
            fields change and register an upcaster from the previous version.
        registry: The registry to use; `default_registry` if omitted.

    Returns:
        A decorator that registers the class and returns it unchanged.

    Raises:
        DuplicateEventTypeError: Another class already has `name`.
    """
    target = default_registry if registry is None else registry

    def decorate(cls: type[E]) -> type[E]:
        target.register(cls, name, version=version)
        return cls

    return decorate


def upcaster(
    name: str, *, from_version: int, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Register a function that upgrades stored payloads of `name` by one version.

    Stored events are never rewritten; on read, the chain of upcasters from
    the stored schema version to the class's current version is applied to
    the JSON payload before it is decoded.

    Example:
        >>> @fabula.upcaster("docs.Renamed", from_version=1)
        ... def _add_reason(payload: fabula.JSONObject) -> fabula.JSONObject:
        ...     return {**payload, "reason": ""}

    Args:
        name: The stored event name.
        from_version: The schema version the function accepts; it returns
            version `from_version + 1`.
        registry: The registry to use; `default_registry` if omitted.

    Returns:
        A decorator that registers the function and returns it unchanged.
    """
    target = default_registry if registry is None else registry

    def decorate(function: Upcaster) -> Upcaster:
        target.add_upcaster(name, from_version, function)
        return function

    return decorate
