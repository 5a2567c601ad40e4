"""Command and query buses, middleware order, and the built-in middleware."""

import asyncio
import logging
import random
import time
import types
from decimal import Decimal
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula import (
    Command,
    CommandBus,
    ConcurrencyError,
    Correlation,
    LogDispatch,
    Next,
    Query,
    QueryBus,
    Repository,
    RetryOnConflict,
)
from fabula.exceptions import DuplicateHandlerError, HandlerNotFoundError, MessageTypeError
from fabula.memory import InMemoryEventStore

from .support.domain import ADDRESS, Order
from .support.stores import OpenSQLite

PRODUCT = uuid4()


@attrs.frozen
class CreateOrder(Command[UUID]):
    customer_id: UUID


@attrs.frozen
class AddItem(Command[int]):
    order_id: UUID
    quantity: int


@attrs.frozen
class CountLines(Query[int]):
    order_id: UUID


class Unhandled(Command[None]):
    pass


def make_bus(repo: Repository) -> CommandBus:
    bus = CommandBus()

    @bus.register(CreateOrder)
    async def create(command: CreateOrder) -> UUID:
        order = Order.create(command.customer_id, ADDRESS)
        await repo.save(order)
        return order.id

    async def add(command: AddItem) -> int:
        order = await repo.get(Order, command.order_id)
        order.add_item(PRODUCT, command.quantity, Decimal(1))
        await repo.save(order)
        return order.lines[PRODUCT].quantity

    bus.register(AddItem, add)
    return bus


