"""Consuming integration events from RabbitMQ into an inbox, with manual acknowledgements."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from fabula._broker import Backoff, check_positive, receive_until_kept, shown_url
from fabula._inbox import Inbox
from fabula._store import EventStore
from fabula.exceptions import BrokerUnavailableError
from fabula.rabbitmq._publisher import UNAVAILABLE, close_quietly, open_channel

__all__ = ["RabbitConsumer"]

logger = logging.getLogger("fabula.inbox")


class RabbitConsumer:
    """Feeds an `Inbox` from a durable RabbitMQ queue bound to a topic exchange.

    Declares the exchange, the queue and its bindings, then takes
    messages with manual acknowledgements: up to `batch` are appended to
    the inbox's store in one transaction, and only then acknowledged. A
    message not acknowledged (the process died, the connection was lost)
    is delivered again, and appending it again is a no-op.

    Args:
        url: The broker, such as `amqp://guest:guest@127.0.0.1:5672/`.
        exchange: The topic exchange the producer publishes to.
        queue: The durable queue's name (one per consuming service).
        routing_keys: The bindings, such as `["orders.v1.#"]`; the inbox
            drops, acknowledged, the types it does not handle.
        batch: Messages taken at once (the channel's prefetch).
        idle_wait: Seconds to wait for more messages before appending a
            batch that is not full.
        connect_timeout: How long one connection attempt may take.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        queue: str,
        routing_keys: Sequence[str] = ("#",),
        batch: int = 100,
        idle_wait: float = 0.05,
        connect_timeout: float = 2.0,
    ) -> None:
        if isinstance(routing_keys, str) or not routing_keys:
            msg = f"a RabbitMQ consumer needs a list of routing keys, not {routing_keys!r}"
            raise ValueError(msg)
        check_positive(batch=batch, idle_wait=idle_wait, connect_timeout=connect_timeout)
        self.url = url
        self.exchange = exchange
        self.queue = queue
        self.routing_keys = tuple(routing_keys)
        self.batch = int(batch)
        self.idle_wait = idle_wait
        self.connect_timeout = connect_timeout
        self.received = 0
        """Messages appended to the inbox's store by this consumer (copies excluded)."""

    def __repr__(self) -> str:
        return f"<RabbitConsumer {shown_url(self.url)} {self.exchange} -> {self.queue}>"

    async def declare(self) -> None:
        """Declare the exchange, the queue and its bindings, and return (no message is taken).

        Raises:
            BrokerUnavailableError: The broker cannot be reached.
        """
        connection, channel = await open_channel(self.url, "fabula-inbox", self.connect_timeout)
        try:
            await self._queue(channel)
        finally:
            await close_quietly(connection, self.connect_timeout)

    async def run(self, inbox: Inbox, store: EventStore) -> None:
        """Receive into `inbox` until cancelled, reconnecting whenever the broker goes away."""
        backoff = Backoff(most=5.0)
        while True:
            try:
                connection, channel = await open_channel(
                    self.url, f"fabula-inbox-{inbox.name}", self.connect_timeout
                )
            except BrokerUnavailableError as exc:
                if backoff.failures == 0:
                    logger.warning("inbox %s: %s; reconnecting", inbox.name, exc)
                await backoff.pause()
                continue
            try:
                await channel.set_qos(prefetch_count=self.batch)
                queue = await self._queue(channel)
                if backoff.failures:
                    logger.warning("inbox %s: RabbitMQ is back", inbox.name)
                backoff.reset()
                await self._consume(queue, inbox, store)
            except UNAVAILABLE as exc:
                if backoff.failures == 0:
                    logger.warning("inbox %s: RabbitMQ failed (%r); reconnecting", inbox.name, exc)
            finally:
                await close_quietly(connection, self.connect_timeout)
            await backoff.pause()

    async def _queue(self, channel: aio_pika.abc.AbstractChannel) -> AbstractQueue:
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(self.queue, durable=True)
        for key in self.routing_keys:
            await queue.bind(exchange, routing_key=key)
        return queue

    async def _consume(self, queue: AbstractQueue, inbox: Inbox, store: EventStore) -> None:
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        closed = asyncio.Event()
        channel = queue.channel
        channel.close_callbacks.add(lambda *_: closed.set())
        tag = await queue.consume(arrived.put, no_ack=False)
        try:
            while not closed.is_set():
                batch = await self._take(arrived, closed)
                if not batch:
                    continue
                self.received += await receive_until_kept(inbox, store, [m.body for m in batch])
                await batch[-1].ack(multiple=True)
            msg = "the channel was closed"
            raise BrokerUnavailableError(msg)
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await queue.cancel(tag)

    async def _take(
        self, arrived: asyncio.Queue[AbstractIncomingMessage], closed: asyncio.Event
    ) -> list[AbstractIncomingMessage]:
        batch: list[AbstractIncomingMessage] = []
        try:
            async with asyncio.timeout(1.0 if not arrived.qsize() else self.idle_wait):
                batch.append(await arrived.get())
        except TimeoutError:
            return batch
        while len(batch) < self.batch and not closed.is_set():
            if arrived.empty():
                try:
                    async with asyncio.timeout(self.idle_wait):
                        batch.append(await arrived.get())
                except TimeoutError:
                    break
            else:
                batch.append(arrived.get_nowait())
        return batch
