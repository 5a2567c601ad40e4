"""Integration events on real brokers: NATS JetStream and RabbitMQ, with servers and relays killed.

Producer and consumer each have their own SQLite store. The producer
appends deposits whose note is a unique number `n`; the relay publishes
them; the consumer's inbox turns each into a `Note` of `n` in the tally
of its subject. Afterwards every `n` must have been published (to
JetStream: once, in stream order per subject) and noted exactly once.
"""

import asyncio
import contextlib
import io
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

import fabula
from fabula import IntegrationEvent
from fabula.exceptions import BrokerUnavailableError
from fabula.nats import JetStreamConsumer, JetStreamPublisher
from fabula.rabbitmq import RabbitConsumer, RabbitPublisher
from fabula.sqlite import SQLiteEventStore
from fabula.storage import checkpoint_name
from fabula.testing import deposit

from .support.brokers import AMQP_URL, NATS_URL, free_port, private_nats, require, tag
from .support.inbox_child import inbox
from .support.reactions import make_bus, noted
from .support.relay_child import contract

CHILD = Path(__file__).parent / "support" / "relay_child.py"
CONSUMER = Path(__file__).parent / "support" / "inbox_child.py"


async def write(store: fabula.Store, numbers: range, streams: int, pause: float = 0.0) -> None:
    """Append a deposit noted `n` for each n, to stream acc-(n % streams), in order."""
    for n in numbers:
        stream = f"acc-{n % streams}"
        await store.append(
            stream, [deposit(1, note=str(n))], expected_version=fabula.ExpectedVersion.ANY
        )
        if pause:
            await asyncio.sleep(pause)


def reactor(store: fabula.Store, reaction: fabula.Reaction) -> fabula.Reactor:
    return fabula.Reactor(
        store,
        make_bus(store),
        [reaction],
        retry_delay=0.01,
        max_retry_delay=0.2,
        idle_wait=0.05,
    )


@contextlib.asynccontextmanager
async def running(*work: Any) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(each) for each in work]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=30)
        if pending:  # a task that ignores its cancellation: say where it is stuck
            stacks = io.StringIO()
            for task in pending:
                task.print_stack(file=stacks)
            pytest.fail(f"tasks did not stop when cancelled:\n{stacks.getvalue()}")
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc] # checked just above


async def until(
    check: Callable[[], Any],
    timeout: float = 60,  # noqa: ASYNC109
    explain: Callable[[], Any] | None = None,
) -> None:
    """Poll `check` until it is true; past `timeout`, fail with what `explain` says."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - polling stores and brokers: no event
                await asyncio.sleep(0.05)
    except TimeoutError:
        said = await explain() if explain is not None else ""
        pytest.fail(f"not done within {timeout} s: {said}")


async def stream_messages(url: str, stream: str) -> list[IntegrationEvent]:
    """Every message JetStream's `stream` holds, in stream order."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        return [
            IntegrationEvent.from_json((await js.get_msg(stream, seq)).data or b"")
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await client.close()


async def drop_stream(url: str, stream: str) -> None:
    client = await nats.connect(url)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def check_published_once_in_order(messages: list[IntegrationEvent], count: int) -> None:
    """Each n once; each subject's messages in the order they were written."""
    numbers = [m.data["n"] for m in messages]
    assert sorted(numbers) == list(range(count)), "published not exactly once"
    by_subject: dict[str | None, list[int]] = defaultdict(list)
    for message in messages:
        by_subject[message.subject].append(message.data["n"])
    for subject, seen in by_subject.items():
        assert seen == sorted(seen), f"{subject} out of order"


async def noted_once(store: fabula.Store, count: int) -> bool:
    counts = await noted(store)
    assert all(times == 1 for times in counts.values()), "an effect happened twice"
    return len(counts) == count


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SQLiteEventStore, SQLiteEventStore]]:
    producer = SQLiteEventStore(tmp_path / "producer.db")
    consumer = SQLiteEventStore(tmp_path / "consumer.db")
    yield producer, consumer
    await producer.close()
    await consumer.close()


