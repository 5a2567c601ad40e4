"""fabula.testing: given/when/then and the event strategies."""

import re
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import attrs
import pytest
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

import fabula
from fabula import EventSerializer
from fabula.testing import given, scenario, strategies

from .support.domain import (
    ADDRESS,
    Everything,
    Order,
    OrderCreated,
    OrderError,
    OrderItemAdded,
    OrderSubmitted,
)

PRODUCT = uuid4()
ONLY_ITEMS = fabula.EventRegistry()
ONLY_ITEMS.register(OrderItemAdded, "x.Added")
CUSTOMER = uuid4()


def created() -> OrderCreated:
    return OrderCreated(customer_id=CUSTOMER, address=ADDRESS)


def added(quantity: int = 1) -> OrderItemAdded:
    return OrderItemAdded(product_id=PRODUCT, quantity=quantity, unit_price=Decimal("2.00"))


class TestGivenWhenThen:
    def test_then_returns_the_aggregate(self) -> None:
        """then() passes when the recorded events match, and returns the aggregate."""
        order = (
            given(Order, created(), added(2))
            .when(lambda o: o.submit())
            .then(OrderSubmitted(total=Decimal("4.00")))
        )
        assert order.version == 3

    def test_then_reports_different_events(self) -> None:
        """then() fails with both event lists when they differ."""
        outcome = given(Order, created()).when(lambda o: o.add_item(PRODUCT, 2, Decimal(1)))
        with pytest.raises(AssertionError, match=r"expected events:[\s\S]*quantity=3"):
            outcome.then(attrs.evolve(added(3), unit_price=Decimal(1)))

    def test_then_reports_an_unexpected_error(self) -> None:
        """then() fails, chaining the error, when the action raised."""
        outcome = given(Order, created()).when(lambda o: o.submit())
        with pytest.raises(AssertionError, match="the action raised") as info:
            outcome.then(OrderSubmitted(total=Decimal(0)))
        assert isinstance(info.value.__cause__, OrderError)

    def test_then_raises_checks_type_message_and_no_events(self) -> None:
        """then_raises() passes for the right error and message, and returns the error."""
        error = (
            given(Order, created())
            .when(lambda o: o.submit())
            .then_raises(OrderError, match="empty order")
        )
        assert isinstance(error, OrderError)

    def test_then_raises_fails_on_success(self) -> None:
        """then_raises() fails when the action succeeded."""
        outcome = given(Order, created()).when(lambda o: o.add_item(PRODUCT, 1, Decimal(1)))
        with pytest.raises(AssertionError, match="succeeded and recorded"):
            outcome.then_raises(OrderError)

    def test_then_raises_fails_on_another_error_or_message(self) -> None:
        """then_raises() fails for another error type or a non-matching message."""
        outcome = given(Order, created()).when(lambda o: o.submit())
        with pytest.raises(AssertionError, match="expected KeyError"):
            outcome.then_raises(KeyError)
        with pytest.raises(AssertionError, match="does not match"):
            outcome.then_raises(OrderError, match="closed")

    def test_then_raises_fails_if_events_were_recorded_first(self) -> None:
        """An action that records and then raises breaks 'invariant errors record nothing'."""

        def sloppy(order: Order) -> None:
            order.add_item(PRODUCT, 1, Decimal(1))
            order.add_item(PRODUCT, 0, Decimal(1))

        with pytest.raises(AssertionError, match="had recorded"):
            given(Order, created()).when(sloppy).then_raises(OrderError)

    def test_factory_methods_are_checked_through_their_result(self) -> None:
        """An action returning a new aggregate has that aggregate's events checked."""
        given(Order).when(lambda _: Order.create(CUSTOMER, ADDRESS)).then(created())

    def test_then_with_no_events_asserts_nothing_recorded(self) -> None:
        """then() with no arguments passes only when nothing was recorded."""
        given(Order, created()).when(lambda o: o.total).then()
        with pytest.raises(AssertionError, match="recorded events"):
            given(Order, created()).when(lambda o: o.add_item(PRODUCT, 1, Decimal(1))).then()

    def test_the_outcome_holds_what_the_action_returned(self) -> None:
        """`result` is the action's return value (typed as such), or None when it raised."""
        outcome = given(Order, created(), added(2)).when(lambda o: o.total)
        total: Decimal | None = outcome.result
        assert total == Decimal("4.00")
        assert outcome.error is None
        failed = given(Order, created()).when(lambda o: o.submit())
        assert (failed.result, type(failed.error)) == (None, OrderError)

    def test_aggregate_rebuilds_the_history_afresh_each_time(self) -> None:
        """given(...).aggregate() is the state the history leads to; each call a new object."""
        start = given(Order, created(), added(2))
        first, second = start.aggregate(), start.aggregate()
        assert first is not second
        assert (first.version, first.total, first.pending_events) == (2, Decimal("4.00"), ())
        first.add_item(PRODUCT, 1, Decimal(1))
        assert start.aggregate().version == 2  # nothing shared between calls

    def test_scenario_is_given_by_a_name_hypothesis_does_not_use(self) -> None:
        """`scenario` is `given`, for modules that import hypothesis's `given` too."""
        assert scenario is given
        scenario(Order, created()).when(lambda o: o.submit()).then_raises(OrderError)

    def test_given_stamps_history_with_the_id(self) -> None:
        """History events get the given id and versions from 1."""
        order_id = uuid4()
        start = given(Order, created(), added(), id=order_id)
        assert [(e.aggregate_id, e.version) for e in start.history] == [
            (order_id, 1),
            (order_id, 2),
        ]
        assert start.aggregate().id == order_id


