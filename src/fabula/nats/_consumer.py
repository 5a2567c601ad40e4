"""Consuming integration events from JetStream into an inbox, through a durable pull consumer."""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from fabula._broker import Backoff, cancellable, check_positive, receive_until_kept, shown_url
from fabula._inbox import Inbox
from fabula._store import EventStore
from fabula.exceptions import BrokerUnavailableError
from fabula.nats._publisher import UNAVAILABLE, close_quietly, connect

__all__ = ["JetStreamConsumer"]

logger = logging.getLogger("fabula.inbox")


class _NoStreamError(Exception):
    """The stream is not there (yet): its producer creates it when it first publishes."""


class JetStreamConsumer:
    """Feeds an `Inbox` from a JetStream stream, through a durable pull consumer.

    Messages are fetched in batches, appended to the inbox's store in one
    transaction, and only then acknowledged; a message not acknowledged
    (the process died, the store was down) is delivered again after
    `ack_wait`, and appending it again is a no-op. The durable consumer
    remembers what was acknowledged across restarts of either side.

    Args:
        url: The server, such as `nats://127.0.0.1:4222`.
        stream: The stream to read, such as `ORDERS`.
        durable: The durable consumer's name (one per consuming service).
        subject: The subjects to take (a filter, wildcards allowed); the
            inbox drops, acknowledged, the types it does not handle.
        batch: Messages fetched at once.
        ack_wait: Seconds before an unacknowledged message is delivered again.
        idle_wait: Seconds one fetch waits for messages.
        connect_timeout: How long one connection attempt may take.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        durable: str,
        subject: str = ">",
        batch: int = 100,
        ack_wait: float = 30.0,
        idle_wait: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        check_positive(
            batch=batch, ack_wait=ack_wait, idle_wait=idle_wait, connect_timeout=connect_timeout
        )
        self.url = url
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self.batch = int(batch)
        self.ack_wait = ack_wait
        self.idle_wait = idle_wait
        self.connect_timeout = connect_timeout
        self.received = 0
        """Messages appended to the inbox's store by this consumer (copies excluded)."""

    def __repr__(self) -> str:
        return f"<JetStreamConsumer {shown_url(self.url)} {self.stream}/{self.durable}>"

    async def run(self, inbox: Inbox, store: EventStore) -> None:
        """Receive into `inbox` until cancelled, reconnecting whenever the server goes away."""
        backoff = Backoff(most=5.0)
        warned = False
        while True:
            client: Client | None = None
            try:
                client = await connect(self.url, f"fabula-inbox-{inbox.name}", self.connect_timeout)
                subscription = await self._subscribe(client.jetstream())
                if warned:
                    logger.warning("inbox %s: JetStream is back", inbox.name)
                backoff.reset()
                warned = False
                while True:
                    await self._step(subscription, inbox, store)
            except _NoStreamError as exc:
                if backoff.failures == 0:
                    logger.info("inbox %s: %s; waiting for it", inbox.name, exc)
            except (BrokerUnavailableError, *UNAVAILABLE) as exc:
                if not warned:
                    logger.warning("inbox %s: JetStream failed (%r); reconnecting", inbox.name, exc)
                    warned = True
            finally:
                if client is not None:
                    await close_quietly(client, self.connect_timeout)
            await backoff.pause()

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            filter_subject=self.subject,
            max_ack_pending=max(1000, self.batch * 4),
        )
        try:
            return await js.pull_subscribe(
                self.subject, durable=self.durable, stream=self.stream, config=config
            )
        except nats.js.errors.NotFoundError as exc:
            msg = f"JetStream has no stream {self.stream} yet"
            raise _NoStreamError(msg) from exc

    async def _step(
        self, subscription: JetStreamContext.PullSubscription, inbox: Inbox, store: EventStore
    ) -> None:
        try:
            messages = await cancellable(subscription.fetch(self.batch, timeout=self.idle_wait))
        except nats.errors.TimeoutError:
            return  # nothing new
        self.received += await receive_until_kept(inbox, store, [m.data for m in messages])
        for message in messages:
            await message.ack()