class TestCommandBus:
    async def test_dispatch_returns_the_typed_result(self) -> None:
        """Handlers registered by call or decorator get their commands and return results."""
        repo = Repository(InMemoryEventStore())
        bus = make_bus(repo)
        order_id: UUID = await bus.dispatch(CreateOrder(customer_id=uuid4()))
        quantity: int = await bus.dispatch(AddItem(order_id=order_id, quantity=3))
        assert quantity == 3
        assert (await repo.get(Order, order_id)).version == 2

    async def test_handler_objects_are_called_through_handle(self) -> None:
        """An object with an async handle method is a handler."""

        class Counter:
            def __init__(self) -> None:
                self.seen: list[CountLines] = []

            async def handle(self, query: CountLines) -> int:
                self.seen.append(query)
                return len(self.seen)

        counter = Counter()
        bus = QueryBus()
        bus.register(CountLines, counter)
        assert await bus.dispatch(CountLines(order_id=uuid4())) == 1
        assert await bus.dispatch(CountLines(order_id=uuid4())) == 2

    async def test_unregistered_commands_raise_handler_not_found(self) -> None:
        """Dispatching a command type with no handler names the type."""
        with pytest.raises(HandlerNotFoundError, match="Unhandled") as info:
            await CommandBus().dispatch(Unhandled())
        assert info.value.message_type is Unhandled
        assert isinstance(info.value, LookupError)

    def test_second_registration_is_refused(self) -> None:
        """One handler per command type."""
        bus = make_bus(Repository(InMemoryEventStore()))

        async def other(command: CreateOrder) -> UUID:
            return command.customer_id

        with pytest.raises(DuplicateHandlerError, match="CreateOrder"):
            bus.register(CreateOrder, other)

    async def test_wrong_message_kinds_are_refused(self) -> None:
        """Queries on the command bus, non-messages and non-callables are refused."""
        bus = CommandBus()
        with pytest.raises(MessageTypeError, match=r"not a subclass of fabula\.Command"):
            bus.register(CountLines, lambda _: asyncio.sleep(0))  # type: ignore[arg-type]
        with pytest.raises(MessageTypeError, match=r"not a fabula\.Command"):
            await bus.dispatch(CountLines(order_id=uuid4()))  # type: ignore[arg-type]
        with pytest.raises(MessageTypeError, match="must be callable"):
            bus.register(Unhandled, 42)  # type: ignore[call-overload]
        with pytest.raises(MessageTypeError, match="middleware must be"):
            bus.use("log")  # type: ignore[arg-type]

    async def test_middleware_runs_in_order_and_by_type(self) -> None:
        """The first middleware added is outermost; for_types limits where it runs."""
        calls: list[str] = []

        def tracer(name: str) -> fabula.Middleware:
            async def middleware(message: object, call_next: Next) -> object:
                calls.append(f"{name}>")
                result = await call_next(message)
                calls.append(f"<{name}")
                return result

            return middleware

        bus = make_bus(Repository(InMemoryEventStore()))
        bus.use(tracer("a"))
        bus.use(tracer("only-add"), for_types=[AddItem])
        bus.use(tracer("b"))
        order_id = await bus.dispatch(CreateOrder(customer_id=uuid4()))
        assert calls == ["a>", "b>", "<b", "<a"]
        calls.clear()
        await bus.dispatch(AddItem(order_id=order_id, quantity=1))
        assert calls == ["a>", "only-add>", "b>", "<b", "<only-add", "<a"]

    def test_commands_are_frozen_keyword_only_attrs_classes(self) -> None:
        """A command takes its fields and idempotency_key by keyword, and cannot change."""
        command = CreateOrder(customer_id=PRODUCT, idempotency_key="k-1")
        assert (command.customer_id, command.idempotency_key) == (PRODUCT, "k-1")
        assert CreateOrder(customer_id=PRODUCT).idempotency_key is None
        assert "idempotency_key" in [f.name for f in attrs.fields(Command)]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            command.idempotency_key = "k-2"  # type: ignore[misc]

    def test_middleware_types_are_given_by_keyword(self) -> None:
        """`use(middleware, [Type])` is refused: which types it wraps is named."""
        bus = CommandBus()
        with pytest.raises(TypeError):
            bus.use(Correlation(), [CreateOrder])  # type: ignore[call-arg]

    def test_a_bus_shows_what_it_holds(self) -> None:
        """repr() counts the handlers and the middleware."""
        bus = make_bus(Repository(InMemoryEventStore()))
        bus.use(Correlation())
        handlers = len([CreateOrder, AddItem])
        assert repr(bus) == f"<CommandBus: {handlers} handlers, 1 middleware>"
        assert repr(QueryBus()) == "<QueryBus: 0 handlers, 0 middleware>"
        assert repr(Correlation()) == "Correlation()"
        assert Correlation() == Correlation()  # stateless: any two are alike

    async def test_handler_errors_propagate(self) -> None:
        """A domain error in a handler reaches the caller unchanged."""
        repo = Repository(InMemoryEventStore())
        bus = make_bus(repo)
        order_id = await bus.dispatch(CreateOrder(customer_id=uuid4()))
        with pytest.raises(fabula.DomainError, match="at least 1"):
            await bus.dispatch(AddItem(order_id=order_id, quantity=0))