class TestStrategies:
    @hypothesis_given(strategies.events(OrderItemAdded))
    def test_events_fills_own_fields_only(self, event: OrderItemAdded) -> None:
        """Drawn events have typed own fields and unstamped base fields."""
        assert isinstance(event.quantity, int)
        assert isinstance(event.unit_price, Decimal)
        assert (event.aggregate_id, event.version) == ("", 0)  # type: ignore[comparison-overlap] # unset until recorded

    @hypothesis_given(strategies.events(Everything) | strategies.events(OrderItemAdded))
    def test_drawn_events_round_trip(self, event: fabula.DomainEvent) -> None:
        """Drawn events can be stored and read back equal."""
        codec = EventSerializer()
        record = codec.encode(event)
        assert record.type_name == fabula.default_registry.by_class(type(event)).name
        stream = "3b2f6a4e-0c1d-4b8e-9f7a-2d5c6e8f9a0b"
        decoded = codec.decode(record, stream_id=stream, version=1)
        assert decoded == attrs.evolve(event, aggregate_id=UUID(stream), version=1)

    @hypothesis_given(strategies.any_event(ONLY_ITEMS))
    def test_any_event_draws_registered_classes(self, event: fabula.DomainEvent) -> None:
        """any_event() draws from exactly the classes of the registry it is given."""
        assert type(event) is OrderItemAdded

    @hypothesis_given(st.data())
    def test_values_cover_nested_types(self, data: st.DataObject) -> None:
        """values() draws the declared type for unions, tuples and mappings."""
        assert isinstance(data.draw(strategies.values(tuple[int, ...])), tuple)
        optional = data.draw(strategies.values(int | None))
        assert optional is None or type(optional) is int
        mapping = data.draw(strategies.values(fabula.storage.FrozenDict[str, int]))
        assert isinstance(mapping, fabula.storage.FrozenDict)
        assert isinstance(data.draw(strategies.values(Everything)), Everything)


def test_importing_fabula_testing_registers_nothing() -> None:
    """A fresh interpreter that imports fabula.testing finds no fabula.testing.* names."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    program = (
        "import fabula, fabula.testing, fabula.testing.strategies\n"
        "print(fabula.default_registry.by_name('fabula.testing.Deposited'))\n"
        "fabula.testing.register_contract_events(fabula.default_registry)\n"
        "print(fabula.default_registry.by_name('fabula.testing.Deposited').cls.__name__)\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "Deposited"]


def test_the_contract_suite_registers_its_events_when_it_runs(tmp_path: Path) -> None:
    """A user's suite with no registration of its own passes: the suite registers as it starts."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    (tmp_path / "test_mine.py").write_text(
        "import fabula.testing\n"
        "from fabula.memory import InMemoryEventStore\n"
        "import pytest\n\n"
        "class TestMine(fabula.testing.EventStoreContract):\n"
        "    @pytest.fixture\n"
        "    def event_store_factory(self):\n"
        "        async def build():\n"
        "            return InMemoryEventStore()\n"
        "        return build\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "append or read"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\d+ passed", result.stdout)
