"""The inbox: integration events from other services, received durably and handled once.

Receiving and handling are two steps. `Inbox.receive` appends each
message, as it arrived, to the consumer's own event store, in a stream
named after the message's CloudEvents `source` and `id`; a broker client
(`fabula.nats`, `fabula.rabbitmq`) acknowledges the broker only after that
append commits. A message delivered again appends nothing: its stream
holds it already, with the same event id, so the append is a no-op.

Handling is a reaction: the `Inbox` runs in a `Reactor` like any other,
one lane per message subject (so one aggregate's messages are handled in
order), and its handlers act through `ReactionContext.send`, whose
commands are keyed to the received message: their effects happen once
however often the message is delivered or handled. A message that keeps
failing parks its subject's lane, exactly as for reactions; one that is
not a CloudEvent at all is kept, and parked, so an operator can see it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from uuid import UUID, uuid5

import attrs

from fabula._events import DomainEvent, EventMetadata, EventRegistry, default_registry, event
from fabula._integration import IntegrationEvent
from fabula._reaction import Reaction, ReactionContext, check_reaction_name
from fabula._store import EventStore, ExpectedVersion, RecordedEvent, StreamAppend
from fabula._telemetry import TRACE_HEADERS
from fabula.exceptions import DuplicateEventIdError, EventTypeError, IntegrationEventError

__all__ = ["Inbox", "InboxHandler", "IntegrationEventReceived", "register_inbox_events"]

logger = logging.getLogger("fabula.inbox")

InboxHandler = Callable[[IntegrationEvent, ReactionContext], Awaitable[None]]
"""An inbox handler: `async def handler(message, ctx) -> None`."""

_NAMESPACE = UUID("6f1d3c52-8a57-4b8e-9c39-2f0a8f0c5e11")


@event("fabula.IntegrationEventReceived")
@attrs.frozen(kw_only=True)
class IntegrationEventReceived(DomainEvent[str]):
    """A message an inbox received, kept as it arrived, in a stream of its own.

    Attributes:
        inbox: The inbox that received it.
        message: The message's body (CloudEvents JSON), as text.
    """

    inbox: str
    message: str


def register_inbox_events(registry: EventRegistry) -> None:
    """Register `IntegrationEventReceived` in `registry` (it is in `default_registry` already).

    A store built with a serializer over a registry of its own needs it to
    keep an inbox's messages.
    """
    if registry is not default_registry:
        registry.register(IntegrationEventReceived, "fabula.IntegrationEventReceived")


class Inbox(Reaction):
    """Receives integration events into the consumer's store, and handles each once.

    Example:
        async def open_shipment(message: fabula.IntegrationEvent, ctx: fabula.ReactionContext):
            await ctx.send(OpenShipment(order_id=UUID(message.data["order_id"])))

        inbox = fabula.Inbox("orders", {"orders.v1.OrderSubmitted": open_shipment})
        reactor = fabula.Reactor(store, bus, [inbox])  # handles what was received
        await fabula.nats.JetStreamConsumer(...).run(inbox, store)  # receives

    Args:
        name: The inbox's stable name (its streams and checkpoint are kept under it).
        handlers: The handler of each integration event type it takes;
            messages of other types are acknowledged and dropped.
    """

    def __init__(self, name: str, handlers: Mapping[str, InboxHandler]) -> None:
        self.name = check_reaction_name(name, "an Inbox")
        if not handlers:
            msg = f"inbox {name!r} handles no integration event type"
            raise EventTypeError(msg)
        for type_, handler in handlers.items():
            if not isinstance(type_, str) or not type_ or not callable(handler):
                msg = f"inbox {name!r}: map integration event types to handlers, not {type_!r}"
                raise EventTypeError(msg)
        self._handlers = dict(handlers)

    def __repr__(self) -> str:
        return f"<Inbox {self.name}: {', '.join(self._handlers)}>"

    @property
    def types(self) -> tuple[str, ...]:
        """The integration event types it takes."""
        return tuple(self._handlers)

    def handlers(self) -> dict[type[DomainEvent[Any]], Any]:
        """The one event class an inbox handles: `IntegrationEventReceived`."""
        return {IntegrationEventReceived: None}

    def takes(self, message: IntegrationEvent) -> bool:
        """Whether this inbox handles messages of `message`'s type."""
        return message.type in self._handlers

    def lane(self, recorded: RecordedEvent) -> str:
        """A message's lane is its source and subject: one aggregate's messages go in order.

        Raises:
            IntegrationEventError: The message is not a CloudEvent (it is parked).
        """
        received = recorded.event
        if not isinstance(received, IntegrationEventReceived) or received.inbox != self.name:
            return "(another inbox's)"  # passed over in one lane, not a task each
        message = IntegrationEvent.from_json(received.message)
        return f"{message.source} {message.subject or message.id}"

    async def handle(self, recorded: RecordedEvent, ctx: ReactionContext) -> None:
        """Hand a received message to its type's handler.

        Raises:
            IntegrationEventError: The message is not a CloudEvent.
        """
        received = recorded.event
        if not isinstance(received, IntegrationEventReceived) or received.inbox != self.name:
            return
        message = IntegrationEvent.from_json(received.message)
        handler = self._handlers.get(message.type)
        if handler is not None:
            await handler(message, ctx)

    async def receive(self, store: EventStore, bodies: Sequence[bytes]) -> int:
        """Append the messages in `bodies` to `store`, in one transaction; return how many are new.

        Messages of types this inbox does not take are not kept. One that is
        not a CloudEvent is kept (its handling parks it, for an operator to
        see). A message kept before is kept once: appending it again is a
        no-op (an event id taken by it already). Acknowledge the broker
        only after this returns.

        Raises:
            StoreError: The store failed; nothing was appended.
        """
        appends: dict[str, StreamAppend] = {}
        for body in bodies:
            received = self._received(body)
            if received is not None and received.aggregate_id not in appends:
                appends[received.aggregate_id] = StreamAppend(
                    received.aggregate_id, [received], expected_version=ExpectedVersion.NO_STREAM
                )
        if not appends:
            return 0
        try:
            await store.append_many(list(appends.values()))
        except DuplicateEventIdError:  # some were kept before (at another instant): one by one
            kept = 0
            for append in appends.values():
                try:
                    await store.append_many([append])
                except DuplicateEventIdError:
                    continue
                kept += 1
            return kept
        return len(appends)

    def _received(self, body: bytes) -> IntegrationEventReceived | None:
        text = body.decode("utf-8", errors="replace")
        try:
            message = IntegrationEvent.from_json(body)
        except IntegrationEventError as exc:
            logger.warning(
                "inbox %s received a message that is not a CloudEvent: %s", self.name, exc
            )
            key = "malformed " + hashlib.sha256(body).hexdigest()
            metadata = EventMetadata()
        else:
            if not self.takes(message):
                return None
            key = f"{message.source} {message.id}"
            metadata = EventMetadata(
                correlation_id=_uuid(message.correlationid),
                causation_id=_uuid(message.id),
                # The sender's trace context: the span that handles it links to the sender's.
                headers={
                    name: message.extensions[name]
                    for name in TRACE_HEADERS
                    if name in message.extensions
                },
            )
        event_id = uuid5(_NAMESPACE, f"{self.name} {key}")
        return IntegrationEventReceived(
            aggregate_id=f"inbox-{self.name}-{event_id}",
            event_id=event_id,
            metadata=metadata,
            inbox=self.name,
            message=text,
        )


def _uuid(text: str | None) -> UUID | None:
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        return None