class TestRetryOnConflict:
    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    async def test_retries_against_a_real_conflicting_writer(
        self, kind: str, open_sqlite: OpenSQLite
    ) -> None:
        """A handler that loses a race to another writer runs again on fresh state."""
        store: fabula.EventStore = InMemoryEventStore() if kind == "memory" else open_sqlite()
        repo = Repository(store)
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        attempts = 0

        async def add_with_interference(command: AddItem) -> int:
            nonlocal attempts
            attempts += 1
            mine = await repo.get(Order, command.order_id)
            if attempts == 1:  # another writer commits between our load and our save
                theirs = await Repository(store).get(Order, command.order_id)
                theirs.add_item(PRODUCT, 10, Decimal(1))
                await Repository(store).save(theirs)
            mine.add_item(PRODUCT, command.quantity, Decimal(1))
            await repo.save(mine)
            return mine.lines[PRODUCT].quantity

        bus = CommandBus()
        bus.use(RetryOnConflict(rng=random.Random(1)))
        bus.register(AddItem, add_with_interference)
        assert await bus.dispatch(AddItem(order_id=order.id, quantity=2)) == 12
        assert attempts == 2
        assert (await repo.get(Order, order.id)).version == 3

    async def test_gives_up_after_the_attempts(self) -> None:
        """After the last attempt the ConcurrencyError propagates."""
        attempts = 0

        async def always_conflicts(_: AddItem) -> int:
            nonlocal attempts
            attempts += 1
            raise ConcurrencyError("s", 1, 2)

        bus = CommandBus()
        bus.use(RetryOnConflict(attempts=3, base_delay=0.0001))
        bus.register(AddItem, always_conflicts)
        with pytest.raises(ConcurrencyError):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        assert attempts == 3

    async def test_many_attempts_are_all_made(self) -> None:
        """However many attempts are set (here past CPython's cache of small ints), all run."""
        calls = 0

        async def always_conflicts(_: AddItem) -> int:
            nonlocal calls
            calls += 1
            raise ConcurrencyError("s", 1, 2)

        bus = CommandBus()
        bus.use(RetryOnConflict(attempts=300, base_delay=1e-9, max_delay=1e-9))
        bus.register(AddItem, always_conflicts)
        with pytest.raises(ConcurrencyError):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        assert calls == 300

    async def test_pauses_double_from_the_base_up_to_the_cap_with_full_jitter(self) -> None:
        """Each pause is drawn from [0, min(max_delay, base_delay * 2 ** (attempt - 1))]."""

        class Drawn(random.Random):
            def __init__(self) -> None:
                super().__init__(0)
                self.ranges: list[tuple[float, float]] = []

            def uniform(self, a: float, b: float) -> float:
                self.ranges.append((a, b))
                return 0.0

        async def always_conflicts(_: AddItem) -> int:
            raise ConcurrencyError("s", 1, 2)

        drawn = Drawn()
        bus = CommandBus()
        bus.use(RetryOnConflict(attempts=6, base_delay=0.001, max_delay=0.01, rng=drawn))
        bus.register(AddItem, always_conflicts)
        with pytest.raises(ConcurrencyError):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        assert drawn.ranges == [(0, 0.001), (0, 0.002), (0, 0.004), (0, 0.008), (0, 0.01)]

    def test_the_defaults_are_as_documented(self) -> None:
        """5 attempts, pauses from 2 ms doubling up to 100 ms; the random source is not shown."""
        retry = RetryOnConflict()
        assert (retry.attempts, retry.base_delay, retry.max_delay) == (5, 0.002, 0.1)
        assert repr(retry) == "RetryOnConflict(attempts=5, base_delay=0.002, max_delay=0.1)"

    @pytest.mark.parametrize("bad", [2.5, True, "3"])
    def test_attempts_must_be_a_whole_number(self, bad: object) -> None:
        """A fractional or non-int number of attempts is refused when it is set."""
        with pytest.raises(ValueError, match="attempts"):
            RetryOnConflict(attempts=bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("field", ["attempts", "base_delay", "max_delay"])
    def test_settings_must_be_positive(self, field: str) -> None:
        """Zero or negative settings are refused."""
        with pytest.raises(ValueError, match=field):
            RetryOnConflict(**{field: 0})  # type: ignore[arg-type]


class TestCorrelation:
    async def test_events_carry_causation_and_correlation(self) -> None:
        """Recorded events get the command's id as causation and its correlation id."""
        store = InMemoryEventStore()
        bus = make_bus(Repository(store))
        bus.use(Correlation())
        command = CreateOrder(customer_id=uuid4(), correlation_id=uuid4())
        await bus.dispatch(command)
        (recorded,) = await store.read_all()
        assert recorded.event.metadata.causation_id == command.message_id
        assert recorded.event.metadata.correlation_id == command.correlation_id

    async def test_a_new_correlation_id_when_none_is_given(self) -> None:
        """Without a correlation id, a new one is made per dispatch."""
        store = InMemoryEventStore()
        bus = make_bus(Repository(store))
        bus.use(Correlation())
        await bus.dispatch(CreateOrder(customer_id=uuid4()))
        await bus.dispatch(CreateOrder(customer_id=uuid4()))
        first, second = (r.event.metadata.correlation_id for r in await store.read_all())
        assert first is not None
        assert second is not None
        assert first != second

    async def test_nested_dispatch_keeps_the_correlation(self) -> None:
        """A command dispatched by a handler shares the outer correlation id."""
        store = InMemoryEventStore()
        repo = Repository(store)
        bus = make_bus(repo)
        bus.use(Correlation())

        @attrs.frozen
        class CreateAndAdd(Command[None]):
            customer_id: UUID

        @bus.register(CreateAndAdd)
        async def create_and_add(command: CreateAndAdd) -> None:
            order_id = await bus.dispatch(CreateOrder(customer_id=command.customer_id))
            await bus.dispatch(AddItem(order_id=order_id, quantity=1))

        outer = CreateAndAdd(customer_id=uuid4(), correlation_id=uuid4())
        await bus.dispatch(outer)
        metadata = [r.event.metadata for r in await store.read_all()]
        assert {m.correlation_id for m in metadata} == {outer.correlation_id}
        assert outer.message_id not in {m.causation_id for m in metadata}
        assert len({m.causation_id for m in metadata}) == 2

    async def test_explicit_metadata_is_kept(self) -> None:
        """An event recorded with its own metadata keeps it."""
        own = fabula.EventMetadata(correlation_id=uuid4())
        store = InMemoryEventStore()
        repo = Repository(store)
        bus = CommandBus()
        bus.use(Correlation())

        @bus.register(CreateOrder)
        async def create(command: CreateOrder) -> UUID:
            order = Order(id=uuid4())
            order.record(
                attrs.evolve(
                    Order.create(command.customer_id, ADDRESS).pending_events[0],
                    aggregate_id="",
                    version=0,
                    metadata=own,
                )
            )
            await repo.save(order)
            return order.id

        await bus.dispatch(CreateOrder(customer_id=uuid4()))
        (recorded,) = await store.read_all()
        assert recorded.event.metadata == own

    async def test_no_metadata_outside_a_dispatch(self) -> None:
        """Outside Correlation, current_metadata is None and events keep empty metadata."""
        assert fabula.current_metadata() is None
        order = Order.create(uuid4(), ADDRESS)
        assert order.pending_events[0].metadata == fabula.EventMetadata()


class TestLogDispatch:
    async def test_one_record_per_dispatch(self, caplog: pytest.LogCaptureFixture) -> None:
        """Successful and failed dispatches each log one record with structured fields."""
        bus = make_bus(Repository(InMemoryEventStore()))
        bus.use(LogDispatch())
        with caplog.at_level(logging.INFO, logger="fabula.dispatch"):
            order_id = await bus.dispatch(CreateOrder(customer_id=uuid4()))
            with pytest.raises(fabula.DomainError):
                await bus.dispatch(AddItem(order_id=order_id, quantity=0))
        ok, failed = caplog.records
        assert (ok.levelno, ok.message_type, ok.outcome) == (  # type: ignore[attr-defined]
            logging.INFO,
            "CreateOrder",
            "ok",
        )
        assert ok.duration_ms >= 0  # type: ignore[attr-defined]
        # A domain error is an answer, not a bug: one line, its message, no traceback.
        assert failed.levelno == logging.INFO
        assert failed.outcome.startswith("OrderError (")  # type: ignore[attr-defined]
        assert failed.exc_info is None
        assert "AddItem" in failed.getMessage()
        assert "\n" not in failed.getMessage()

    async def test_an_unexpected_error_is_logged_with_its_traceback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An error that is not one of `expected` is a bug: ERROR, with the traceback."""

        async def broken(_: AddItem) -> int:
            raise KeyError("oops")

        bus = CommandBus()
        bus.use(LogDispatch())
        bus.register(AddItem, broken)
        with caplog.at_level(logging.INFO, logger="fabula.dispatch"), pytest.raises(KeyError):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        (record,) = caplog.records
        assert (record.levelno, record.outcome) == (logging.ERROR, "KeyError")  # type: ignore[attr-defined]
        assert record.exc_info is not None
        assert record.exc_info[0] is KeyError

    @pytest.mark.parametrize(
        "error",
        [
            fabula.ConcurrencyError("s", 1, 2),
            fabula.AggregateNotFoundError(Order, uuid4()),
            fabula.InvalidCursorError("bad\nsecond line"),
            fabula.IdempotencyConflictError("key-1"),
            fabula.InvalidPageSizeError(0, 1, 100),
        ],
        ids=lambda e: type(e).__name__,
    )
    async def test_expected_errors_are_one_line(
        self, caplog: pytest.LogCaptureFixture, error: Exception
    ) -> None:
        """Conflicts, missing aggregates and bad cursors are answers: one line each."""

        async def refuse(_: AddItem) -> int:
            raise error

        bus = CommandBus()
        bus.use(LogDispatch(expected_level=logging.WARNING))
        bus.register(AddItem, refuse)
        with caplog.at_level(logging.INFO, logger="fabula.dispatch"), pytest.raises(type(error)):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        (record,) = caplog.records
        assert (record.levelno, record.exc_info) == (logging.WARNING, None)
        first = str(error).splitlines()[0]
        assert record.outcome == f"{type(error).__name__} ({first})"  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("text", "logged"),
        [("x" * 200, "x" * 200), ("y" * 201, "y" * 199 + "…"), ("z" * 300, "z" * 199 + "…")],
        ids=["200", "201", "300"],
    )
    async def test_long_messages_are_cut_to_200_characters(
        self, caplog: pytest.LogCaptureFixture, text: str, logged: str
    ) -> None:
        """An expected error's message is kept whole up to 200 characters, then cut with …."""

        async def refuse(_: AddItem) -> int:
            raise fabula.DomainError(text)

        bus = CommandBus()
        bus.use(LogDispatch())
        bus.register(AddItem, refuse)
        with (
            caplog.at_level(logging.INFO, logger="fabula.dispatch"),
            pytest.raises(fabula.DomainError),
        ):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        (record,) = caplog.records
        assert record.outcome == f"DomainError ({logged})"  # type: ignore[attr-defined]

    async def test_the_duration_is_in_milliseconds(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """duration_ms is the clock's difference times 1000, to three places; one in the message."""
        ticks = iter([0.0, 0.0012345678])
        clock = types.SimpleNamespace(perf_counter=lambda: next(ticks))
        monkeypatch.setattr(fabula._middleware, "time", clock)

        async def done(_: AddItem) -> int:
            return 1

        bus = CommandBus()
        bus.use(LogDispatch())
        bus.register(AddItem, done)
        with caplog.at_level(logging.INFO, logger="fabula.dispatch"):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        (record,) = caplog.records
        assert record.duration_ms == 1.235  # type: ignore[attr-defined]
        assert record.getMessage().endswith("ok in 1.2 ms")

    def test_the_expected_errors_are_given_by_name(self) -> None:
        """`expected` and `expected_level` are keyword-only: a third positional is refused."""
        with pytest.raises(TypeError):
            LogDispatch(logging.getLogger("x"), logging.INFO, (KeyError,))  # type: ignore[call-arg]

    async def test_which_errors_are_expected_is_a_choice(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """`expected=` replaces the defaults: a DomainError outside it gets its traceback."""

        async def refuse(_: AddItem) -> int:
            raise fabula.DomainError("no")

        bus = CommandBus()
        bus.use(LogDispatch(expected=(KeyError,)))
        bus.register(AddItem, refuse)
        with (
            caplog.at_level(logging.INFO, logger="fabula.dispatch"),
            pytest.raises(fabula.DomainError),
        ):
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        (record,) = caplog.records
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None

    async def test_the_fields_name_the_correlation_and_the_time_taken(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """correlation_id is the message's (None if unset); duration_ms is the dispatch's."""

        async def slow(_: AddItem) -> int:
            await asyncio.sleep(0.05)
            return 1

        bus = CommandBus()
        bus.use(LogDispatch())
        bus.register(AddItem, slow)
        correlation = uuid4()
        with caplog.at_level(logging.INFO, logger="fabula.dispatch"):
            started = time.perf_counter()
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1, correlation_id=correlation))
            took = (time.perf_counter() - started) * 1000
            await bus.dispatch(AddItem(order_id=uuid4(), quantity=1))
        first, second = caplog.records
        assert first.correlation_id == str(correlation)  # type: ignore[attr-defined]
        assert second.correlation_id is None  # type: ignore[attr-defined]
        assert 50 <= first.duration_ms <= took  # type: ignore[attr-defined]
        assert f"ok in {first.duration_ms:.1f} ms" in first.getMessage()  # type: ignore[attr-defined]