class TestJetStream:
    async def test_events_reach_the_consumer_once(
        self, stores: tuple[SQLiteEventStore, SQLiteEventStore]
    ) -> None:
        """Relay to the shared server, consume into an inbox: all of them, once, in order."""
        url = require(NATS_URL)
        producer, consumer = stores
        prefix, stream = f"t{tag()}", f"T{tag()}"
        publisher = JetStreamPublisher(url, stream=stream, subjects=[f"{prefix}.v1.>"])
        relay = fabula.Relay("bank", contract(prefix), publisher)
        receiving = JetStreamConsumer(url, stream=stream, durable="bank", idle_wait=0.1)
        taker = inbox(prefix)
        try:
            await write(producer, range(60), streams=7)
            async with running(
                reactor(producer, relay).run(),
                receiving.run(taker, consumer),
                reactor(consumer, taker).run(),
            ):
                await until(lambda: noted_once(consumer, 60))
            check_published_once_in_order(await stream_messages(url, stream), 60)
            assert receiving.received == 60
        finally:
            await publisher.close()
            await drop_stream(url, stream)

    async def test_a_message_published_twice_is_stored_once(self) -> None:
        """The event id is the Nats-Msg-Id: JetStream drops the copy."""
        url = require(NATS_URL)
        prefix, stream = f"t{tag()}", f"T{tag()}"
        publisher = JetStreamPublisher(url, stream=stream, subjects=[f"{prefix}.v1.>"])
        message = IntegrationEvent(id="same", source="s", type=f"{prefix}.v1.X", data={"n": 0})
        try:
            await publisher.publish(message)
            await publisher.publish(message)
            assert len(await stream_messages(url, stream)) == 1
        finally:
            await publisher.close()
            await drop_stream(url, stream)

    async def test_a_stream_without_the_subjects_is_refused(self) -> None:
        """A stream of that name holding other subjects is named in the error."""
        url = require(NATS_URL)
        stream = f"T{tag()}"
        client = await nats.connect(url)
        try:
            await client.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"o{tag()}"]))
            publisher = JetStreamPublisher(url, stream=stream, subjects=["x.v1.>"])
            with pytest.raises(BrokerUnavailableError, match=rf"{stream} holds"):
                await publisher.ensure_stream()
            await publisher.close()
        finally:
            await client.close()
            await drop_stream(url, stream)

    async def test_an_unreachable_server_is_unavailable(self) -> None:
        """No server: BrokerUnavailableError (retried by the relay, never parked)."""
        publisher = JetStreamPublisher(
            f"nats://127.0.0.1:{free_port()}", stream="X", subjects=["x.v1.>"], connect_timeout=0.5
        )
        message = IntegrationEvent(id="1", source="s", type="x.v1.X")
        with pytest.raises(BrokerUnavailableError, match="cannot be reached"):
            await publisher.publish(message)

    async def test_the_server_killed_mid_run(
        self, stores: tuple[SQLiteEventStore, SQLiteEventStore], tmp_path: Path
    ) -> None:
        """SIGKILL the server twice while events are written and relayed: none lost, none twice.

        While it is down the writer goes on committing; the relay and the
        consumer wait, then catch up once it is back.
        """
        producer, consumer = stores
        prefix, stream, count = f"t{tag()}", "BANK", 300
        folder = tmp_path / "nats"
        folder.mkdir()
        with private_nats(folder) as server:
            publisher = JetStreamPublisher(
                server.url, stream=stream, subjects=[f"{prefix}.v1.>"], timeout=1.0
            )
            receiving = JetStreamConsumer(server.url, stream=stream, durable="bank", idle_wait=0.1)
            taker = inbox(prefix)
            try:
                async with running(
                    reactor(producer, fabula.Relay("bank", contract(prefix), publisher)).run(),
                    receiving.run(taker, consumer),
                    reactor(consumer, taker).run(),
                ):
                    writing = asyncio.create_task(write(producer, range(count), 9, pause=0.005))
                    for _ in range(2):
                        await asyncio.sleep(random.uniform(0.2, 0.6))
                        server.kill()
                        written = await producer.head_position()
                        await asyncio.sleep(0.5)  # the writer commits with the broker down
                        assert await producer.head_position() > written
                        server.start()
                    await writing

                    async def explain() -> str:
                        counts = await noted(consumer)
                        missing = sorted(set(range(count)) - set(counts))
                        point = await producer.load_checkpoint(checkpoint_name("bank"))
                        head = await producer.head_position()
                        held = len(await stream_messages(server.url, stream))
                        return (
                            f"noted {len(counts)} of {count} (missing {missing[:20]}); relay at "
                            f"{point} of {head}; the stream holds {held}; kept by the inbox "
                            f"{receiving.received}"
                        )

                    await until(lambda: noted_once(consumer, count), 120, explain)
                check_published_once_in_order(await stream_messages(server.url, stream), count)
            finally:
                await publisher.close()

    async def test_the_relay_killed_mid_run(self, tmp_path: Path) -> None:
        """SIGKILL the relay's process five times while it publishes: every event once, in order."""
        url = require(NATS_URL)
        prefix, stream, count = f"t{tag()}", f"T{tag()}", 400
        database = tmp_path / "producer.db"
        producer = SQLiteEventStore(database)
        try:
            await write(producer, range(count), streams=11)
            for _ in range(5):
                child = start_relay(database, url, stream, prefix)
                await asyncio.sleep(random.uniform(0.3, 0.8))
                stop(child)
            child = start_relay(database, url, stream, prefix)
            try:
                head = await producer.head_position()

                async def relayed() -> bool:
                    return await producer.load_checkpoint(checkpoint_name("bank")) >= head

                await until(relayed, timeout=120)
            finally:
                stop(child)
            check_published_once_in_order(await stream_messages(url, stream), count)
        finally:
            await producer.close()
            await drop_stream(url, stream)


