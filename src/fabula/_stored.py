"""Every decision a store makes about what it keeps, made once for all stores.

Backends do I/O; this module decides (httpx's `BaseClient` decides and its
`Client` only sends). A store hands in what it read, as named values, and
gets back an answer or an error with one wording for every store:

- `prepare_append` / `prepare_appends`: check and encode a call's parts
  before any I/O (`PendingAppend`).
- `reads_stored_first`: whether a part may be a retry before its claim.
- `match_retry`: whether a part repeats the append that stored its events.
- `explain_duplicate`: why a unique-index violation on event ids happened.
- `decode_rows`: stored rows (one column order in every SQL store) to
  `RecordedEvent`s.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from datetime import datetime
from typing import Any, Final, NamedTuple
from uuid import UUID

import attrs

from fabula._converter import decode_json
from fabula._events import DomainEvent, IdKind, stream_id_as
from fabula._personal import ENVELOPE, OpenKeys, SubjectKey, unseal
from fabula._serialization import EventSerializer, SerializedEvent, decode_metadata
from fabula._store import (
    AppendResult,
    Expected,
    ExpectedVersion,
    RecordedEvent,
    StreamAppend,
    check_retry,
    validate_append,
)
from fabula.exceptions import (
    DuplicateEventIdError,
    EmptyAppendError,
    InvalidAppendError,
    SerializationError,
)

__all__ = [
    "LARGE_APPEND",
    "PendingAppend",
    "StoredEvent",
    "decode_rows",
    "explain_duplicate",
    "match_retry",
    "prepare_append",
    "prepare_append_off_loop",
    "prepare_appends",
    "prepare_appends_off_loop",
    "reads_stored_first",
]

_MANY = "<append_many>"


class PendingAppend(NamedTuple):
    """One stream's part of an append: checked and encoded, not yet stored.

    A NamedTuple, like `SerializedEvent`: one is built for every append.

    Attributes:
        stream_id: The stream to append to.
        events: The events, checked by `validate_append`.
        expected: The expected version the caller gave.
        records: The events encoded, in the same order.
    """

    stream_id: str
    events: tuple[DomainEvent[Any], ...]
    expected: Expected
    records: tuple[SerializedEvent, ...]

    @property
    def first_version(self) -> int:
        """The version the caller's first event carries (0: not numbered by an aggregate)."""
        return self.events[0].version


@attrs.frozen
class StoredEvent:
    """One event as a store keeps it: its place, its stored name and its JSON, undecoded.

    Attributes:
        position: Its global position.
        stream_id: Its stream.
        version: Its place in its stream.
        event_id: Its id.
        type_name: Its stored type name.
        schema_version: The schema version of `data`.
        timestamp: When it happened (timezone-aware).
        data: Its own fields as a JSON object.
        metadata: Its metadata as a JSON object.
    """

    position: int
    stream_id: str
    version: int
    event_id: UUID
    type_name: str
    schema_version: int
    timestamp: datetime
    data: str
    metadata: str

    def holds(self, record: SerializedEvent) -> bool:
        """Whether this stored event has `record`'s content (the same instant, the same JSON)."""
        return (self.type_name, self.schema_version, self.timestamp, self.data, self.metadata) == (
            record.type_name,
            record.schema_version,
            record.timestamp,
            record.data,
            record.metadata,
        )


def prepare_append(
    stream_id: str,
    events: Sequence[DomainEvent[Any]],
    expected: Expected,
    serializer: EventSerializer,
    keys: Keys = None,
) -> list[PendingAppend]:
    """Check and encode a single-stream `append` (personal data sealed with `keys`).

    Raises:
        InvalidAppendError: For each kind of bad input, a specific subclass.
        SerializationError: An event cannot be encoded.
    """
    batch = validate_append(stream_id, events, expected)
    encode = _encoder(serializer, keys)
    return [PendingAppend(stream_id, batch, expected, tuple(encode(e) for e in batch))]


Keys = Mapping[str, SubjectKey] | None
"""The subject keys an append's personal data is sealed with (None: it holds none)."""


def _encoder(
    serializer: EventSerializer, keys: Keys
) -> Callable[[DomainEvent[Any]], SerializedEvent]:
    if keys is None:
        return serializer.encode
    return functools.partial(serializer.encode, keys=keys)


