"""The cattrs converter and JSON codec that turn events into stored records and back."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from fabula._codegen import Mismatch, fast_decoder, fast_encoder
from fabula._converter import (
    FieldValueError,
    ambiguous_union,
    check_aware,
    decode_json,
    encode_json,
    make_converter,
    unstructure_uuid,
)
from fabula._events import (
    _EMPTY_METADATA,
    BASE_FIELDS,
    DomainEvent,
    EventMetadata,
    EventRegistration,
    EventRegistry,
    IdKind,
    JSONObject,
    default_registry,
    id_type,
    stream_id_as,
)
from fabula._frozen import FrozenDict
from fabula._personal import ENVELOPE, OpenKeys, SubjectKey, layout, seal, unseal
from fabula.exceptions import (
    SerializationError,
    UnknownEventTypeError,
    UpcastError,
)

__all__ = ["EventSerializer", "SerializedEvent", "decode_metadata", "make_converter"]


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


# Base fields are passed to the decoder already built, and never encoded in `data`.
_PASS_BASE: dict[str, Any] = dict.fromkeys(
    BASE_FIELDS, override(struct_hook=lambda value, _: value)
)
_OMIT_BASE: dict[str, Any] = dict.fromkeys(BASE_FIELDS, override(omit=True))


def _no_fast_path(*_: object) -> DomainEvent[Any]:
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
    _encoders: dict[type[DomainEvent[Any]], Callable[[Any], dict[str, Any]]] = attrs.field(
        init=False, factory=dict
    )
    _decoders: dict[type[DomainEvent[Any]], Callable[[Any, Any], Any]] = attrs.field(
        init=False, factory=dict
    )
    _fast_encoders: dict[type[DomainEvent[Any]], Callable[[Any], dict[str, Any]]] = attrs.field(
        init=False, factory=dict
    )
    _fast_decoders: dict[type[DomainEvent[Any]], Callable[..., Any]] = attrs.field(
        init=False, factory=dict
    )

    def __repr__(self) -> str:
        return f"<EventSerializer: {self.registry!r}>"

    def encode(
        self, event: DomainEvent[Any], keys: Mapping[str, SubjectKey] | None = None
    ) -> SerializedEvent:
        """Encode `event` for storage, its personal fields sealed with `keys` (by subject).

        Raises:
            UnregisteredEventError: The event's class has no stored name.
            SerializationError: A field holds a value that cannot be stored
                exactly (a float in a Decimal field, a naive datetime, NaN...).
            PersonalDataError: It holds personal data of a subject `keys`
                has no key for.
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
            shape = layout(cls)
            if shape is not None:
                seal(
                    fields, event, shape, bound_to=event.event_id.bytes, type_name=entry.name,
                    keys=keys or {},
                )  # fmt: skip
            data = encode_json(fields)
            metadata = self._encode_metadata(event.metadata)
            check_aware(event.timestamp)
            if event.event_id.__class__ is not UUID:
                unstructure_uuid(event.event_id)
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
        keys: OpenKeys | None = None,
    ) -> DomainEvent[Any]:
        """Decode a stored record into its event object.

        Args:
            record: The stored record.
            stream_id: The stream it is stored in.
            version: Its version in that stream.
            position: Its global position (for error messages).
            keys: The keys of the subjects whose personal data it may hold
                (None for a forgotten subject, whose fields read as None);
                None: the store has no key-encryption key.

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
            keys=keys,
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
        keys: OpenKeys | None = None,
    ) -> DomainEvent[Any]:
        """Decode an event from its stored columns (what `decode` does, without the record).

        Stores call this on their read path to skip building a `SerializedEvent`.

        Raises:
            UnknownEventTypeError: No class is registered under its name.
            SerializationError: The payload does not fit the class.
            UpcastError: No upcaster chain leads from its schema version.
        """
        path = self.fast_path(type_name, schema_version)
        if path is not None:
            fast, kind = path
            try:
                payload = decode_json(data)
                if ENVELOPE in payload:
                    unseal(payload, bound_to=event_id.bytes, type_name=type_name, keys=keys)
                aggregate_id = stream_id_as(kind, stream_id)
                meta = decode_metadata(metadata)
                return fast(payload, aggregate_id, version, event_id, timestamp, meta)
            except Exception:  # noqa: BLE001, S110 - the checked path below explains it
                pass
        entry = self.registry.by_name(type_name)
        if entry is None:
            raise UnknownEventTypeError(type_name, stream_id=stream_id, position=position)
        record = SerializedEvent(
            event_id=event_id,
            type_name=type_name,
            schema_version=schema_version,
            timestamp=timestamp,
            data=data if isinstance(data, str) else data.decode(),
            metadata=metadata,
        )
        return self._decode_checked(record, entry, stream_id, version, position, keys=keys)

    def fast_path(
        self, type_name: str, schema_version: int
    ) -> tuple[Callable[..., DomainEvent[Any]], IdKind] | None:
        """The generated decoder for a stored name and schema version, and the class's id type.

        For a read path that decodes many rows: it looks this up once per
        name, then calls the decoder itself as `decode_fields` does (the
        parsed payload, the aggregate id, version, event id, timestamp and
        metadata), and calls `decode_fields` for a row the decoder refuses.
        None when `decode_fields` must decode every such row itself: the
        name is unknown, the payload needs upcasting, or the class has a
        field type only the checked path handles.
        """
        entry = self.registry.by_name(type_name)
        if entry is None or schema_version != entry.version:
            return None
        fast = self._fast_decoders.get(entry.cls)
        if fast is None:
            fast = self._fast_decoders[entry.cls] = self._build_fast_decoder(entry.cls)
        if fast is _no_fast_path:
            return None
        return fast, id_type(entry.cls)

    def _decode_checked(
        self,
        record: SerializedEvent,
        entry: EventRegistration,
        stream_id: str,
        version: int,
        position: int | None,
        *,
        keys: OpenKeys | None,
    ) -> DomainEvent[Any]:
        context = {"type_name": record.type_name, "stream_id": stream_id, "position": position}
        try:
            payload = decode_json(record.data)
            if not isinstance(payload, dict):
                msg = f"the payload is not a JSON object: {record.data[:80]!r}"
                raise FieldValueError(msg)
            if ENVELOPE in payload:
                unseal(
                    payload, bound_to=record.event_id.bytes, type_name=record.type_name, keys=keys
                )
            if record.schema_version != entry.version:
                payload = self._upcast(payload, record, entry.version, context)
            payload["aggregate_id"] = _aggregate_id(entry.cls, stream_id)
            payload["version"] = version
            payload["event_id"] = record.event_id
            payload["timestamp"] = record.timestamp
            payload["metadata"] = decode_metadata(record.metadata)
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

    def _encoder(self, cls: type[DomainEvent[Any]], name: str) -> Callable[[Any], dict[str, Any]]:
        """Build (and cache) the class's encoder, after checking it can be decoded too."""
        attrs.resolve_types(cls)
        own = (f.type for f in attrs.fields(cls) if f.name not in BASE_FIELDS)
        ambiguous = next((u for u in map(ambiguous_union, own) if u is not None), None)
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

    def _build_fast_decoder(self, cls: type[DomainEvent[Any]]) -> Callable[..., Any]:
        try:
            return fast_decoder(cls, self.converter)
        except Exception:  # noqa: BLE001 - a field type only the checked path handles
            return _no_fast_path

    def _decoder(self, cls: type[DomainEvent[Any]]) -> Callable[[Any, Any], Any]:
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
            raise FieldValueError(msg)
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


def decode_metadata(text: str) -> EventMetadata:
    """Decode stored metadata (`"{}"`, the usual case, without parsing).

    Raises:
        ValueError: It is not the JSON `encode` writes.
    """
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


def _aggregate_id(cls: type[DomainEvent[Any]], stream_id: str) -> UUID | str:
    """The `aggregate_id` an event of `cls` read from stream `stream_id` carries."""
    kind = id_type(cls)
    try:
        return stream_id_as(kind, stream_id)
    except ValueError:
        msg = (
            f"{cls.__qualname__}'s aggregate_id is a {kind.__name__}, and stream "
            f"{stream_id!r} is not the text of one (declare the class "
            f"DomainEvent[str] for streams of other ids)"
        )
        raise ValueError(msg) from None
