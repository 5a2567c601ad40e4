"""Relay throughput beside raw broker clients publishing the same messages, in one run.

    nox -s bench            # or: python benchmarks/bench_relay.py [--quick]

N events (one `Ordered` each, spread over many streams as orders are) are
logged in a SQLite store. Each workload publishes the same N CloudEvents
JSON messages, with the event id as the broker's deduplication id, and
waits for every broker acknowledgement:

- raw, one at a time: each publish awaits its ack before the next;
- raw, pipelined: every publish is sent, then all acks awaited
  (nats-py `publish_async`; aio-pika publishes gathered on one channel);
- relay: a `fabula.Relay` in a `Reactor`, from the checkpoint to the
  head: reading and decoding the log, building each envelope, one
  message in flight per stream, `concurrency` streams at once, and the
  checkpoint moved as acks arrive.

The ratio reported is relay / raw pipelined. Needs NATS JetStream at
FABULA_NATS_URL and RabbitMQ at FABULA_AMQP_URL (the local ones by
default); a broker that is not there is reported and passed over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import attrs
import nats

import fabula
from fabula.nats import JetStreamPublisher
from fabula.rabbitmq import RabbitPublisher
from fabula.sqlite import SQLiteEventStore

NATS_URL = os.environ.get("FABULA_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("FABULA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
STREAMS = 500
CONCURRENCY = 64


@fabula.event("bench.Ordered")
@attrs.frozen
class Ordered(fabula.DomainEvent[str]):
    """What is published."""

    units: int
    note: str


def contract(prefix: str) -> fabula.IntegrationContract:
    """`Ordered`, published as `<prefix>.v1.Ordered`."""
    made = fabula.IntegrationContract(source="urn:bench:orders")
    made.add(Ordered, f"{prefix}.v1.Ordered", lambda e: {"units": e.units, "note": e.note})
    return made


async def log(store: SQLiteEventStore, count: int) -> list[fabula.RecordedEvent]:
    """Append `count` events round-robin over the streams; return them as logged."""
    for n in range(0, count, STREAMS):
        for s in range(min(STREAMS, count - n)):
            event = Ordered(units=n + s, note="a small order note")
            await store.append(f"order-{s}", [event], expected_version=n // STREAMS)
    return await store.read_all(limit=count)


def messages(prefix: str, recorded: list[fabula.RecordedEvent]) -> list[tuple[str, bytes, str]]:
    """(subject, body, dedup id) per event, fresh ids so a broker dedups nothing across rounds."""
    made = contract(prefix)
    out = []
    for each in recorded:
        envelope = made.envelope(each)
        if envelope is None:
            raise TypeError(each)
        envelope = attrs.evolve(envelope, id=str(uuid.uuid4()))
        out.append((envelope.type, envelope.to_json(), envelope.id))
    return out


async def nats_rounds(
    recorded: list[fabula.RecordedEvent], store: SQLiteEventStore
) -> dict[str, float]:
    """The three workloads on JetStream (a stream of the run's own, deleted after)."""
    prefix, stream = f"b{uuid.uuid4().hex[:8]}", f"BENCH{uuid.uuid4().hex[:8]}"
    client = await nats.connect(NATS_URL)
    js = client.jetstream()
    publisher = JetStreamPublisher(NATS_URL, stream=stream, subjects=[f"{prefix}.v1.>"])
    await publisher.ensure_stream()
    count = len(recorded)

    async def one() -> None:
        for subject, body, key in messages(prefix, recorded):
            await js.publish(subject, body, headers={"Nats-Msg-Id": key})

    async def pipelined() -> None:
        for subject, body, key in messages(prefix, recorded):
            await js.publish_async(subject, body, headers={"Nats-Msg-Id": key})
        await js.publish_async_completed()

    try:
        return await rounds(count, store, prefix, publisher, one, pipelined)
    finally:
        await publisher.close()
        await js.delete_stream(stream)
        await client.close()


async def amqp_rounds(
    recorded: list[fabula.RecordedEvent], store: SQLiteEventStore
) -> dict[str, float]:
    """The three workloads on RabbitMQ (an exchange and a queue of the run's own, deleted after)."""
    prefix, exchange = f"b{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel(publisher_confirms=True)
    target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{exchange}-q", durable=True)
    await queue.bind(target, f"{prefix}.v1.#")
    publisher = RabbitPublisher(AMQP_URL, exchange=exchange)
    count = len(recorded)

    def message(body: bytes, key: str) -> aio_pika.Message:
        return aio_pika.Message(
            body, message_id=key, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )

    async def one() -> None:
        for subject, body, key in messages(prefix, recorded):
            await target.publish(message(body, key), routing_key=subject)

    async def pipelined() -> None:
        await asyncio.gather(
            *(
                target.publish(message(body, key), routing_key=subject)
                for subject, body, key in messages(prefix, recorded)
            )
        )

    try:
        return await rounds(count, store, prefix, publisher, one, pipelined)
    finally:
        await publisher.close()
        await queue.delete(if_unused=False, if_empty=False)
        await target.delete()
        await connection.close()


async def rounds(  # noqa: PLR0917 - one call site, in this file
    count: int,
    store: SQLiteEventStore,
    prefix: str,
    publisher: fabula.Publisher,
    one: Callable[[], Awaitable[None]],
    pipelined: Callable[[], Awaitable[None]],
    repeats: int = 3,
) -> dict[str, float]:
    """Median rates of each workload over `repeats` alternating rounds."""
    bus = fabula.CommandBus()
    bus.use(fabula.Idempotency(store))
    rates: dict[str, list[float]] = {"one": [], "pipelined": [], "relay": []}
    for round_ in range(repeats):
        for name, work in (("one", one), ("pipelined", pipelined)):
            started = time.perf_counter()
            await work()
            rates[name].append(count / (time.perf_counter() - started))
        relay = fabula.Relay(f"bench-{round_}-{prefix}", contract(prefix), publisher)
        reactor = fabula.Reactor(store, bus, [relay], concurrency=CONCURRENCY, window=4000)
        started = time.perf_counter()
        await reactor.catch_up()
        rates["relay"].append(count / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def report(broker: str, rates: dict[str, float]) -> None:
    """Print one broker's rates and ratios."""
    print(
        f"{broker:<10} raw one-at-a-time {rates['one']:>8,.0f} msg/s   "
        f"raw pipelined {rates['pipelined']:>8,.0f} msg/s   relay {rates['relay']:>8,.0f} msg/s   "
        f"relay/pipelined {rates['relay'] / rates['pipelined']:.2f}   "
        f"relay/one {rates['relay'] / rates['one']:.2f}"
    )


async def main(*, quick: bool) -> None:
    """Log the events once, then measure each broker."""
    count = 1000 if quick else 5000
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteEventStore(Path(folder) / "relay.db", synchronous="NORMAL")
        try:
            recorded = await log(store, count)
            print(f"relay benchmark: {count} events over {STREAMS} streams, {CONCURRENCY} lanes")
            for broker, run in (("JetStream", nats_rounds), ("RabbitMQ", amqp_rounds)):
                try:
                    rates = await run(recorded, store)
                except (OSError, nats.errors.Error, fabula.BrokerUnavailableError) as exc:
                    print(f"{broker:<10} not measured: {exc!r}")
                    continue
                report(broker, rates)
        finally:
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 events instead of 5,000")
    asyncio.run(main(quick=parser.parse_args().quick))
    sys.exit(0)