def prepare_appends(
    appends: Sequence[StreamAppend],
    serializer: EventSerializer,
    *,
    allow_empty: bool = False,
    keys: Keys = None,
) -> list[PendingAppend]:
    """Check and encode the parts of an `append_many`.

    Args:
        appends: The parts.
        serializer: Encodes the events.
        allow_empty: Accept no parts at all (an idempotency record alone).
        keys: The subject keys to seal personal data with.

    Raises:
        EmptyAppendError: There are no parts (unless `allow_empty`).
        InvalidAppendError: A part is not a StreamAppend, or is invalid.
        DuplicateEventIdError: An event id is given twice in the call.
    """
    if not appends and not allow_empty:
        raise EmptyAppendError(_MANY)
    encode = _encoder(serializer, keys)
    parts = []
    for item in appends:
        if not isinstance(item, StreamAppend):
            raise InvalidAppendError(_MANY, f"{item!r} is not a StreamAppend")
        batch = validate_append(item.stream_id, item.events, item.expected_version)
        records = tuple(encode(event) for event in batch)
        parts.append(PendingAppend(item.stream_id, batch, item.expected_version, records))
    _check_unique_ids(parts)
    return parts


LARGE_APPEND: Final = 1000
"""Appends of more events than this are checked and encoded in a worker thread."""


async def prepare_append_off_loop(
    stream_id: str,
    events: Sequence[DomainEvent[Any]],
    expected: Expected,
    serializer: EventSerializer,
    keys: Keys = None,
) -> list[PendingAppend]:
    """`prepare_append`, in a worker thread when the batch is large.

    Encoding 100,000 events takes seconds: done on the event loop, it would
    stop every other task for that long. In a thread, the loop runs on
    beside it (the GIL is handed over every few milliseconds).
    """
    if _count(events) > LARGE_APPEND:
        return await asyncio.to_thread(
            prepare_append, stream_id, events, expected, serializer, keys
        )
    return prepare_append(stream_id, events, expected, serializer, keys)


async def prepare_appends_off_loop(
    appends: Sequence[StreamAppend],
    serializer: EventSerializer,
    *,
    allow_empty: bool = False,
    keys: Keys = None,
) -> list[PendingAppend]:
    """`prepare_appends`, in a worker thread when the parts hold many events in all."""
    total = sum(_count(getattr(item, "events", ())) for item in appends) if _sized(appends) else 0
    prepare = functools.partial(
        prepare_appends, appends, serializer, allow_empty=allow_empty, keys=keys
    )
    if total > LARGE_APPEND:
        return await asyncio.to_thread(prepare)
    return prepare()


def _sized(value: object) -> bool:
    return isinstance(value, Sized) and not isinstance(value, str | bytes)


def _count(events: object) -> int:
    return len(events) if _sized(events) else 0  # type: ignore[arg-type] # checked by _sized


def _check_unique_ids(parts: list[PendingAppend]) -> None:
    # Within one part validate_append has checked already; across parts, here.
    if len(parts) < 2:  # noqa: PLR2004 - one part: nothing to compare across
        return
    seen: set[UUID] = set()
    for part in parts:
        for record in part.records:
            if record.event_id in seen:
                raise DuplicateEventIdError(
                    part.stream_id, record.event_id, "earlier in the same append_many"
                )
            seen.add(record.event_id)


def reads_stored_first(part: PendingAppend) -> bool:
    """Whether a store must look for a retry before it claims the stream.

    Under ANY and STREAM_EXISTS the claim succeeds for a retry too (the
    stream has moved on, which those allow), so only the stored ids can
    tell; under an exact version or NO_STREAM a retry fails the claim, and
    is looked for then.
    """
    return part.expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS)


def match_retry(part: PendingAppend, stored: Mapping[UUID, StoredEvent]) -> AppendResult | None:
    """Return the original result if `part` repeats the append that stored its events.

    Args:
        part: The append's part.
        stored: The events a store holds under any of the part's event ids
            (a store may stop looking once the first id is not stored).

    Returns:
        None if none of its events is stored: it is new.

    Raises:
        DuplicateEventIdError: Some of its ids are stored but it is not
            that retry: other events beside them, another stream, other
            content or order, or an expected version that cannot have
            written them.
    """
    if not stored:
        return None
    stream_id, records = part.stream_id, part.records
    if any(record.event_id not in stored for record in records):
        known = next(record.event_id for record in records if record.event_id in stored)
        raise DuplicateEventIdError(
            stream_id,
            known,
            "but other events of this batch are new; a retry must repeat the whole append",
        )
    first = stored[records[0].event_id]
    check_retry(stream_id, part.expected, first.version)
    last = first
    for offset, record in enumerate(records):
        last = stored[record.event_id]
        if last.stream_id != stream_id:
            raise DuplicateEventIdError(stream_id, record.event_id, f"in stream {last.stream_id!r}")
        if last.version != first.version + offset or not last.holds(record):
            raise DuplicateEventIdError(
                stream_id,
                record.event_id,
                "with other content or in another order; a retry must repeat the append",
            )
    return AppendResult(stream_id=stream_id, version=last.version, position=last.position)