def start_relay(
    database: Path, url: str, stream: str, prefix: str, script: Path = CHILD
) -> subprocess.Popen[str]:
    child = subprocess.Popen(  # noqa: S603 - our own test script
        [sys.executable, str(script), str(database), url, stream, prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


class TestJetStreamConsumerKilled:
    async def test_the_consumer_killed_mid_run(self, tmp_path: Path) -> None:
        """SIGKILL the consuming process five times mid-stream: every message's effect once.

        Its store keeps a message before the broker is acknowledged, and
        its commands are keyed to the message: a message redelivered after
        a kill, or handled again, adds nothing.
        """
        url = require(NATS_URL)
        prefix, stream, count = f"t{tag()}", f"T{tag()}", 300
        publisher = JetStreamPublisher(url, stream=stream, subjects=[f"{prefix}.v1.>"])
        database = tmp_path / "consumer.db"
        try:
            for n in range(count):
                body = {"n": n}
                await publisher.publish(
                    IntegrationEvent(
                        id=f"m-{n}", source="urn:test", type=f"{prefix}.v1.Deposited",
                        subject=f"acc-{n % 13}", data=body,
                    )
                )  # fmt: skip
            for _ in range(5):
                child = start_relay(database, url, stream, prefix, script=CONSUMER)
                await asyncio.sleep(random.uniform(0.2, 0.7))
                stop(child)
            child = start_relay(database, url, stream, prefix, script=CONSUMER)
            consumer = SQLiteEventStore(database)
            try:
                await until(lambda: noted_once(consumer, count), timeout=120)
            finally:
                stop(child)
                await consumer.close()
        finally:
            await publisher.close()
            await drop_stream(url, stream)


def stop(child: subprocess.Popen[str]) -> None:
    """SIGKILL a child and close its pipe."""
    child.kill()
    child.wait(timeout=20)
    if child.stdout is not None:
        child.stdout.close()


def close_connections(name: str) -> int:
    """Close, from the broker's side, the RabbitMQ connections named `name`; return how many."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    closed = 0
    for line in listed.stdout.splitlines():
        if f'"{name}"' in line or f'<<"{name}">>' in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(  # noqa: S603 - the pid is the broker's own listing
                ["rabbitmqctl", "-q", "close_connection", pid, "closed by a test"],  # noqa: S607
                capture_output=True,
                check=False,
                timeout=60,
            )
            closed += 1
    return closed


class TestRabbitMQ:
    async def test_events_reach_the_consumer_once_across_closed_connections(
        self, stores: tuple[SQLiteEventStore, SQLiteEventStore]
    ) -> None:
        """The relay's connection closed by the broker twice mid-run: every event noted once."""
        url = require(AMQP_URL)
        producer, consumer = stores
        prefix, name, count = f"t{tag()}", f"relay-{tag()}", 200
        exchange, queue = f"x-{tag()}", f"q-{tag()}"
        receiving = RabbitConsumer(
            url, exchange=exchange, queue=queue, routing_keys=[f"{prefix}.v1.#"]
        )
        await receiving.declare()
        publisher = RabbitPublisher(url, exchange=exchange, name=name, timeout=2.0)
        taker = inbox(prefix)
        try:
            async with running(
                reactor(producer, fabula.Relay("bank", contract(prefix), publisher)).run(),
                receiving.run(taker, consumer),
                reactor(consumer, taker).run(),
            ):
                writing = asyncio.create_task(write(producer, range(count), 7, pause=0.01))
                closed = 0
                for _ in range(2):
                    await asyncio.sleep(random.uniform(0.3, 0.6))
                    closed += await asyncio.to_thread(close_connections, name)
                await writing
                await until(lambda: noted_once(consumer, count), timeout=120)
            assert closed >= 1
        finally:
            await publisher.close()
            await delete_rabbit(url, exchange, queue)


async def delete_rabbit(url: str, exchange: str, queue: str) -> None:
    import aio_pika  # noqa: PLC0415

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()
