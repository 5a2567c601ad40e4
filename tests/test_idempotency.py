"""Idempotent commands: at most once per key, recorded in one transaction with the events."""

import asyncio
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Generic, TypeVar
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula import (
    Command,
    CommandBus,
    Idempotency,
    IdempotencyConflictError,
    Repository,
    RetryOnConflict,
)
from fabula.exceptions import InvalidIdempotencyKeyError, SerializationError
from fabula.memory import InMemoryEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.storage import IdempotencyRecord

from .support.domain import ADDRESS, Order, OrderItemAdded

PRODUCT = uuid4()
T = TypeVar("T")
CHILD = Path(__file__).parent / "support" / "idempotency_child.py"


@attrs.frozen
class PlaceOrder(Command[UUID]):
    customer_id: UUID
    quantity: int = 1


@attrs.frozen
class Receipt:
    order_id: UUID
    lines: int


@attrs.frozen
class PlaceWithReceipt(Command[Receipt]):
    customer_id: UUID


@attrs.frozen
class PlaceQuietly(Command[None]):
    customer_id: UUID


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[InMemoryEventStore | SQLiteEventStore]:
    built = (
        InMemoryEventStore() if request.param == "memory" else SQLiteEventStore(tmp_path / "e.db")
    )
    yield built
    await built.close()


class Counter:
    """A PlaceOrder handler that counts how often it runs."""

    def __init__(self, repo: Repository, *, fail: bool = False) -> None:
        self.repo = repo
        self.runs = 0
        self.fail = fail

    async def handle(self, command: PlaceOrder) -> UUID:
        self.runs += 1
        order = Order.create(command.customer_id, ADDRESS)
        order.add_item(PRODUCT, command.quantity, Decimal(1))
        await self.repo.save(order)
        await asyncio.sleep(0)  # let concurrent duplicates interleave
        if self.fail:
            msg = "injected crash after the save, before the handler returns"
            raise RuntimeError(msg)
        return order.id


def bus_for(
    store: fabula.storage.IdempotencyStore, handler: Counter, **options: object
) -> CommandBus:
    bus = CommandBus()
    bus.use(Idempotency(store, **options))  # type: ignore[arg-type]
    bus.register(PlaceOrder, handler)
    return bus


