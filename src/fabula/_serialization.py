"""The cattrs converter and JSON codec that turn events into stored records and back."""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from types import UnionType
from typing import Any, Final, NamedTuple, Union, get_args, get_origin
from uuid import UUID

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_union_passthrough

from fabula._codegen import Mismatch, fast_decoder, fast_encoder
from fabula._events import (
    _EMPTY_METADATA,
    BASE_FIELDS,
    AggregateId,
    DomainEvent,
    EventMetadata,
    EventRegistration,
    EventRegistry,
    JSONObject,
    default_registry,
)
from fabula._frozen import FrozenDict
from fabula.exceptions import (
    SerializationError,
    UnknownEventTypeError,
    UpcastError,
)

__all__ = ["EventSerializer", "SerializedEvent", "make_converter"]


class _FieldValueError(ValueError):
    """Raised inside converter hooks; EventSerializer adds the event's context."""


class SerializedEvent(NamedTuple):
    """An event as stores keep it: its stored name and JSON payload.

    A NamedTuple rather than an attrs class: one is built for every event
    written, and a tuple is built several times faster.

    Attributes:
        event_id: The event's id.
        type_name: The stable stored name of its class.
        schema_version: The schema version of `data`.
        timestamp: When it happened (timezone-aware).
        data: The event's own fields as a JSON object (base fields excluded).
        metadata: Its `EventMetadata` as a JSON object (`"{}"` when empty).
    """

    event_id: UUID
    type_name: str
    schema_version: int
    timestamp: datetime
    data: str
    metadata: str


def encode_json(value: object) -> str:
    """Encode `value` as compact JSON text (orjson; non-finite floats are refused earlier)."""
    return orjson.dumps(value).decode()


decode_json: Final = orjson.loads
"""Decode JSON text (orjson: exact floats, 64-bit integers)."""


def _unstructure_uuid(value: object) -> str:
    if not isinstance(value, UUID):
        msg = f"expected a UUID, got {type(value).__name__} {value!r}"
        raise _FieldValueError(msg)
    return str(value)