def explain_duplicate(
    parts: Sequence[PendingAppend], stored_in: Mapping[UUID, str]
) -> DuplicateEventIdError:
    """Explain a unique-index violation on event ids, once the failed write is undone.

    Args:
        parts: The parts whose write failed.
        stored_in: The stream each of their stored ids is in, as read after
            the failure.
    """
    for part in parts:
        for record in part.records:
            where = stored_in.get(record.event_id)
            if where is not None:
                place = f"in stream {where!r}" if where != part.stream_id else "in this stream"
                detail = f"{place}, and this batch is not a retry of the append that stored it"
                return DuplicateEventIdError(part.stream_id, record.event_id, detail)
    first = parts[0]
    return DuplicateEventIdError(first.stream_id, first.records[0].event_id, "stored concurrently")


def decode_rows(
    serializer: EventSerializer,
    rows: Iterable[Sequence[Any]],
    *,
    event_id: Callable[[Any], UUID],
    timestamp: Callable[[Any], datetime],
    keys: OpenKeys | None = None,
) -> list[RecordedEvent]:
    """Decode stored rows into `RecordedEvent`s.

    Each row takes the serializer's generated decoder (looked up once per
    stored name; the aggregate id parsed once per run of a stream's rows);
    a row it refuses, or one to upcast, takes `decode_fields`' checked path.

    Args:
        serializer: Decodes the payloads.
        rows: Rows of (position, stream_id, version, event_id, type,
            schema_version, timestamp, data, metadata), as the driver gives
            them.
        event_id: Turns the driver's event-id column into a UUID.
        timestamp: Turns the driver's timestamp column into an aware datetime.
        keys: The keys of the subjects whose personal data the rows may hold
            (`PersonalSide._keys_to_open`); None: the store has none.

    Raises:
        SerializationError: A stored id or timestamp is corrupt, or a payload
            does not fit its class.
        UnknownEventTypeError: No class is registered under a stored name.
    """
    fast = _FastPaths(serializer, keys).decode
    out: list[RecordedEvent] = []
    append = out.append
    for position, stream_id, version, raw_id, type_name, schema, stamp, data, meta in rows:
        try:
            uuid, moment = event_id(raw_id), timestamp(stamp)
        except (TypeError, ValueError) as exc:
            raise _corrupt(exc, type_name, stream_id, position) from exc
        event = fast(type_name, schema, stream_id, version, uuid, moment, data, meta)
        if event is None:
            event = serializer.decode_fields(
                type_name=type_name, schema_version=schema, event_id=uuid, timestamp=moment,
                data=data, metadata=meta, stream_id=stream_id, version=version, position=position,
                keys=keys,
            )  # fmt: skip
        append(RecordedEvent(event, position, stream_id))
    return out


class _FastPaths:
    """One read's generated decoders, by stored name, and its last stream's aggregate id."""

    def __init__(self, serializer: EventSerializer, keys: OpenKeys | None) -> None:
        self._serializer = serializer
        self._keys = keys
        self._paths: dict[tuple[str, int], tuple[Callable[..., Any], IdKind] | None] = {}
        self._stream: str | None = None
        self._kind: IdKind | None = None
        self._aggregate_id: object = None

    def decode(  # noqa: PLR0917 - a row's columns, as they are unpacked
        self,
        type_name: str,
        schema: int,
        stream_id: str,
        version: int,
        event_id: UUID,
        moment: datetime,
        data: str,
        meta: str,
    ) -> DomainEvent[Any] | None:
        """The row's event from the generated decoder, or None: take the checked path."""
        key = (type_name, schema)
        try:
            path = self._paths[key]
        except KeyError:
            path = self._paths[key] = self._serializer.fast_path(type_name, schema)
        if path is None:
            return None
        decoder, kind = path
        try:
            if stream_id != self._stream or kind is not self._kind:
                self._stream = None  # until the id below is parsed
                self._aggregate_id = stream_id_as(kind, stream_id)
                self._stream, self._kind = stream_id, kind
            payload = decode_json(data)
            if ENVELOPE in payload:
                unseal(payload, bound_to=event_id.bytes, type_name=type_name, keys=self._keys)
            event: DomainEvent[Any] = decoder(
                payload, self._aggregate_id, version, event_id, moment, decode_metadata(meta)
            )
        except Exception:  # noqa: BLE001 - the checked path explains it
            return None
        return event


def _corrupt(exc: Exception, type_name: str, stream_id: str, position: int) -> SerializationError:
    msg = f"the stored event id or timestamp is corrupt: {exc}"
    return SerializationError(msg, type_name=type_name, stream_id=stream_id, position=position)