class TestIdempotency:
    async def test_a_repeat_returns_the_first_result_without_events(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """Same key and payload (new message and correlation ids): the first result, no events."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        first = await bus.dispatch(command)
        resent = attrs.evolve(command, message_id=uuid4(), correlation_id=uuid4())
        again = await bus.dispatch(resent)
        assert again == first
        assert isinstance(again, UUID)
        assert handler.runs == 1
        assert len(await store.read_all()) == 2

    async def test_same_key_other_payload_conflicts(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """Reusing a key for another payload raises IdempotencyConflictError and writes nothing."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        customer = uuid4()
        await bus.dispatch(PlaceOrder(customer_id=customer, idempotency_key="k-1"))
        with pytest.raises(IdempotencyConflictError, match="'k-1'") as info:
            await bus.dispatch(PlaceOrder(customer_id=customer, quantity=2, idempotency_key="k-1"))
        assert info.value.key == "k-1"
        assert handler.runs == 1
        assert len(await store.read_all()) == 2

    async def test_every_other_payload_conflicts(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """Whichever way the payloads' fingerprints compare, any difference is a conflict."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        customer = UUID(int=7)  # fixed: the fingerprints are the same on every run
        await bus.dispatch(PlaceOrder(customer_id=customer, quantity=5, idempotency_key="k-1"))
        fingerprints = set()
        for quantity in (1, 2, 3, 4, 6, 7, 8, 9):
            other = PlaceOrder(customer_id=customer, quantity=quantity, idempotency_key="k-1")
            fingerprints.add(Idempotency(store).fingerprint(other))
            with pytest.raises(IdempotencyConflictError):
                await bus.dispatch(other)
        first = Idempotency(store).fingerprint(
            PlaceOrder(customer_id=customer, quantity=5, idempotency_key="k-1")
        )
        assert min(fingerprints) < first < max(fingerprints)  # some sort before, some after
        assert handler.runs == 1

    async def test_commands_without_a_key_run_every_time(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """No key: no idempotency, and saves append at once."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        command = PlaceOrder(customer_id=uuid4())
        assert await bus.dispatch(command) != await bus.dispatch(command)
        assert handler.runs == 2

    async def test_concurrent_duplicates_make_one_set_of_events(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """50 concurrent dispatches of one key: one set of events, one result for all."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="hot")
        results = await asyncio.gather(
            *(bus.dispatch(attrs.evolve(command, message_id=uuid4())) for _ in range(50))
        )
        assert len(set(results)) == 1
        events = await store.read_all()
        assert len(events) == 2
        assert {r.stream_id for r in events} == {str(results[0])}

    async def test_a_failing_handler_records_nothing(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A crash after the save but before the handler returns leaves no events and no key."""
        repo = Repository(store)
        failing = Counter(repo, fail=True)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        with pytest.raises(RuntimeError, match="injected crash"):
            await bus_for(store, failing).dispatch(command)
        assert await store.read_all() == []
        assert await store.load_record("k-1") is None
        retried = Counter(repo)
        order_id = await bus_for(store, retried).dispatch(command)
        assert retried.runs == 1
        assert (await repo.get(Order, order_id)).version == 2

    async def test_expired_keys_run_afresh(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """After the retention a key is forgotten and the command runs again."""
        now = datetime(2026, 11, 26, tzinfo=UTC)
        handler = Counter(Repository(store))
        bus = bus_for(store, handler, retention=timedelta(hours=1), clock=lambda: now)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        first = await bus.dispatch(command)
        assert await bus.dispatch(command) == first
        now += timedelta(hours=2)
        assert await bus.dispatch(command) != first
        assert handler.runs == 2

    async def test_structured_results_replay_as_their_type(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A result of an attrs class comes back as that class on a repeat."""
        repo = Repository(store)
        bus = CommandBus()
        bus.use(Idempotency(store))

        @bus.register(PlaceWithReceipt)
        async def place(command: PlaceWithReceipt) -> Receipt:
            order = Order.create(command.customer_id, ADDRESS)
            await repo.save(order)
            return Receipt(order_id=order.id, lines=0)

        command = PlaceWithReceipt(customer_id=uuid4(), idempotency_key="r-1")
        first = await bus.dispatch(command)
        assert await bus.dispatch(command) == first

    async def test_none_results_replay(self, store: InMemoryEventStore | SQLiteEventStore) -> None:
        """A Command[None] repeats as None, without running the handler again."""
        repo = Repository(store)
        bus = CommandBus()
        bus.use(Idempotency(store))
        runs = []

        @bus.register(PlaceQuietly)
        async def place(command: PlaceQuietly) -> None:
            runs.append(command)
            await repo.save(Order.create(command.customer_id, ADDRESS))

        command = PlaceQuietly(customer_id=uuid4(), idempotency_key="n-1")
        # Through the bus's untyped core, to see the value a replay returns.
        outcomes = [await bus._dispatch(command) for _ in range(2)]
        assert outcomes == [None, None]
        assert len(runs) == 1
        assert len(await store.read_all()) == 1

    async def test_conflicts_inside_retry_run_again(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A concurrency conflict at the final append is retried by RetryOnConflict."""
        repo = Repository(store)
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        runs = 0

        @attrs.frozen
        class Add(Command[int]):
            order_id: UUID

        async def add(command: Add) -> int:
            nonlocal runs
            runs += 1
            mine = await repo.get(Order, command.order_id)
            if runs == 1:  # another writer, outside this command, appends first
                added = OrderItemAdded(product_id=PRODUCT, quantity=5, unit_price=Decimal(1))
                await store.append(str(command.order_id), [added], expected_version=1)
            mine.add_item(PRODUCT, 1, Decimal(1))
            await repo.save(mine)
            return mine.version

        bus = CommandBus()
        bus.use(RetryOnConflict())
        bus.use(Idempotency(store))
        bus.register(Add, add)
        assert await bus.dispatch(Add(order_id=order.id, idempotency_key="a")) == 3
        assert runs == 2

    @pytest.mark.parametrize("retention", [3600, timedelta(0), timedelta(hours=-1)])
    def test_retention_must_be_a_positive_timedelta(self, retention: object) -> None:
        """A retention that is not a positive timedelta is refused up front."""
        with pytest.raises(ValueError, match="retention"):
            Idempotency(InMemoryEventStore(), retention=retention)  # type: ignore[arg-type]

    async def test_a_naive_clock_is_refused_before_the_handler_runs(self) -> None:
        """A clock without a timezone fails the dispatch before the handler runs."""
        store = InMemoryEventStore()
        handler = Counter(Repository(store))
        bus = bus_for(store, handler, clock=lambda: datetime(2026, 1, 1))  # noqa: DTZ001
        with pytest.raises(ValueError, match="aware datetime"):
            await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key="k"))
        assert handler.runs == 0

    def test_keys_are_kept_for_a_day_by_default(self) -> None:
        """The default retention is one day, as documented."""
        assert Idempotency(InMemoryEventStore()).retention == timedelta(days=1)

    def test_the_store_must_keep_records(self) -> None:
        """A store without idempotency support is refused up front."""

        class Plain:
            pass

        with pytest.raises(TypeError, match="cannot keep idempotency records"):
            Idempotency(Plain())  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("key", "why"),
        [
            ("", "must not be empty"),
            (7, "must be a str, not int"),
            ("k" * 257, "must be at most 256 characters long, not 257"),
            ("k\x00", "must not contain a NUL character"),
            ("k\udc80", "must be valid UTF-8"),
        ],
    )
    async def test_bad_keys_are_refused(
        self, store: InMemoryEventStore | SQLiteEventStore, key: object, why: str
    ) -> None:
        """A key no store can keep is refused, saying why, before the handler runs."""
        bus = bus_for(store, Counter(Repository(store)))
        command = PlaceOrder(customer_id=uuid4(), idempotency_key=key)  # type: ignore[arg-type]
        with pytest.raises(InvalidIdempotencyKeyError, match=why) as info:
            await bus.dispatch(command)
        assert isinstance(info.value, ValueError)
        assert info.value.key == key
        assert await store.read_all() == []

    async def test_the_longest_keys_work(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """256 characters of four UTF-8 bytes each make a key like any other."""
        counter = Counter(Repository(store))
        bus = bus_for(store, counter)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="\U0001f600" * 256)
        assert await bus.dispatch(command) == await bus.dispatch(command)
        assert counter.runs == 1


class TestUnitOfWork:
    """What an idempotent command's handler saves is appended once, with its key, and no more."""

    async def test_saves_after_an_idempotent_command_are_appended(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """Once the command is done, a later save in the same task goes to the store at once."""
        bus = bus_for(store, Counter(Repository(store)))
        await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key="k-1"))
        later = Order.create(uuid4(), ADDRESS)
        results = await Repository(store).save(later)
        assert [r.version for r in results] == [1]
        assert len(await store.read_stream(str(later.id))) == 1

    async def test_saving_one_aggregate_twice_in_a_handler_appends_each_event_once(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """Two saves of one order inside the command store its three events once, in order."""
        repo = Repository(store)

        async def place_twice(command: PlaceOrder) -> UUID:
            order = Order.create(command.customer_id, ADDRESS)
            order.add_item(PRODUCT, 1, Decimal(1))
            await repo.save(order)
            order.add_item(uuid4(), 2, Decimal(3))
            await repo.save(order)
            return order.id

        bus = CommandBus()
        bus.use(Idempotency(store))
        bus.register(PlaceOrder, place_twice)
        order_id = await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key="k-2"))
        stored = await store.read_stream(str(order_id))
        assert [r.event.version for r in stored] == [1, 2, 3]
        assert len({r.event.event_id for r in stored}) == 3

    async def test_keys_kept_for_ever_replay_years_later(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """retention=None: the record never expires, so a repeat years later still replays."""
        now = datetime(2026, 11, 26, tzinfo=UTC)
        handler = Counter(Repository(store))
        bus = bus_for(store, handler, retention=None, clock=lambda: now)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        first = await bus.dispatch(command)
        record = await store.load_record("k-1")
        assert record is not None
        assert record.expires_at is None
        now += timedelta(days=3650)
        assert await bus.dispatch(command) == first
        assert handler.runs == 1


class TestRecordsAndResults:
    async def test_a_key_expires_at_its_expiry_time_exactly(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """At expires_at the key no longer counts (the expiry is exclusive of the record)."""
        now = datetime(2026, 11, 26, tzinfo=UTC)
        handler = Counter(Repository(store))
        bus = bus_for(store, handler, retention=timedelta(hours=1), clock=lambda: now)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        first = await bus.dispatch(command)
        now += timedelta(hours=1) - timedelta(microseconds=1)
        assert await bus.dispatch(command) == first
        now += timedelta(microseconds=1)
        assert await bus.dispatch(command) != first
        assert handler.runs == 2

    async def test_the_result_type_comes_from_the_command_base(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A command with another generic base before Command[R] still replays an R."""

        class Labelled(Generic[T]):
            """A base with a type parameter of its own, listed before Command[int]."""

        @attrs.frozen(kw_only=True)
        class Count(Labelled[str], Command[int]):
            label: str = ""

        bus = CommandBus()
        bus.use(Idempotency(store))

        @bus.register(Count)
        async def count(command: Count) -> int:
            del command
            return 7

        command = Count(label="x", idempotency_key="c-1")
        assert await bus.dispatch(command) == 7
        again = await bus.dispatch(command)
        assert (again, type(again)) == (7, int)

    async def test_a_result_that_cannot_be_stored_is_a_serialization_error(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A handler result the converter cannot encode fails the command clearly."""
        bus = CommandBus()
        bus.use(Idempotency(store))

        @bus.register(PlaceOrder)
        async def place(command: PlaceOrder) -> UUID:
            del command
            return object()  # type: ignore[return-value]

        with pytest.raises(SerializationError, match="cannot be stored for replay"):
            await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key="k-1"))
        assert await store.load_record("k-1") is None

    async def test_a_stored_result_that_does_not_decode_is_a_serialization_error(
        self, store: InMemoryEventStore | SQLiteEventStore
    ) -> None:
        """A repeat whose stored result no longer fits the result type fails with the key named."""
        handler = Counter(Repository(store))
        bus = bus_for(store, handler)
        command = PlaceOrder(customer_id=uuid4(), idempotency_key="k-1")
        idempotency = Idempotency(store)
        record = IdempotencyRecord(
            key="k-1",
            fingerprint=idempotency.fingerprint(command),
            result='"not a uuid"',
            created_at=datetime.now(UTC),
            expires_at=None,
        )
        await store.append_with_record([], record)
        with pytest.raises(SerializationError, match="'k-1' does not decode"):
            await bus.dispatch(command)
        assert handler.runs == 0


class TestSQLiteRecords:
    async def test_expired_records_are_purged(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Expired records are deleted from the table now and then."""
        monkeypatch.setattr("fabula.sqlite._store._PURGE_EVERY", 3)
        path = tmp_path / "e.db"
        store = SQLiteEventStore(path)
        now = datetime(2026, 11, 26, tzinfo=UTC)
        bus = bus_for(
            store, Counter(Repository(store)), retention=timedelta(minutes=1), clock=lambda: now
        )
        for n in range(2):
            await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key=f"old-{n}"))
        now += timedelta(minutes=5)
        await bus.dispatch(PlaceOrder(customer_id=uuid4(), idempotency_key="new"))
        await store.close()
        with closing(sqlite3.connect(path)) as conn:
            keys = {row[0] for row in conn.execute("SELECT key FROM fabula_idempotency")}
        assert keys == {"new"}

    def test_sigkill_leaves_keys_and_events_together(self, tmp_path: Path) -> None:
        """Killing a process mid-dispatch never leaves a key without its events, or the reverse."""
        path = tmp_path / "e.db"
        for round_number in range(8):
            child = subprocess.Popen(  # noqa: S603 - our own test helper
                [sys.executable, str(CHILD), str(path), str(round_number)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            for _ in range(3 + round_number * 3):
                child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
            with closing(sqlite3.connect(path)) as conn:
                keys = {
                    row[0]: row[1]
                    for row in conn.execute("SELECT key, result FROM fabula_idempotency")
                }
                streams = dict(
                    conn.execute("SELECT stream_id, count(*) FROM fabula_events GROUP BY stream_id")
                )
            assert keys, "the child recorded nothing before it was killed"
            assert {result.strip('"') for result in keys.values()} == set(streams)
            assert set(streams.values()) == {2}
