"""Integration events without a broker: the envelope, the contract, the relay's rules, the inbox.

The relay publishes to `Outbox`, a publisher kept in this process (the
broker is the thing replaced, not our storage: every store is real). The
brokers themselves are in `test_brokers.py`.
"""

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula import IntegrationContract, IntegrationEvent, Relay
from fabula._broker import cancellable
from fabula.cli import main
from fabula.exceptions import BrokerUnavailableError, EventTypeError, IntegrationEventError
from fabula.nats import JetStreamConsumer, JetStreamPublisher
from fabula.postgres import PostgresEventStore
from fabula.rabbitmq import RabbitConsumer, RabbitPublisher
from fabula.sqlite import SQLiteEventStore
from fabula.storage import checkpoint_name
from fabula.testing import Deposited, deposit

from .support.postgres import new_schema, require_postgres
from .support.reactions import Note, make_bus, noted

SOURCE = "urn:test:bank"


def contract() -> IntegrationContract:
    made = IntegrationContract(source=SOURCE)
    made.add(Deposited, "bank.v1.Deposited", lambda e: {"amount": e.amount, "note": e.note})
    return made


@attrs.define
class Outbox:
    """A publisher that keeps what it was sent; it can be down, or refuse some messages."""

    sent: list[IntegrationEvent] = attrs.Factory(list)
    down: bool = False
    refuse: set[str] = attrs.Factory(set)
    attempts: int = 0
    in_flight: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    overlapped: bool = False
    pause: float = 0.0
    tried: asyncio.Event = attrs.Factory(asyncio.Event)

    async def wait_for_sent(self, n: int) -> None:
        async with asyncio.timeout(60):
            while len(self.sent) < n:
                self.tried.clear()
                await self.tried.wait()

    async def wait_for_attempts(self, n: int) -> None:
        async with asyncio.timeout(30):
            while self.attempts < n:
                self.tried.clear()
                await self.tried.wait()

    @property
    def target(self) -> str:
        return "the test's outbox"

    async def publish(self, message: IntegrationEvent) -> None:
        self.attempts += 1
        self.tried.set()
        if self.down:
            msg = "the outbox is down"
            raise BrokerUnavailableError(msg)
        if message.data["note"] in self.refuse:
            msg = f"refused {message.data['note']}"
            raise ValueError(msg)
        subject = message.subject or ""
        self.in_flight[subject] += 1
        self.overlapped |= self.in_flight[subject] > 1
        try:
            await asyncio.sleep(self.pause)
        finally:
            self.in_flight[subject] -= 1
        self.sent.append(message)
        self.tried.set()

    async def close(self) -> None:
        pass


def reactor(store: fabula.Store, *reactions: fabula.Reaction, **options: Any) -> fabula.Reactor:
    options.setdefault("retry_delay", 0.001)
    options.setdefault("idle_wait", 0.05)
    return fabula.Reactor(store, make_bus(store), reactions, **options)


async def fill(store: fabula.Store, streams: int, each: int) -> None:
    for n in range(each):
        for s in range(streams):
            await store.append(f"acc-{s}", [deposit(n + 1, note=f"{s}:{n}")], expected_version=n)


