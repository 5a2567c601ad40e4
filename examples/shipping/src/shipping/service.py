"""The wiring: the store, the command bus, the inbox of order events and its consumers.

Received order events are kept in the service's own store first (the
inbox), then handled by the reactor: an `orders.v1.OrderConfirmed` opens
the order's shipment, an `orders.v1.OrderCancelled` cancels it. The
commands are keyed to the received message, so a message delivered twice
opens one shipment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Protocol
from urllib.parse import urlsplit
from uuid import UUID

import attrs

import fabula
from fabula.sqlite import SQLiteEventStore

from .domain import Shipment

__all__ = [
    "INBOX",
    "CancelShipment",
    "Consumer",
    "OpenShipment",
    "ShippingService",
    "consumer",
]

logger = logging.getLogger("shipping")

INBOX = "orders"
"""The inbox's name: the order events are kept under it."""

TYPES = ("orders.v1.OrderConfirmed", "orders.v1.OrderCancelled")
"""The order events it takes (RabbitMQ binds its queue to these alone)."""


@attrs.frozen(kw_only=True)
class OpenShipment(fabula.Command[None]):
    """Open the shipment of a confirmed order."""

    order_id: UUID


@attrs.frozen(kw_only=True)
class CancelShipment(fabula.Command[None]):
    """Cancel the shipment of a cancelled order (if it has one)."""

    order_id: UUID
    reason: str


class Consumer(Protocol):
    """A broker consumer feeding the inbox (`JetStreamConsumer`, `RabbitConsumer`)."""

    async def run(self, inbox: fabula.Inbox, store: fabula.EventStore) -> None:
        """Receive until cancelled."""
        ...


def consumer(url: str, name: str = "shipping") -> Consumer:
    """The consumer of the order events at `url` (`nats://` or `amqp://`), named `name`.

    Raises:
        ValueError: A URL of another scheme.
    """
    scheme = urlsplit(url).scheme
    if scheme in {"nats", "tls"}:
        from fabula.nats import JetStreamConsumer  # noqa: PLC0415 - an optional client

        return JetStreamConsumer(url, stream="ORDERS", durable=name, subject="orders.v1.>")
    if scheme in {"amqp", "amqps"}:
        from fabula.rabbitmq import RabbitConsumer  # noqa: PLC0415 - an optional client

        return RabbitConsumer(url, exchange="orders", queue=f"{name}.orders", routing_keys=TYPES)
    msg = f"--consume takes a nats:// or amqp:// URL, not {url!r}"
    raise ValueError(msg)


class ShippingService:
    """The shipping service over one SQLite file.

    Attributes:
        store: Its event store (shipments, and the inbox's messages).
        repository: Loads and saves shipments.
        commands: The command bus (idempotent: the inbox's commands are keyed).
        inbox: Receives the order events.
        reactor: Handles what the inbox received.
    """

    def __init__(self, store: fabula.Store) -> None:
        self.store = store
        self.repository = fabula.Repository(store)
        self.commands = fabula.CommandBus()
        self.commands.use(fabula.Correlation())
        self.commands.use(fabula.RetryOnConflict(attempts=10, max_delay=0.05))
        self.commands.use(fabula.Idempotency(store))
        self.commands.register(OpenShipment, self._open)
        self.commands.register(CancelShipment, self._cancel)
        self.inbox = fabula.Inbox(
            INBOX,
            {
                "orders.v1.OrderConfirmed": self._confirmed,
                "orders.v1.OrderCancelled": self._cancelled,
            },
        )
        self.reactor = fabula.Reactor(store, self.commands, [self.inbox])

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, database: str, *, consume: Sequence[str] = (), name: str = "shipping"
    ) -> AsyncIterator[ShippingService]:
        """Open the service on a SQLite file, consume from each broker URL, close on exit."""
        consumers = [consumer(url, name) for url in consume]
        async with SQLiteEventStore(database) as store:
            service = cls(store)
            tasks = [asyncio.create_task(service.reactor.run(), name="shipping-reactor")]
            tasks += [
                asyncio.create_task(each.run(service.inbox, store), name="shipping-consumer")
                for each in consumers
            ]
            try:
                yield service
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def shipment(self, order_id: UUID) -> Shipment | None:
        """The shipment of `order_id`, or None if it has none."""
        try:
            return await self.repository.get(Shipment, order_id)
        except fabula.AggregateNotFoundError:
            return None

    async def _confirmed(
        self, message: fabula.IntegrationEvent, ctx: fabula.ReactionContext
    ) -> None:
        await ctx.send(OpenShipment(order_id=UUID(message.data["order_id"])))

    async def _cancelled(
        self, message: fabula.IntegrationEvent, ctx: fabula.ReactionContext
    ) -> None:
        data = message.data
        await ctx.send(CancelShipment(order_id=UUID(data["order_id"]), reason=data["reason"]))

    async def _open(self, command: OpenShipment) -> None:
        if await self.shipment(command.order_id) is not None:
            return  # opened already: the order service confirms an order once
        await self.repository.save(Shipment.open(command.order_id))

    async def _cancel(self, command: CancelShipment) -> None:
        shipment = await self.shipment(command.order_id)
        if shipment is not None:  # an order cancelled before confirmation has no shipment
            shipment.cancel(command.reason)
            await self.repository.save(shipment)
