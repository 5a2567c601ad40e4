"""Publishing integration events to a RabbitMQ topic exchange, with publisher confirms."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from fabula._broker import cancellable, check_positive, shown_url
from fabula._integration import CONTENT_TYPE, IntegrationEvent
from fabula.exceptions import BrokerUnavailableError

__all__ = ["UNAVAILABLE", "RabbitPublisher", "close_quietly", "open_channel"]

_CLOSE_AT_LEAST = 5.0  # seconds a close may take before it is given up

UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
)
"""The aio-pika errors that mean the broker is down or the connection lost (not a refusal)."""


async def close_quietly(connection: AbstractConnection, timeout: float) -> None:  # noqa: ASYNC109
    """Close `connection`, giving up after `timeout` seconds (5 at least), and never raise.

    It runs in `finally` blocks of cancelled tasks: a close that waited on
    a broker that is not there would hold the cancellation up for ever.
    """
    if connection.is_closed:
        return
    with contextlib.suppress(*UNAVAILABLE, TimeoutError):
        async with asyncio.timeout(max(timeout, _CLOSE_AT_LEAST)):
            await connection.close()


async def open_channel(
    url: str, name: str, connect_timeout: float
) -> tuple[AbstractConnection, AbstractChannel]:
    """Open a connection named `name` and a channel on it.

    Raises:
        BrokerUnavailableError: The broker cannot be reached now.
    """
    try:
        connection = await aio_pika.connect(
            url, timeout=connect_timeout, client_properties={"connection_name": name}
        )
    except UNAVAILABLE as exc:
        msg = f"RabbitMQ at {shown_url(url)} cannot be reached: {exc!r}"
        raise BrokerUnavailableError(msg) from exc
    try:
        channel = await connection.channel(publisher_confirms=True)
    except BaseException:
        await close_quietly(connection, connect_timeout)
        raise
    return connection, channel


class RabbitPublisher:
    """A relay's `fabula.Publisher` to a durable RabbitMQ topic exchange, which it declares.

    Each message is persistent, its routing key is its type
    (`orders.v1.OrderSubmitted`) and its `message_id` the event id;
    `publish` returns once the broker confirmed it (publisher confirms),
    that is, once every queue bound to it holds it. RabbitMQ keeps a
    message only for the queues bound when it arrives: declare the
    consumers' queues (`RabbitConsumer` does, when it starts) before
    publishing what they must not miss.

    Args:
        url: The broker, such as `amqp://guest:guest@127.0.0.1:5672/`.
        exchange: The topic exchange's name, such as `orders`.
        timeout: How long to wait for a confirm, in seconds.
        connect_timeout: How long one connection attempt may take.
        name: The connection's name, shown by the broker.
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        name: str = "fabula-relay",
    ) -> None:
        if not isinstance(exchange, str) or not exchange:
            msg = f"a RabbitMQ exchange needs a name, not {exchange!r}"
            raise ValueError(msg)
        check_positive(timeout=timeout, connect_timeout=connect_timeout)
        self.url = url
        self.exchange = exchange
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<RabbitPublisher {self.target}>"

    @property
    def target(self) -> str:
        """The broker and exchange, without credentials."""
        return f"{shown_url(self.url)} exchange {self.exchange}"

    async def publish(self, message: IntegrationEvent) -> None:
        """Publish `message`; return once the broker confirmed it.

        Raises:
            BrokerUnavailableError: The broker is down or the connection was lost.
            aio_pika.exceptions.DeliveryError: The broker refused the message.
        """
        exchange = await self._declared()
        body = aio_pika.Message(
            message.to_json(),
            message_id=message.id,
            content_type=CONTENT_TYPE,
            type=message.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await cancellable(
                exchange.publish(body, routing_key=message.type, timeout=self.timeout)
            )
        except aio_pika.exceptions.DeliveryError:
            raise
        except UNAVAILABLE as exc:
            await self._drop(exchange)
            msg = f"RabbitMQ {self.target} did not confirm {message.type}: {exc!r}"
            raise BrokerUnavailableError(msg) from exc

    async def ensure_exchange(self) -> None:
        """Connect and declare the exchange.

        Raises:
            BrokerUnavailableError: The broker cannot be reached.
        """
        await self._declared()

    async def close(self) -> None:
        """Close the connection (the next `publish` opens another)."""
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            await close_quietly(connection, self.connect_timeout)

    async def _declared(self) -> AbstractExchange:
        if self._exchange is not None:
            return self._exchange
        async with self._lock:
            if self._exchange is None:
                connection, channel = await open_channel(self.url, self.name, self.connect_timeout)
                try:
                    self._exchange = await channel.declare_exchange(
                        self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except UNAVAILABLE as exc:
                    await close_quietly(connection, self.connect_timeout)
                    msg = f"RabbitMQ {self.target}: the exchange cannot be declared: {exc!r}"
                    raise BrokerUnavailableError(msg) from exc
                self._connection = connection
            return self._exchange

    async def _drop(self, exchange: AbstractExchange) -> None:
        """Forget a connection that failed (once), so the next publish opens another."""
        async with self._lock:
            if self._exchange is exchange:
                connection, self._connection, self._exchange = self._connection, None, None
                if connection is not None:
                    await close_quietly(connection, self.connect_timeout)