class TestEnvelope:
    def test_round_trip(self) -> None:
        """Every attribute survives to_json and from_json."""
        sent = IntegrationEvent(
            id="e-1",
            source=SOURCE,
            type="bank.v1.Deposited",
            subject="acc-1",
            time=datetime(2026, 12, 7, 4, 30, tzinfo=UTC),
            data={"amount": "5.00", "nested": [1, None]},
            correlationid="c-1",
            causationid="m-1",
            extensions={"traceparent": "00-abc"},
        )
        body = json.loads(sent.to_json())
        assert body["specversion"] == "1.0"
        assert body["time"] == "2026-12-07T04:30:00Z"
        assert body["traceparent"] == "00-abc"
        assert IntegrationEvent.from_json(sent.to_json()) == sent

    def test_decimals_uuids_and_times_are_strings(self) -> None:
        """Data may hold Decimal, UUID and datetime: JSON gets their text."""
        uid = uuid4()
        sent = IntegrationEvent(
            id="1", source="s", type="a.v1.B", data={"d": Decimal("1.50"), "u": uid}
        )
        assert json.loads(sent.to_json())["data"] == {"d": "1.50", "u": str(uid)}

    def test_data_that_is_not_json_is_refused(self) -> None:
        """An object JSON cannot carry fails with the type named."""
        sent = IntegrationEvent(id="1", source="s", type="a.v1.B", data={"x": object()})
        with pytest.raises(IntegrationEventError, match=r"a\.v1\.B"):
            sent.to_json()

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b"not json", "must be JSON"),
            (b"[1]", "JSON object"),
            (b'{"id": "1", "source": "s", "type": "t"}', "specversion"),
            (b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}', "specversion"),
            (b'{"specversion": "1.0", "source": "s", "type": "t"}', "'id'"),
            (b'{"specversion": "1.0", "id": "", "source": "s", "type": "t"}', "'id'"),
            (b'{"specversion": "1.0", "id": "1", "source": "s", "type": 5}', "'type'"),
            (b'{"specversion":"1.0","id":"1","source":"s","type":"t","subject":1}', "subject"),
            (b'{"specversion":"1.0","id":"1","source":"s","type":"t","time":"x"}', "RFC 3339"),
            (
                b'{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2026-01-01T00:00"}',
                "offset",
            ),
        ],
    )
    def test_malformed_messages_are_refused(self, body: bytes, problem: str) -> None:
        """Each way a message is not a CloudEvent fails with a message naming it."""
        with pytest.raises(IntegrationEventError, match=problem):
            IntegrationEvent.from_json(body)


class TestContract:
    def test_the_envelope_of_a_published_event(self) -> None:
        """id is the event id, subject its stream, time its timestamp, ids its metadata."""
        correlation, causation = uuid4(), uuid4()
        event = attrs.evolve(
            deposit(5, note="n"),
            aggregate_id="acc-1",
            version=1,
            metadata=fabula.EventMetadata(correlation_id=correlation, causation_id=causation),
        )
        recorded = fabula.RecordedEvent(event=event, position=7, stream_id="acc-1")
        message = contract().envelope(recorded)
        assert message is not None
        assert message.id == str(event.event_id)
        assert (message.source, message.type, message.subject) == (
            SOURCE,
            "bank.v1.Deposited",
            "acc-1",
        )
        assert message.time == event.timestamp
        assert message.data == {"amount": Decimal(5), "note": "n"}
        assert (message.correlationid, message.causationid) == (str(correlation), str(causation))

    def test_events_not_in_the_contract_are_not_published(self) -> None:
        """Only mapped classes have an envelope: nothing is published by accident."""
        recorded = fabula.RecordedEvent(
            event=_Other(aggregate_id="x", version=1),
            position=1,
            stream_id="x",
        )
        assert contract().envelope(recorded) is None

    @pytest.mark.parametrize(
        "type_",
        ["Deposited", "bank.Deposited", "bank.v1.", "bank.1.Deposited", "bank.v1.De posited", ""],
    )
    def test_types_must_be_dotted_and_versioned(self, type_: str) -> None:
        """A type without a version segment (or with characters a subject forbids) is refused."""
        with pytest.raises(EventTypeError, match="version"):
            IntegrationContract(source=SOURCE).add(Deposited, type_, lambda _: {})

    def test_a_class_or_a_type_is_mapped_once(self) -> None:
        """Mapping a class twice, or two classes to one type, is refused."""
        made = contract()
        with pytest.raises(EventTypeError, match="published already"):
            made.add(Deposited, "bank.v2.Deposited", lambda _: {})
        with pytest.raises(EventTypeError, match="taken"):
            made.add(_Other, "bank.v1.Deposited", lambda _: {})
        with pytest.raises(EventTypeError, match="DomainEvent"):
            made.add(int, "bank.v1.Int", lambda _: {})  # type: ignore[type-var]
        assert made.types == ("bank.v1.Deposited",)

    def test_a_source_is_required(self) -> None:
        """An empty source is refused."""
        with pytest.raises(ValueError, match="source"):
            IntegrationContract(source="")

    def test_a_relay_needs_a_name_and_something_to_publish(self) -> None:
        """A bad name, or a contract that publishes nothing, is refused."""
        with pytest.raises(EventTypeError, match="name"):
            Relay("no spaces", contract(), Outbox())
        with pytest.raises(EventTypeError, match="publishes no event"):
            Relay("empty", IntegrationContract(source=SOURCE), Outbox())