def _structure_uuid(value: object, _: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        msg = f"expected a UUID string, got {value!r}"
        raise _FieldValueError(msg)
    return UUID(value)


def _unstructure_decimal(value: object) -> str:
    if not isinstance(value, Decimal):
        msg = (
            f"expected a Decimal, got {type(value).__name__} {value!r}; floats are not exact, "
            f"pass Decimal('...') built from a string"
        )
        raise _FieldValueError(msg)
    if not value.is_finite():
        msg = f"Decimal {value} is not a finite number"
        raise _FieldValueError(msg)
    return str(value)


def _structure_decimal(value: object, _: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    msg = f"expected a decimal string, got {value!r}"
    raise _FieldValueError(msg)


def _unstructure_datetime(value: object) -> str:
    return _check_aware(value).isoformat()


def _check_aware(value: object) -> datetime:
    """Check a timestamp without formatting it (isoformat costs microseconds)."""
    if not isinstance(value, datetime):
        msg = f"expected a datetime, got {type(value).__name__} {value!r}"
        raise _FieldValueError(msg)
    if value.utcoffset() is None:
        msg = f"naive datetime {value.isoformat()} has no timezone; use an aware datetime (UTC)"
        raise _FieldValueError(msg)
    return value


def _structure_datetime(value: object, _: object) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        msg = f"expected an ISO 8601 datetime string, got {value!r}"
        raise _FieldValueError(msg)
    if parsed.utcoffset() is None:
        msg = f"datetime {value!r} has no timezone"
        raise _FieldValueError(msg)
    return parsed


def _unstructure_date(value: object) -> str:
    if not isinstance(value, date) or isinstance(value, datetime):
        msg = f"expected a date, got {type(value).__name__} {value!r}"
        raise _FieldValueError(msg)
    return value.isoformat()


def _structure_date(value: object, _: object) -> date:
    if not isinstance(value, str):
        msg = f"expected an ISO 8601 date string, got {value!r}"
        raise _FieldValueError(msg)
    return date.fromisoformat(value)


def _checked(kind: type, *, also: tuple[type, ...] = ()) -> Callable[[object], Any]:
    """Return an unstructure hook that passes `kind` values through and refuses others."""
    accepted = (kind, *also)

    def unstructure(value: object) -> object:
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
            msg = f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
            raise _FieldValueError(msg)
        if kind is float and not math.isfinite(value):  # type: ignore[arg-type] # checked above
            msg = f"float {value!r} is not finite; JSON cannot hold it"
            raise _FieldValueError(msg)
        return value

    return unstructure


def _is_enum(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


def _enum_unstructurer(tp: type[Enum]) -> Callable[[object], Any]:
    def unstructure(value: object) -> object:
        if not isinstance(value, tp):
            msg = f"expected a {tp.__name__} member, got {value!r}"
            raise _FieldValueError(msg)
        raw = value.value
        if not isinstance(raw, str | int | float | bool):
            msg = f"{tp.__name__} values must be str, int, float or bool to be stored, not {raw!r}"
            raise _FieldValueError(msg)
        return raw

    return unstructure


_SCALARS = (int, str, float, bool, type(None))


def _is_scalar_union(tp: object) -> bool:
    return get_origin(tp) in (Union, UnionType) and all(arg in _SCALARS for arg in get_args(tp))


def _scalar_union_unstructurer(tp: object) -> Callable[[object], Any]:
    members = get_args(tp)

    def unstructure(value: object) -> object:
        kind = type(value)
        if kind in members or (kind is int and float in members):
            return value
        msg = f"expected {tp}, got {kind.__name__} {value!r}"
        raise _FieldValueError(msg)

    return unstructure


def _ambiguous_union(tp: object, seen: set[int] | None = None) -> object | None:
    """Return a union inside `tp` that would not decode to the type it was stored as."""
    seen = set() if seen is None else seen
    if id(tp) in seen:
        return None
    seen.add(id(tp))
    if get_origin(tp) in (Union, UnionType):
        others = [arg for arg in get_args(tp) if arg is not type(None)]
        scalars = all(arg in _SCALARS for arg in others)
        classes = all(isinstance(arg, type) and attrs.has(arg) for arg in others)
        if not (scalars or classes or len(others) == 1):
            return tp
    if isinstance(tp, type) and attrs.has(tp):
        attrs.resolve_types(tp)
        children: tuple[object, ...] = tuple(field.type for field in attrs.fields(tp))
    else:
        children = get_args(tp)
    for child in children:
        found = _ambiguous_union(child, seen)
        if found is not None:
            return found
    return None


def _strict(kind: type, *, also: tuple[type, ...] = ()) -> Callable[[object, object], Any]:
    accepted = (kind, *also)

    def structure(value: object, _: object) -> object:
        if isinstance(value, bool) and kind is not bool:
            msg = f"expected {kind.__name__}, got {value!r}"
            raise _FieldValueError(msg)
        if not isinstance(value, accepted):
            msg = f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
            raise _FieldValueError(msg)
        return float(value) if kind is float else value  # type: ignore[arg-type] # checked above

    return structure


_MAPPING_ORIGINS = (FrozenDict, collections.abc.Mapping, dict)


def _is_mapping(tp: object) -> bool:
    return tp in _MAPPING_ORIGINS or get_origin(tp) in _MAPPING_ORIGINS


def _mapping_args(tp: object) -> tuple[Any, Any]:
    args = get_args(tp)
    return (args[0], args[1]) if len(args) == 2 else (Any, Any)  # noqa: PLR2004


def make_converter() -> cattrs.Converter:
    """Build the strict cattrs converter fabula stores events with.

    It round-trips UUID, Decimal (as a string), timezone-aware datetime, date,
    Enum, nested attrs classes, tuples and mappings (decoded into
    `FrozenDict` unless the field is a `dict`), and refuses what would lose
    information: floats for Decimal fields, naive datetimes, strings for ints,
    non-finite numbers, and integers beyond 64 bits (JSON readers disagree
    on those; store them as Decimal or str).

    Returns:
        A new converter; extend it with your own hooks before handing it to
        an `EventSerializer`.
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_unstructure_hook(UUID, _unstructure_uuid)
    converter.register_structure_hook(UUID, _structure_uuid)
    converter.register_unstructure_hook(Decimal, _unstructure_decimal)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_unstructure_hook(datetime, _unstructure_datetime)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(date, _unstructure_date)
    converter.register_structure_hook(date, _structure_date)
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(float, _strict(float, also=(int,)))
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_unstructure_hook(int, _checked(int))
    converter.register_unstructure_hook(float, _checked(float, also=(int,)))
    converter.register_unstructure_hook(str, _checked(str))
    converter.register_unstructure_hook(bool, _checked(bool))
    converter.register_unstructure_hook_factory(_is_enum, _enum_unstructurer)
    configure_union_passthrough(int | str | float | bool | None, converter)
    converter.register_unstructure_hook_factory(_is_scalar_union, _scalar_union_unstructurer)
    converter.register_unstructure_hook_factory(_is_mapping, _mapping_unstructurer(converter))
    converter.register_structure_hook_factory(_is_mapping, _mapping_structurer(converter))
    return converter


def _mapping_unstructurer(
    converter: cattrs.Converter,
) -> Callable[[Any], Callable[[Any], dict[str, Any]]]:
    def factory(tp: Any) -> Callable[[Any], dict[str, Any]]:
        key_type, value_type = _mapping_args(tp)
        key: Callable[[Any], Any]
        if key_type is int:
            key = _int_key_text
        elif key_type is str:
            key = _checked(str)
        else:
            key = converter.get_unstructure_hook(key_type)
        value = converter.get_unstructure_hook(value_type)

        def unstructure(mapping: Any) -> dict[str, Any]:
            if not isinstance(mapping, Mapping):
                msg = f"expected a mapping, got {type(mapping).__name__} {mapping!r}"
                raise _FieldValueError(msg)
            out = {key(k): value(v) for k, v in mapping.items()}
            if any(not isinstance(k, str) for k in out):
                msg = f"mapping keys must encode to strings: {mapping!r}"
                raise _FieldValueError(msg)
            return out

        return unstructure

    return factory


def _mapping_structurer(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(tp: Any) -> Callable[[Any, Any], Any]:
        key_type, value_type = _mapping_args(tp)
        key: Callable[[Any], Any]
        if key_type is int:
            key = _int_key
        else:
            key_hook = converter.get_structure_hook(key_type)
            key = functools.partial(_apply_hook, key_hook, key_type)
        value_hook = converter.get_structure_hook(value_type)
        build: Callable[[Any], Any] = dict if (get_origin(tp) or tp) is dict else FrozenDict

        def structure(mapping: Any, _: Any) -> Any:
            if not isinstance(mapping, Mapping):
                msg = f"expected a JSON object, got {mapping!r}"
                raise _FieldValueError(msg)
            return build({key(k): value_hook(v, value_type) for k, v in mapping.items()})

        return structure

    return factory


def _apply_hook(hook: Callable[[Any, Any], Any], tp: Any, value: Any) -> Any:
    return hook(value, tp)


def _int_key_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an int key, got {type(value).__name__} {value!r}"
        raise _FieldValueError(msg)
    return str(value)


def _int_key(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    msg = f"expected an integer key, got {value!r}"
    raise _FieldValueError(msg)


@functools.lru_cache(maxsize=8192)
def aggregate_id_from_stream(stream_id: str) -> AggregateId:
    """Return the aggregate id a stream id stands for.

    A stream id that is the canonical text of a UUID (as `str(uuid)` writes
    it) stands for that UUID; any other stream id is a string id.
    """
    if len(stream_id) == 36:  # noqa: PLR2004 - the length of str(UUID)
        try:
            parsed = UUID(stream_id)
        except ValueError:
            return stream_id
        if str(parsed) == stream_id:
            return parsed
    return stream_id


# Base fields are passed to the decoder already built, and never encoded in `data`.
_PASS_BASE: dict[str, Any] = dict.fromkeys(
    BASE_FIELDS, override(struct_hook=lambda value, _: value)
)
_OMIT_BASE: dict[str, Any] = dict.fromkeys(BASE_FIELDS, override(omit=True))


def _no_fast_path(*_: object) -> DomainEvent:
    raise Mismatch


@attrs.define(repr=False)
class EventSerializer:
    """Encodes events into `SerializedEvent` records and decodes them back.

    Every store owns one. Decoding applies the registered upcasters, so
    stored payloads of an old schema version arrive in the current shape.

    Args:
        registry: Where stored names, schema versions and upcasters are
            looked up; `default_registry` if omitted.
        converter: The cattrs converter; `make_converter()` if omitted.
    """

    registry: EventRegistry = attrs.field(factory=lambda: default_registry)
    converter: cattrs.Converter = attrs.field(factory=make_converter)
    _encoders: dict[type[DomainEvent], Callable[[Any], dict[str, Any]]] = attrs.field(
        init=False, factory=dict
    )
    _decoders: dict[type[DomainEvent], Callable[[Any, Any], Any]] = attrs.field(
        init=False, factory=dict
    )
    _fast_encoders: dict[type[DomainEvent], Callable[[Any], dict[str, Any]]] = attrs.field(
        init=False, factory=dict
    )
    _fast_decoders: dict[type[DomainEvent], Callable[..., Any]] = attrs.field(
        init=False, factory=dict
    )

    def __repr__(self) -> str:
        return f"<EventSerializer: {self.registry!r}>"

    def encode(self, event: DomainEvent) -> SerializedEvent:
        """Encode `event` for storage.

        Raises:
            UnregisteredEventError: The event's class has no stored name.
            SerializationError: A field holds a value that cannot be stored
                exactly (a float in a Decimal field, a naive datetime, NaN...).
        """
        cls = type(event)
        entry = self.registry.by_class(cls)
        try:
            encoder = self._encoders[cls]
        except KeyError:
            encoder = self._encoder(cls, entry.name)
        fast = self._fast_encoders.get(cls)
        try:
            try:
                if fast is None:
                    raise Mismatch  # noqa: TRY301 - the checked path below
                fields = fast(event)
            except Mismatch:
                fields = encoder(event)
            data = encode_json(fields)
            metadata = self._encode_metadata(event.metadata)
            _check_aware(event.timestamp)
            if event.event_id.__class__ is not UUID:
                _unstructure_uuid(event.event_id)
        except (ValueError, TypeError, AttributeError) as exc:
            raise SerializationError(f"cannot encode: {exc}", type_name=entry.name) from exc
        return SerializedEvent(
            event_id=event.event_id,
            type_name=entry.name,
            schema_version=entry.version,
            timestamp=event.timestamp,
            data=data,
            metadata=metadata,
        )

    def decode(
        self,
        record: SerializedEvent,
        *,
        stream_id: str,
        version: int,
        position: int | None = None,
    ) -> DomainEvent:
        """Decode a stored record into its event object.

        Args:
            record: The stored record.
            stream_id: The stream it is stored in.
            version: Its version in that stream.
            position: Its global position (for error messages).

        Raises:
            UnknownEventTypeError: No class is registered under its name.
            SerializationError: The payload does not fit the class.
            UpcastError: No upcaster chain leads from its schema version.
        """
        return self.decode_fields(
            type_name=record.type_name,
            schema_version=record.schema_version,
            event_id=record.event_id,
            timestamp=record.timestamp,
            data=record.data,
            metadata=record.metadata,
            stream_id=stream_id,
            version=version,
            position=position,
        )

    def decode_fields(
        self,
        *,
        type_name: str,
        schema_version: int,
        event_id: UUID,
        timestamp: datetime,
        data: str | bytes,
        metadata: str,
        stream_id: str,
        version: int,
        position: int | None = None,
    ) -> DomainEvent:
        """Decode an event from its stored columns (what `decode` does, without the record).

        Stores call this on their read path to skip building a `SerializedEvent`.

        Raises:
            UnknownEventTypeError: No class is registered under its name.
            SerializationError: The payload does not fit the class.
            UpcastError: No upcaster chain leads from its schema version.
        """
        entry = self.registry.by_name(type_name)
        if entry is None:
            raise UnknownEventTypeError(type_name, stream_id=stream_id, position=position)
        if schema_version == entry.version:
            fast = self._fast_decoders.get(entry.cls)
            if fast is None:
                fast = self._fast_decoders[entry.cls] = self._build_fast_decoder(entry.cls)
            try:
                return fast(  # type: ignore[no-any-return]
                    decode_json(data),
                    aggregate_id_from_stream(stream_id),
                    version,
                    event_id,
                    timestamp,
                    self._decode_metadata(metadata),
                )
            except Exception:  # noqa: BLE001, S110 - the checked path below explains it
                pass
        record = SerializedEvent(
            event_id=event_id,
            type_name=type_name,
            schema_version=schema_version,
            timestamp=timestamp,
            data=data if isinstance(data, str) else data.decode(),
            metadata=metadata,
        )
        return self._decode_checked(record, entry, stream_id, version, position)

    def _decode_checked(
        self,
        record: SerializedEvent,
        entry: EventRegistration,
        stream_id: str,
        version: int,
        position: int | None,
    ) -> DomainEvent:
        context = {"type_name": record.type_name, "stream_id": stream_id, "position": position}
        try:
            payload = decode_json(record.data)
            if not isinstance(payload, dict):
                msg = f"the payload is not a JSON object: {record.data[:80]!r}"
                raise _FieldValueError(msg)
            if record.schema_version != entry.version:
                payload = self._upcast(payload, record, entry.version, context)
            payload["aggregate_id"] = aggregate_id_from_stream(stream_id)
            payload["version"] = version
            payload["event_id"] = record.event_id
            payload["timestamp"] = record.timestamp
            payload["metadata"] = self._decode_metadata(record.metadata)
            return self._decoder(entry.cls)(payload, entry.cls)  # type: ignore[no-any-return]
        except UpcastError:
            raise
        except cattrs.BaseValidationError as exc:
            detail = "; ".join(cattrs.transform_error(exc, path="payload"))
            raise SerializationError(f"cannot decode: {detail}", **context) from exc  # type: ignore[arg-type]
        except (
            ValueError,
            TypeError,
            KeyError,
            cattrs.errors.StructureHandlerNotFoundError,
        ) as exc:
            raise SerializationError(f"cannot decode: {exc}", **context) from exc  # type: ignore[arg-type]

    def _encoder(self, cls: type[DomainEvent], name: str) -> Callable[[Any], dict[str, Any]]:
        """Build (and cache) the class's encoder, after checking it can be decoded too."""
        attrs.resolve_types(cls)
        own = (f.type for f in attrs.fields(cls) if f.name not in BASE_FIELDS)
        ambiguous = next((u for u in map(_ambiguous_union, own) if u is not None), None)
        if ambiguous is not None:
            msg = (
                f"{cls.__qualname__} has a field of type {ambiguous}, which fabula cannot store "
                f"exactly (its members do not tell apart in JSON)"
            )
            raise SerializationError(msg, type_name=name)
        try:
            self._decoder(cls)
            encoder = make_dict_unstructure_fn(cls, self.converter, **_OMIT_BASE)
        except cattrs.errors.StructureHandlerNotFoundError as exc:
            msg = f"{cls.__qualname__} has a field type fabula cannot store: {exc}"
            raise SerializationError(msg, type_name=name) from exc
        self._encoders[cls] = encoder
        with contextlib.suppress(Mismatch):
            self._fast_encoders[cls] = fast_encoder(cls)
        return encoder

    def _build_fast_decoder(self, cls: type[DomainEvent]) -> Callable[..., Any]:
        try:
            return fast_decoder(cls, self.converter)
        except Exception:  # noqa: BLE001 - a field type only the checked path handles
            return _no_fast_path

    def _decoder(self, cls: type[DomainEvent]) -> Callable[[Any, Any], Any]:
        try:
            return self._decoders[cls]
        except KeyError:
            decoder = self._decoders[cls] = make_dict_structure_fn(
                cls, self.converter, **_PASS_BASE
            )
            return decoder

    def _upcast(
        self, payload: JSONObject, record: SerializedEvent, current: int, context: dict[str, Any]
    ) -> JSONObject:
        stored = record.schema_version
        if stored > current:
            msg = (
                f"stored with schema version {stored}, newer than the registered "
                f"version {current}; upgrade the application before reading it"
            )
            raise UpcastError(msg, **context)
        for from_version in range(stored, current):
            function = self.registry.upcaster_for(record.type_name, from_version)
            if function is None:
                msg = f"no upcaster from schema version {from_version} to {from_version + 1}"
                raise UpcastError(msg, **context)
            try:
                payload = function(payload)
            except Exception as exc:
                msg = f"the upcaster from version {from_version} failed: {exc!r}"
                raise UpcastError(msg, **context) from exc
            if not isinstance(payload, dict):
                msg = f"the upcaster from version {from_version} returned {payload!r}"
                raise UpcastError(msg, **context)
        return payload

    @staticmethod
    def _encode_metadata(metadata: EventMetadata) -> str:
        if metadata is _EMPTY_METADATA:
            return "{}"
        if not isinstance(metadata, EventMetadata):
            msg = f"metadata must be an EventMetadata, not {type(metadata).__name__}"
            raise _FieldValueError(msg)
        if metadata == _EMPTY_METADATA:
            return "{}"
        out: dict[str, Any] = {}
        if metadata.correlation_id is not None:
            out["correlation_id"] = str(metadata.correlation_id)
        if metadata.causation_id is not None:
            out["causation_id"] = str(metadata.causation_id)
        if metadata.headers:
            out["headers"] = dict(metadata.headers)
        return encode_json(out)

    @staticmethod
    def _decode_metadata(text: str) -> EventMetadata:
        if text == "{}":
            return _EMPTY_METADATA
        raw = decode_json(text)
        correlation = raw.get("correlation_id")
        causation = raw.get("causation_id")
        return EventMetadata(
            correlation_id=None if correlation is None else UUID(correlation),
            causation_id=None if causation is None else UUID(causation),
            headers=FrozenDict(raw.get("headers", {})),
        )
