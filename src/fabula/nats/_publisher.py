"""Publishing integration events to a JetStream stream, each acknowledged before the next."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from fabula._broker import cancellable, check_positive, shown_url
from fabula._integration import CONTENT_TYPE, IntegrationEvent
from fabula.exceptions import BrokerUnavailableError

__all__ = ["UNAVAILABLE", "JetStreamPublisher", "close_quietly", "connect"]

logger = logging.getLogger("fabula.nats")

_CLOSE_AT_LEAST = 5.0  # seconds a close may take before it is given up

UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
)
"""The nats-py errors that mean the server is down or not answering (not a refusal)."""


async def connect(url: str, name: str, connect_timeout: float) -> Client:
    """Connect to `url`, reconnecting on its own for ever once connected.

    The client's errors while it reconnects are logged at DEBUG on
    `fabula.nats` (the relay and the consumer report outages themselves).

    Raises:
        BrokerUnavailableError: The server cannot be reached now.
    """

    async def quietly(error: Exception) -> None:
        logger.debug("NATS %s (%s): %r", shown_url(url), name, error)

    client = Client()
    try:
        # nats-py retries a first connection for ever when reconnects are
        # unlimited: the deadline makes a missing server an outage now.
        async with asyncio.timeout(connect_timeout + 0.5):
            await client.connect(
                url,
                name=name,
                error_cb=quietly,
                # nats-py annotates these as int but sleeps and waits on floats
                connect_timeout=connect_timeout,  # type: ignore[arg-type]
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]
                allow_reconnect=True,
            )
    except (*UNAVAILABLE, nats.errors.Error) as exc:
        await close_quietly(client, connect_timeout)
        msg = f"NATS at {shown_url(url)} cannot be reached: {exc!r}"
        raise BrokerUnavailableError(msg) from exc
    return client


async def close_quietly(client: Client, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not an API
    """Close `client`, giving up after `timeout` seconds (5 at least), and never raise.

    It runs in `finally` blocks of cancelled tasks: a close that waited on
    a server that is not there would hold the cancellation up for ever.
    """
    if client.is_closed:
        return
    with contextlib.suppress(*UNAVAILABLE, nats.errors.Error, TimeoutError):
        async with asyncio.timeout(max(timeout, _CLOSE_AT_LEAST)):
            await client.close()


class JetStreamPublisher:
    """A relay's `fabula.Publisher` to a JetStream stream, which it creates or checks.

    Each message goes to the subject named by its type (`orders.v1.OrderSubmitted`),
    with the event id as `Nats-Msg-Id`: the stream drops a copy sent again
    within its duplicate window. `publish` returns once JetStream has
    stored the message (its publish ack).

    Args:
        url: The server, such as `nats://127.0.0.1:4222`.
        stream: The stream's name, such as `ORDERS`.
        subjects: The subjects it holds, such as `["orders.v1.>"]`; a stream
            of that name must hold at least these.
        duplicate_window: How long, in seconds, the stream remembers ids
            to drop copies (used when it creates the stream).
        timeout: How long to wait for a publish ack, in seconds.
        connect_timeout: How long one connection attempt may take.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subjects: Sequence[str],
        duplicate_window: float = 120.0,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        if isinstance(subjects, str) or not subjects:
            msg = f"a JetStream stream needs a list of subjects, not {subjects!r}"
            raise ValueError(msg)
        check_positive(
            duplicate_window=duplicate_window, timeout=timeout, connect_timeout=connect_timeout
        )
        self.url = url
        self.stream = stream
        self.subjects = tuple(subjects)
        self.duplicate_window = duplicate_window
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._checked = False  # the stream was made or checked since the last failure
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<JetStreamPublisher {self.target}>"

    @property
    def target(self) -> str:
        """The server and stream, without credentials."""
        return f"{shown_url(self.url)} stream {self.stream}"

    async def publish(self, message: IntegrationEvent) -> None:
        """Publish `message`; return once JetStream stored it.

        Raises:
            BrokerUnavailableError: The server is down, not answering, or its
                stream cannot be made to hold the subjects.
            nats.js.errors.APIError: JetStream refused the message.
        """
        js = await self._context()
        headers = {"Nats-Msg-Id": message.id, "Content-Type": CONTENT_TYPE}
        try:
            await cancellable(
                js.publish(
                    message.type,
                    message.to_json(),
                    timeout=self.timeout,
                    stream=self.stream,
                    headers=headers,
                )
            )
        except UNAVAILABLE as exc:
            # The stream may be gone too (deleted, or lost with a server): check it again.
            self._checked = False
            msg = f"JetStream {self.target} did not acknowledge {message.type}: {exc!r}"
            raise BrokerUnavailableError(msg) from exc

    async def ensure_stream(self) -> None:
        """Connect, and create the stream (or check that it holds the subjects).

        Raises:
            BrokerUnavailableError: The server cannot be reached, or its
                stream of that name does not hold the subjects.
        """
        await self._context()

    async def close(self) -> None:
        """Close the connection (the next `publish` opens another)."""
        client, self._client, self._js = self._client, None, None
        if client is not None:
            await close_quietly(client, self.connect_timeout)

    async def _context(self) -> JetStreamContext:
        if self._js is not None and self._checked:
            return self._js
        async with self._lock:
            if self._js is None:
                client = await connect(self.url, "fabula-relay", self.connect_timeout)
                self._client, self._js = client, client.jetstream(timeout=self.timeout)
            if not self._checked:
                await self._ensure(self._js)
                self._checked = True
            return self._js

    async def _ensure(self, js: JetStreamContext) -> None:
        try:
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                config = StreamConfig(
                    name=self.stream,
                    subjects=list(self.subjects),
                    storage=StorageType.FILE,
                    duplicate_window=self.duplicate_window,
                )
                await js.add_stream(config)
                return
        except UNAVAILABLE as exc:
            msg = f"JetStream {self.target} cannot be reached: {exc!r}"
            raise BrokerUnavailableError(msg) from exc
        held = set(info.config.subjects or ())
        missing = [subject for subject in self.subjects if subject not in held]
        if missing:
            msg = (
                f"JetStream stream {self.stream} holds {sorted(held)}, not {missing}: "
                "add them to the stream, or name another"
            )
            raise BrokerUnavailableError(msg)