@fabula.event("tests.Other")
@attrs.frozen(kw_only=True)
class _Other(fabula.DomainEvent[str]):
    pass


class TestRelay:
    async def test_every_event_is_published_in_stream_order(self, each_store: fabula.Store) -> None:
        """All events go out; within a stream one at a time, in version order."""
        await fill(each_store, streams=6, each=5)
        outbox = Outbox(pause=0.001)
        relay = Relay("bank", contract(), outbox)
        await reactor(each_store, relay, concurrency=4).catch_up()
        assert len(outbox.sent) == 30
        assert not outbox.overlapped
        by_stream: dict[str, list[str]] = defaultdict(list)
        for message in outbox.sent:
            by_stream[message.subject or ""].append(message.data["note"])
        for s in range(6):
            assert by_stream[f"acc-{s}"] == [f"{s}:{n}" for n in range(5)]

    async def test_a_broker_outage_parks_nothing(self, each_store: fabula.Store) -> None:
        """While the broker is down the checkpoint waits; once back, everything is published."""
        await fill(each_store, streams=3, each=2)
        outbox = Outbox(down=True)
        reacting = reactor(each_store, Relay("bank", contract(), outbox), attempts=2)
        running = asyncio.create_task(reacting.run())
        try:
            await outbox.wait_for_attempts(20)
            (status,) = await reacting.status()
            assert status.checkpoint < (await each_store.read_all())[0].position
            assert status.lag == 6
            assert status.parked_events == 0
            outbox.down = False
            await reacting.wait_for(await each_store.head_position(), timeout=10)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert len(outbox.sent) == 6
        assert await reacting.parked() == []

    async def test_a_refused_message_parks_its_stream(self, each_store: fabula.Store) -> None:
        """A message the broker keeps refusing parks its stream; the others are published."""
        await fill(each_store, streams=3, each=3)
        outbox = Outbox(refuse={"1:1"})
        reacting = reactor(each_store, Relay("bank", contract(), outbox), attempts=2)
        await reacting.catch_up()
        assert sorted(m.data["note"] for m in outbox.sent) == sorted(
            ["0:0", "0:1", "0:2", "1:0", "2:0", "2:1", "2:2"]
        )
        parked = await reacting.parked("bank")
        assert [(p.stream_id, p.version) for p in parked] == [("acc-1", 2), ("acc-1", 3)]
        assert "refused 1:1" in (parked[0].error or "")
        outbox.refuse.clear()
        await reacting.retry("bank", "acc-1")
        await reacting.catch_up()
        assert [m.data["note"] for m in outbox.sent if m.subject == "acc-1"] == [
            "1:0",
            "1:1",
            "1:2",
        ]

    async def test_the_checkpoint_passes_only_what_was_acknowledged(
        self, each_store: fabula.Store
    ) -> None:
        """A relay stopped while its broker is down resumes from the first unacknowledged event."""
        await fill(each_store, streams=1, each=4)
        outbox = Outbox()
        await reactor(each_store, Relay("bank", contract(), outbox)).catch_up()
        await fill_more(each_store)
        outbox.down = True
        reacting = reactor(each_store, Relay("bank", contract(), outbox))
        running = asyncio.create_task(reacting.run())
        await outbox.wait_for_attempts(8)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        (status,) = await reacting.status()
        *published, unpublished = await each_store.read_all()
        assert published[-1].position <= status.checkpoint < unpublished.position
        assert status.lag == 1
        outbox.down = False
        await reactor(each_store, Relay("bank", contract(), outbox)).catch_up()
        assert [m.data["note"] for m in outbox.sent] == ["0:0", "0:1", "0:2", "0:3", "more"]


