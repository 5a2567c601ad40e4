"""Repository: loading and saving aggregates through a store."""

from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from fabula import AggregateNotFoundError, ConcurrencyError, Repository
from fabula.exceptions import EventTypeError
from fabula.memory import InMemoryEventStore
from fabula.storage import SnapshotCodec

from .support.domain import ADDRESS, Order, OrderStatus, Tally

PRODUCT = uuid4()


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


@pytest.fixture
def repo(store: InMemoryEventStore) -> Repository:
    return Repository(store)


class TestGet:
    async def test_unknown_id_raises_not_found(self, repo: Repository) -> None:
        """get() of an id with no stream raises AggregateNotFoundError naming type and id."""
        missing = uuid4()
        with pytest.raises(AggregateNotFoundError) as info:
            await repo.get(Order, missing)
        assert (info.value.aggregate_type, info.value.aggregate_id) == (Order, missing)
        assert str(missing) in str(info.value)
        assert isinstance(info.value, LookupError)

    async def test_save_then_get_round_trips(self, repo: Repository) -> None:
        """A saved aggregate loads back equal, at the same version, with nothing pending."""
        order = Order.create(uuid4(), ADDRESS)
        order.add_item(PRODUCT, 3, Decimal("2.00"))
        order.submit()
        await repo.save(order)
        again = await repo.get(Order, order.id)
        assert again == order
        assert (again.version, again.pending_events, again.status) == (
            3,
            (),
            OrderStatus.SUBMITTED,
        )

    async def test_string_ids(self, repo: Repository) -> None:
        """Aggregates with string ids save and load; their events read back with string ids."""
        tally = Tally(id="tally-7")
        tally.add(3)
        await repo.save(tally)
        again = await repo.get(Tally, "tally-7")
        assert (again.id, again.count) == ("tally-7", 3)
        (recorded,) = await repo.store.read_stream("tally-7")
        assert recorded.event.aggregate_id == "tally-7"

    async def test_ids_come_back_as_declared(self, repo: Repository) -> None:
        """get(Order, text) gives a UUID id; a str aggregate with a UUID-like id keeps a str."""
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        again = await repo.get(Order, str(order.id).upper())
        assert (type(again.id), again.id) == (UUID, order.id)
        tally = Tally(id=str(uuid4()))
        tally.add(1)
        await repo.save(tally)
        (recorded,) = await repo.store.read_stream(tally.id)
        assert type(recorded.event.aggregate_id) is str
        assert type((await repo.get(Tally, tally.id)).id) is str

    @pytest.mark.parametrize("bad", [object, "Order", 42, None])
    async def test_get_refuses_what_is_not_an_aggregate_class(
        self, repo: Repository, bad: object
    ) -> None:
        """get() of a class that is not an Aggregate, or of no class at all, is a clear error."""
        with pytest.raises(EventTypeError, match=r"not a subclass of fabula\.Aggregate"):
            await repo.get(bad, uuid4())  # type: ignore[arg-type]

    async def test_get_refuses_an_aggregate_instance(self, repo: Repository) -> None:
        """get() wants the class: an instance is refused, not mistaken for one."""
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        with pytest.raises(EventTypeError, match="not a subclass"):
            await repo.get(order, order.id)  # type: ignore[arg-type]

    def test_settings_are_keyword_only_and_the_store_shows_once(
        self, store: InMemoryEventStore
    ) -> None:
        """`Repository(store, 5)` is refused (which setting is 5?); repr() names the store once."""
        with pytest.raises(TypeError):
            Repository(store, 5)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            Repository(store, None, SnapshotCodec())  # type: ignore[call-arg]
        assert repr(Repository(store)).count(repr(store)) == 1

    def test_the_snapshot_store_is_not_an_argument(self, store: InMemoryEventStore) -> None:
        """Snapshots go to the event store itself: no second store can be slipped in."""
        with pytest.raises(TypeError, match="snapshot_store"):
            Repository(store, snapshot_store=store)  # type: ignore[call-arg]


class TestSave:
    async def test_save_clears_pending_only_after_success(self, repo: Repository) -> None:
        """A conflicting save raises and keeps the pending events; nothing is stored."""
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        first, second = await repo.get(Order, order.id), await repo.get(Order, order.id)
        first.add_item(PRODUCT, 1, Decimal(1))
        second.add_item(PRODUCT, 5, Decimal(1))
        await repo.save(first)
        with pytest.raises(ConcurrencyError) as info:
            await repo.save(second)
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert len(second.pending_events) == 1
        assert (await repo.get(Order, order.id)).lines[PRODUCT].quantity == 1

    async def test_save_of_several_aggregates_is_atomic(
        self, repo: Repository, store: InMemoryEventStore
    ) -> None:
        """Saving two aggregates where one conflicts stores neither."""
        stale = Order.create(uuid4(), ADDRESS)
        await repo.save(stale)
        fresh = Order.create(uuid4(), ADDRESS)
        newer = await repo.get(Order, stale.id)
        newer.add_item(PRODUCT, 1, Decimal(1))
        await repo.save(newer)
        stale.add_item(PRODUCT, 2, Decimal(1))
        with pytest.raises(ConcurrencyError):
            await repo.save(fresh, stale)
        with pytest.raises(AggregateNotFoundError):
            await repo.get(Order, fresh.id)
        assert fresh.pending_events
        assert len(await store.read_all()) == 2

    async def test_save_of_several_aggregates_stores_all(self, repo: Repository) -> None:
        """Saving two aggregates returns a result for each and stores both."""
        a, b = Order.create(uuid4(), ADDRESS), Order.create(uuid4(), ADDRESS)
        b.add_item(PRODUCT, 1, Decimal(1))
        results = await repo.save(a, b, a)
        assert [(r.stream_id, r.version) for r in results] == [(str(a.id), 1), (str(b.id), 2)]
        assert (a.pending_events, b.pending_events) == ((), ())

    async def test_save_without_changes_is_a_no_op(
        self, repo: Repository, store: InMemoryEventStore
    ) -> None:
        """Saving aggregates with no pending events stores nothing."""
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        assert await repo.save(order) == []
        assert await repo.save() == []
        assert len(await store.read_all()) == 1

    async def test_loaded_aggregate_saves_from_its_version(self, repo: Repository) -> None:
        """Changes to a loaded aggregate append after its stored version."""
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        loaded = await repo.get(Order, order.id)
        loaded.add_item(PRODUCT, 1, Decimal(1))
        (result,) = await repo.save(loaded)
        assert result.version == 2

    @pytest.mark.parametrize("bad", ["order", None, Order])
    async def test_save_refuses_what_is_not_an_aggregate(
        self, repo: Repository, store: InMemoryEventStore, bad: object
    ) -> None:
        """Anything but an aggregate is refused before anything is stored."""
        order = Order.create(uuid4(), ADDRESS)
        with pytest.raises(EventTypeError, match=r"is not a fabula\.Aggregate"):
            await repo.save(order, bad)  # type: ignore[arg-type]
        assert await store.read_all() == []
        assert order.pending_events
