"""Integration events: the public contract, the CloudEvents envelope, and the relay.

Domain events are a service's private history; integration events are
what it promises other services. An `IntegrationContract` names, for each
domain event class to publish, its public type (`orders.v1.OrderSubmitted`)
and a function that builds its data, so nothing is published by accident
and a public type outlives an internal rename. A `Relay` is a reaction
that publishes each mapped event, as a CloudEvents 1.0 JSON message, to a
`Publisher` (JetStream, RabbitMQ) and lets its checkpoint pass the event
only once the broker acknowledged it: the event log is the outbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar, runtime_checkable
from uuid import UUID

import attrs
import orjson

from fabula import _telemetry as telemetry
from fabula._events import DomainEvent
from fabula._reaction import Reaction, ReactionContext, check_reaction_name
from fabula._store import RecordedEvent
from fabula.exceptions import EventTypeError, IntegrationEventError

__all__ = ["CONTENT_TYPE", "IntegrationContract", "IntegrationEvent", "Publisher", "Relay"]

E = TypeVar("E", bound=DomainEvent[Any])

CONTENT_TYPE = "application/cloudevents+json"
"""The media type of a CloudEvents message in JSON structured mode."""

# A dotted name whose segments suit a NATS subject and an AMQP routing key
# alike, with one `v<N>` segment before the last: orders.v1.OrderSubmitted.
_TYPE = re.compile(r"(?:[A-Za-z0-9_-]+\.)+v[0-9]+\.[A-Za-z0-9_-]+")
_MAX_TYPE = 200
_REQUIRED = ("id", "source", "type")
_KNOWN = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}
)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)  # JSON has no sets: a stable order
    msg = f"{type(value).__qualname__} is not JSON"
    raise TypeError(msg)


@attrs.frozen(kw_only=True)
class IntegrationEvent:
    """One integration event: a CloudEvents 1.0 message, read or about to be sent.

    Attributes:
        id: Unique within `source`; a relay uses the domain event's id, so a
            broker can drop a message it was sent twice.
        source: The service (a URI reference), such as `urn:example:orders`.
        type: The public, versioned type, such as `orders.v1.OrderSubmitted`.
        subject: What it is about: the aggregate's id.
        time: When the domain event happened.
        data: The payload, a JSON value.
        datacontenttype: The payload's media type.
        correlationid: The correlation id of the request that wrote it.
        causationid: The id of the message that caused it.
        extensions: Further CloudEvents extension attributes, by name.
    """

    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime | None = None
    data: Any = None
    datacontenttype: str = "application/json"
    correlationid: str | None = None
    causationid: str | None = None
    extensions: Mapping[str, str] = attrs.field(factory=dict)

    def to_json(self) -> bytes:
        """Encode as one CloudEvents JSON object (structured mode).

        Raises:
            IntegrationEventError: `data` holds a value JSON cannot carry.
        """
        body: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        if self.subject is not None:
            body["subject"] = self.subject
        if self.time is not None:
            body["time"] = self.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        body["datacontenttype"] = self.datacontenttype
        for name in ("correlationid", "causationid"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        body.update(self.extensions)
        body["data"] = self.data
        try:
            return orjson.dumps(body, default=_json_default)
        except TypeError as exc:
            msg = f"integration event {self.type} ({self.id}) cannot be JSON: {exc}"
            raise IntegrationEventError(msg) from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> IntegrationEvent:
        """Decode a CloudEvents 1.0 JSON object.

        Raises:
            IntegrationEventError: It is not JSON, not an object, not
                specversion 1.0, or lacks (or mistypes) an attribute.
        """
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            msg = f"an integration event must be JSON: {exc}"
            raise IntegrationEventError(msg) from exc
        if not isinstance(body, dict):
            msg = f"an integration event must be a JSON object, not {type(body).__name__}"
            raise IntegrationEventError(msg)
        if body.get("specversion") != "1.0":
            msg = f"only CloudEvents specversion 1.0 is read, not {body.get('specversion')!r}"
            raise IntegrationEventError(msg)
        for name in _REQUIRED:
            if not isinstance(body.get(name), str) or not body[name]:
                msg = f"a CloudEvent needs a non-empty string {name!r}"
                raise IntegrationEventError(msg)
        strings = {}
        for name, value in body.items():
            if name in ("data", "specversion"):
                continue
            if not isinstance(value, str):
                msg = f"CloudEvents attribute {name!r} must be a string here, not {value!r}"
                raise IntegrationEventError(msg)
            strings[name] = value
        return cls(
            id=strings["id"],
            source=strings["source"],
            type=strings["type"],
            subject=strings.get("subject"),
            time=_parse_time(strings.get("time")),
            data=body.get("data"),
            datacontenttype=strings.get("datacontenttype", "application/json"),
            correlationid=strings.get("correlationid"),
            causationid=strings.get("causationid"),
            extensions={
                name: value
                for name, value in strings.items()
                if name not in _KNOWN and name not in ("correlationid", "causationid")
            },
        )


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"a CloudEvent's time must be RFC 3339, not {text!r}"
        raise IntegrationEventError(msg) from exc
    if parsed.tzinfo is None:
        msg = f"a CloudEvent's time must carry its offset, not {text!r}"
        raise IntegrationEventError(msg)
    return parsed


@attrs.frozen
class _Mapping:
    type: str
    data: Callable[[Any], object]


@attrs.define(repr=False)
class IntegrationContract:
    """Which domain events a service publishes, under which public types, with which data.

    Example:
        contract = fabula.IntegrationContract(source="urn:example:orders")
        contract.add(
            OrderSubmitted,
            "orders.v1.OrderSubmitted",
            lambda e: {"order_id": str(e.aggregate_id), "total": str(e.total_amount)},
        )

    Args:
        source: The CloudEvents `source` of every event published (a URI
            reference naming the service).
    """

    source: str
    _mappings: dict[type[DomainEvent[Any]], _Mapping] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if (
            not isinstance(self.source, str)
            or not self.source
            or self.source != self.source.strip()
        ):
            msg = f"an integration contract needs a non-empty source URI, not {self.source!r}"
            raise ValueError(msg)

    def __repr__(self) -> str:
        types = ", ".join(mapping.type for mapping in self._mappings.values())
        return f"<IntegrationContract {self.source}: {types}>"

    def add(self, event_class: type[E], type_: str, data: Callable[[E], object]) -> None:
        """Publish `event_class` as `type_`, its data built by `data` from the event.

        `type_` is dotted, with a version segment before its last part
        (`orders.v1.OrderSubmitted`); its characters suit a NATS subject and
        an AMQP routing key. `data` returns a JSON value (`UUID`, `datetime`
        and `Decimal` are written as strings).

        Raises:
            EventTypeError: `event_class` is not an event class, is mapped
                already, or `type_` is not such a name (or is taken).
        """
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
            msg = f"only DomainEvent classes can be published, not {event_class!r}"
            raise EventTypeError(msg)
        if not isinstance(type_, str) or not _TYPE.fullmatch(type_) or len(type_) > _MAX_TYPE:
            msg = (
                "an integration event type is dotted, with a version before its last part "
                f"(orders.v1.OrderSubmitted), of letters, digits, '_' and '-', not {type_!r}"
            )
            raise EventTypeError(msg)
        if event_class in self._mappings:
            taken = self._mappings[event_class].type
            msg = f"{event_class.__qualname__} is published already, as {taken}"
            raise EventTypeError(msg)
        if any(mapping.type == type_ for mapping in self._mappings.values()):
            msg = f"integration event type {type_} is taken"
            raise EventTypeError(msg)
        if not callable(data):
            msg = f"the data of {type_} must be built by a function of the event, not {data!r}"
            raise EventTypeError(msg)
        self._mappings[event_class] = _Mapping(type_, data)

    @property
    def event_classes(self) -> tuple[type[DomainEvent[Any]], ...]:
        """The domain event classes published, in the order they were added."""
        return tuple(self._mappings)

    @property
    def types(self) -> tuple[str, ...]:
        """The public types published, in the order they were added."""
        return tuple(mapping.type for mapping in self._mappings.values())

    def envelope(self, recorded: RecordedEvent) -> IntegrationEvent | None:
        """The integration event `recorded` is published as (None: it is not published)."""
        event = recorded.event
        mapping = self._mappings.get(type(event))
        if mapping is None:
            return None
        metadata = event.metadata
        return IntegrationEvent(
            id=str(event.event_id),
            source=self.source,
            type=mapping.type,
            subject=recorded.stream_id,
            time=event.timestamp,
            data=mapping.data(event),
            correlationid=_text(metadata.correlation_id),
            causationid=_text(metadata.causation_id),
        )


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


@runtime_checkable
class Publisher(Protocol):
    """Sends integration events to a broker; `fabula.nats` and `fabula.rabbitmq` provide them."""

    @property
    def target(self) -> str:
        """Where it publishes, for logs and status (no credentials)."""
        ...

    async def publish(self, message: IntegrationEvent) -> None:
        """Send `message`; return once the broker has acknowledged storing it.

        Raises:
            BrokerUnavailableError: The broker could not be reached or did
                not acknowledge in time (retried without parking).
            Exception: The broker refused the message (retried, then parked).
        """
        ...

    async def close(self) -> None:
        """Close the connection (a later `publish` opens another)."""
        ...


class Relay(Reaction):
    """Publishes the events of an `IntegrationContract` to a broker, from the event log.

    A relay is a reaction: run it in a `Reactor`, which gives it a
    checkpoint (passed only once the broker acknowledged), a lease on
    PostgreSQL (one active relay, the others standing by), lag in
    `status()`, and parking for an event the broker keeps refusing. A
    broker that is down is waited for, with backoff; nothing is parked
    for it, and the write side never waits for the broker.

    Each stream's events are published one at a time, in order: the next
    only once the broker acknowledged the previous, so a retry never sends
    an aggregate's event after a later one. Streams go side by side (the
    reactor's `concurrency`).

    Args:
        name: The relay's stable name (its checkpoint is kept under it).
        contract: What is published, and how.
        publisher: Where.
    """

    def __init__(self, name: str, contract: IntegrationContract, publisher: Publisher) -> None:
        self.name = check_reaction_name(name, "a Relay")
        self.contract = contract
        self.publisher = publisher
        self._types: dict[type[DomainEvent[Any]], Any] = dict.fromkeys(contract.event_classes)
        if not self._types:
            msg = f"relay {name!r}: its contract publishes no event"
            raise EventTypeError(msg)

    def __repr__(self) -> str:
        return f"<Relay {self.name} to {self.publisher.target}>"

    def handlers(self) -> dict[type[DomainEvent[Any]], Any]:
        """The event classes the contract publishes (their handler is `handle`)."""
        return self._types

    async def handle(self, recorded: RecordedEvent, ctx: ReactionContext) -> None:
        """Publish `recorded` as its integration event; return once the broker acknowledged."""
        del ctx
        message = self.contract.envelope(recorded)
        if message is None:
            return
        if not telemetry.enabled():
            await self.publisher.publish(message)
            return
        attributes = {"fabula.relay": self.name, "cloudevents.event_type": message.type}
        with telemetry.span("fabula.publish", attributes, kind="producer"):
            # The consumer's inbox keeps this span's context with the message.
            traced = telemetry.trace_headers()
            if traced:
                message = attrs.evolve(message, extensions={**message.extensions, **traced})
            await self.publisher.publish(message)