async def fill_more(store: fabula.Store) -> None:
    await store.append("acc-0", [deposit(9, note="more")], expected_version=4)


def message(n: int, subject: str = "acc-1", type_: str = "bank.v1.Deposited") -> bytes:
    return IntegrationEvent(
        id=f"m-{n}",
        source="urn:test:other",
        type=type_,
        subject=subject,
        data={"n": n},
        correlationid=str(UUID(int=n + 1)),
    ).to_json()


@attrs.define
class Tallies:
    """An inbox handler: notes each message's `n` in the tally of its subject."""

    seen: list[tuple[str | None, int]] = attrs.Factory(list)
    fail: set[int] = attrs.Factory(set)

    async def __call__(self, received: IntegrationEvent, ctx: fabula.ReactionContext) -> None:
        n = received.data["n"]
        if n in self.fail:
            msg = f"cannot take {n}"
            raise RuntimeError(msg)
        self.seen.append((received.subject, n))
        await ctx.send(Note(tally=f"tally-{received.subject}", source=n))


class TestInbox:
    async def test_a_message_delivered_twice_has_one_effect(self, each_store: fabula.Store) -> None:
        """Received twice (even in one batch), kept once; handled twice, one effect."""
        tallies = Tallies()
        inbox = fabula.Inbox("orders", {"bank.v1.Deposited": tallies})
        assert await inbox.receive(each_store, [message(1), message(2), message(1)]) == 2
        await inbox.receive(each_store, [message(2), message(3)])
        await reactor(each_store, inbox).catch_up()
        # A second reactor from the start handles everything again: still one effect each.
        done = await each_store.load_checkpoint(checkpoint_name("orders"))
        await each_store.commit_reaction("orders", expected=done, position=0, parked=[])
        await reactor(each_store, inbox).catch_up()
        assert await noted(each_store) == {1: 1, 2: 1, 3: 1}
        assert len(tallies.seen) == 6

    async def test_messages_of_other_types_are_not_kept(self, each_store: fabula.Store) -> None:
        """A type the inbox does not take is dropped at receipt."""
        inbox = fabula.Inbox("orders", {"bank.v1.Deposited": Tallies()})
        assert await inbox.receive(each_store, [message(1, type_="bank.v1.Other")]) == 0
        assert await each_store.head_position() == 0

    async def test_a_subject_is_handled_in_order_and_parked_alone(
        self, each_store: fabula.Store
    ) -> None:
        """A failing message parks its subject's later messages; other subjects go on."""
        tallies = Tallies(fail={2})
        inbox = fabula.Inbox("orders", {"bank.v1.Deposited": tallies})
        bodies = [message(n, subject=f"acc-{n % 2}") for n in range(6)]
        await inbox.receive(each_store, bodies)
        reacting = reactor(each_store, inbox, attempts=2)
        await reacting.catch_up()
        assert sorted(tallies.seen) == [("acc-0", 0), ("acc-1", 1), ("acc-1", 3), ("acc-1", 5)]
        parked = await reacting.parked("orders")
        assert len(parked) == 2
        assert {p.stream_id for p in parked} == {"urn:test:other acc-0"}
        tallies.fail.clear()
        await reacting.retry("orders", "urn:test:other acc-0")
        await reacting.catch_up()
        assert [n for subject, n in tallies.seen if subject == "acc-0"] == [0, 2, 4]

    async def test_a_message_that_is_not_a_cloud_event_is_parked(
        self, each_store: fabula.Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A malformed body is kept once and parked at once, with the reason."""
        inbox = fabula.Inbox("orders", {"bank.v1.Deposited": Tallies()})
        with caplog.at_level(logging.WARNING, logger="fabula.inbox"):
            await inbox.receive(each_store, [b"{oops", b"{oops"])
        assert "not a CloudEvent" in caplog.text
        reacting = reactor(each_store, inbox)
        with caplog.at_level(logging.CRITICAL, logger="fabula.reactions"):
            await reacting.catch_up()
        (parked,) = await reacting.parked("orders")
        assert "must be JSON" in (parked.error or "")

    async def test_the_correlation_id_carries_over(self, each_store: fabula.Store) -> None:
        """The kept message carries the sender's correlation id (ctx.send passes it on)."""
        inbox = fabula.Inbox("orders", {"bank.v1.Deposited": Tallies()})
        await inbox.receive(each_store, [message(4)])
        (kept,) = await each_store.read_all()
        assert kept.event.metadata.correlation_id == UUID(int=5)

    async def test_two_inboxes_share_a_store(self, each_store: fabula.Store) -> None:
        """Each inbox keeps and handles its own messages only, the same message in both."""
        first, second = Tallies(), Tallies()
        one = fabula.Inbox("one", {"bank.v1.Deposited": first})
        two = fabula.Inbox("two", {"bank.v1.Deposited": second})
        await one.receive(each_store, [message(1), message(2)])
        await two.receive(each_store, [message(2)])
        await reactor(each_store, one, two).catch_up()
        assert sorted(first.seen) == [("acc-1", 1), ("acc-1", 2)]
        assert second.seen == [("acc-1", 2)]

    def test_an_inbox_needs_handlers(self) -> None:
        """No handler, or a handler that is not callable, is refused."""
        with pytest.raises(EventTypeError, match="handles no"):
            fabula.Inbox("orders", {})
        with pytest.raises(EventTypeError, match="map integration"):
            fabula.Inbox("orders", {"bank.v1.Deposited": "nope"})  # type: ignore[dict-item]


class TestRelayInOperation:
    async def test_one_relay_runs_on_postgres_and_a_standby_takes_over(
        self, schemas: list[str]
    ) -> None:
        """Two processes' relays on one schema: one publishes; stopped, the other goes on."""
        url = require_postgres()
        schemas.append(new_schema())
        stores = [PostgresEventStore(url, schema=schemas[-1], poll_interval=0.05) for _ in "ab"]
        for store in stores:
            await store.open()
        outbox = Outbox()
        try:
            await fill(stores[0], streams=4, each=3)
            first, second = (
                reactor(store, Relay("bank", contract(), outbox), idle_wait=0.05)
                for store in stores
            )
            running = [asyncio.create_task(r.run()) for r in (first, second)]
            await outbox.wait_for_sent(12)
            await asyncio.sleep(0.2)  # a second active relay would publish them again by now
            assert len(outbox.sent) == 12, "both relays published"
            states = {(await r.status())[0].state for r in (first, second)}
            assert states == {fabula.ReactionState.RUNNING, fabula.ReactionState.STANDBY}
            active = 0 if (await first.status())[0].state is fabula.ReactionState.RUNNING else 1
            running[active].cancel()
            await asyncio.gather(running[active], return_exceptions=True)
            await stores[0].append("acc-0", [deposit(1, note="after")], expected_version=3)
            async with asyncio.timeout(60):  # the standby takes the lease and goes on
                while "after" not in [m.data["note"] for m in outbox.sent]:
                    await outbox.wait_for_sent(len(outbox.sent) + 1)
            running[1 - active].cancel()
            await asyncio.gather(running[1 - active], return_exceptions=True)
        finally:
            for store in stores:
                await store.close()
        # At least once: what the stopped relay published after its last checkpoint may
        # be published again by the one that took over; nothing is missing.
        notes = [m.data["note"] for m in outbox.sent]
        assert set(notes) == {f"{s}:{n}" for s in range(4) for n in range(3)} | {"after"}

    async def test_the_fabula_command_shows_a_relays_lag(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`fabula reactions status` lists the relay under its name, with what follows it."""
        path = tmp_path / "e.db"
        store = SQLiteEventStore(path)
        try:
            await fill(store, streams=2, each=2)
            outbox = Outbox()
            await reactor(store, Relay("bank", contract(), outbox)).catch_up()
            outbox.down = True
            await store.append("acc-0", [deposit(1, note="0:2")], expected_version=2)
            await store.append("acc-1", [deposit(1, note="1:2")], expected_version=2)
            reacting = reactor(store, Relay("bank", contract(), outbox))
            running = asyncio.create_task(reacting.run())
            await outbox.wait_for_attempts(8)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        finally:
            await store.close()
        code = await asyncio.to_thread(
            main, ["--store", str(path), "reactions", "status", "--json"]
        )
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert (code, row["name"], row["events_after"], row["parked_events"]) == (0, "bank", 2, 0)


class TestBrokerClients:
    def test_targets_never_show_a_password(self) -> None:
        """What the relay shows and logs of a broker URL has its password masked."""
        nats_ = JetStreamPublisher("nats://relay:s3cret@h:4222", stream="S", subjects=["a.v1.>"])
        rabbit = RabbitPublisher("amqp://guest:s3cret@h:5672/", exchange="orders")
        assert nats_.target == "nats://relay:***@h:4222 stream S"
        assert rabbit.target == "amqp://guest:***@h:5672/ exchange orders"
        plain = JetStreamPublisher("nats://h:4222", stream="S", subjects=["a.v1.>"])
        assert plain.target == "nats://h:4222 stream S"

    @pytest.mark.parametrize(
        ("build", "problem"),
        [
            (
                lambda: JetStreamPublisher("nats://h", stream="S", subjects="a.>"),
                "list of subjects",
            ),
            (lambda: JetStreamPublisher("nats://h", stream="S", subjects=[]), "list of subjects"),
            (
                lambda: JetStreamPublisher("nats://h", stream="S", subjects=["a"], timeout=0),
                "timeout",
            ),
            (lambda: RabbitPublisher("amqp://h", exchange=""), "exchange"),
            (lambda: RabbitPublisher("amqp://h", exchange="x", timeout=-1), "timeout"),
            (lambda: JetStreamConsumer("nats://h", stream="S", durable="d", batch=0), "batch"),
            (
                lambda: RabbitConsumer("amqp://h", exchange="x", queue="q", routing_keys="a"),
                "routing keys",
            ),
        ],
    )
    def test_bad_settings_are_refused(self, build: Any, problem: str) -> None:
        """Each bad setting fails when the client is made, naming it."""
        with pytest.raises(ValueError, match=problem):
            build()


class TestCancellable:
    async def test_a_call_that_ignores_cancellation_does_not_hold_its_caller(self) -> None:
        """Cancelling the caller ends its wait at once; the stubborn call ends on its own."""
        release = asyncio.Event()
        finished = asyncio.Event()

        async def stubborn() -> int:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # loses the cancellation
                    await release.wait()
            finished.set()
            return 1

        caller = asyncio.create_task(cancellable(stubborn()))
        await asyncio.sleep(0.01)
        caller.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await caller
        assert not finished.is_set()
        release.set()
        async with asyncio.timeout(5):
            await finished.wait()

    async def test_results_and_errors_pass_through(self) -> None:
        """Uncancelled, it returns what the call returns and raises what it raises."""

        async def fails() -> None:
            msg = "refused"
            raise ValueError(msg)

        assert await cancellable(asyncio.sleep(0, result=7)) == 7
        with pytest.raises(ValueError, match="refused"):
            await cancellable(fails())
