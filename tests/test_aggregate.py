"""The Aggregate base: recording, applying, replaying, and the apply-handler rules."""

from decimal import Decimal
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula.exceptions import EventTypeError, EventVersionError, MissingApplyHandlerError
from fabula.testing import given

from .support.domain import ADDRESS, Order, OrderCreated, OrderError, OrderItemAdded, OrderSubmitted

PRODUCT = UUID("00000000-0000-4000-8000-000000000001")
ORDER_ID = UUID("00000000-0000-4000-8000-0000000000aa")


def created() -> OrderCreated:
    return OrderCreated(customer_id=uuid4(), address=ADDRESS)


class TestRecording:
    def test_record_stamps_applies_and_keeps_pending(self) -> None:
        """record() fills id and version, changes state through apply, and keeps the event."""
        order = Order.create(uuid4(), ADDRESS)
        order.add_item(PRODUCT, 2, Decimal("1.50"))
        assert order.version == 2
        assert [(e.aggregate_id, e.version) for e in order.pending_events] == [
            (order.id, 1),
            (order.id, 2),
        ]
        assert order.lines[PRODUCT].quantity == 2

    def test_invariant_errors_record_nothing(self) -> None:
        """A domain error leaves version, state and pending events as they were."""
        order = Order.create(uuid4(), ADDRESS)
        with pytest.raises(OrderError):
            order.submit()
        with pytest.raises(OrderError):
            order.add_item(PRODUCT, 0, Decimal(1))
        assert order.version == 1
        assert len(order.pending_events) == 1
        assert order.lines == {}

    def test_record_refuses_another_aggregates_event(self) -> None:
        """An event already stamped for another aggregate is refused."""
        order = Order(id=uuid4())
        with pytest.raises(fabula.exceptions.StreamMismatchError):
            order.record(attrs.evolve(created(), aggregate_id=uuid4()))
        with pytest.raises(EventTypeError, match="not a DomainEvent"):
            order.record("created")  # type: ignore[type-var]

    def test_string_ids_work(self) -> None:
        """Aggregates may use non-empty string ids."""
        order = Order(id="order-42")
        order.record(created())
        assert order.pending_events[0].aggregate_id == "order-42"

    @pytest.mark.parametrize("bad", ["", 42, None])
    def test_bad_ids_are_refused(self, bad: object) -> None:
        """Ids must be UUIDs or non-empty strings."""
        with pytest.raises(EventTypeError, match="aggregate id"):
            Order(id=bad)  # type: ignore[arg-type]


class TestReplay:
    def test_replay_rebuilds_the_same_state(self) -> None:
        """Replaying the recorded events yields an equal aggregate."""
        order = Order.create(uuid4(), ADDRESS)
        order.add_item(PRODUCT, 2, Decimal("1.50"))
        order.add_item(PRODUCT, 1, Decimal("1.50"))
        order.submit()
        again = Order.from_events(order.id, order.pending_events)
        assert again == order
        assert again.pending_events == ()
        assert again.total == Decimal("4.50")

    def test_replay_refuses_version_gaps(self) -> None:
        """Events must run 1, 2, 3...; a gap raises EventVersionError."""
        order_id = uuid4()
        first = attrs.evolve(created(), aggregate_id=order_id, version=1)
        third = attrs.evolve(OrderSubmitted(total=Decimal(0)), aggregate_id=order_id, version=3)
        with pytest.raises(EventVersionError) as info:
            Order.from_events(order_id, [first, third])
        assert (info.value.version, info.value.required) == (3, 2)

    def test_replay_refuses_other_streams(self) -> None:
        """Events of another aggregate are refused."""
        event = attrs.evolve(created(), aggregate_id=uuid4(), version=1)
        with pytest.raises(fabula.exceptions.StreamMismatchError):
            Order.from_events(uuid4(), [event])


class TestApplyHandlers:
    def test_missing_handler_is_an_error(self) -> None:
        """An event without an apply handler raises MissingApplyHandlerError naming both."""

        @attrs.define
        class Bare(fabula.Aggregate):
            pass

        with pytest.raises(MissingApplyHandlerError, match=r"Bare.*OrderCreated"):
            Bare(id=uuid4()).record(created())

    def test_subclasses_inherit_and_override_handlers(self) -> None:
        """Handlers are inherited; a subclass handler for the same type replaces its parent's."""

        @attrs.define
        class Audited(Order):
            submissions: int = 0

            @fabula.apply
            def _submitted(self, _: OrderSubmitted) -> None:
                self.submissions += 1

        order = (
            given(
                Audited,
                created(),
                OrderItemAdded(product_id=PRODUCT, quantity=1, unit_price=Decimal(1)),
            )
            .when(lambda o: o.submit())
            .then(OrderSubmitted(total=Decimal(1)))
        )
        assert order.submissions == 1
        assert order.lines[PRODUCT].quantity == 1

    def test_two_handlers_for_one_type_are_refused(self) -> None:
        """Two apply handlers for one event type in one class fail at class creation."""
        with pytest.raises(EventTypeError, match="two apply handlers"):

            class Twice(fabula.Aggregate):
                @fabula.apply
                def _a(self, event: OrderCreated) -> None: ...

                @fabula.apply
                def _b(self, event: OrderCreated) -> None: ...

    def test_handler_must_annotate_an_event(self) -> None:
        """An apply handler whose parameter is not annotated with an event class is refused."""
        with pytest.raises(EventTypeError, match="annotate its event parameter"):

            class Unannotated(fabula.Aggregate):
                @fabula.apply
                def _a(self, event: int) -> None: ...

    def test_handler_must_take_self_and_event(self) -> None:
        """An apply handler with the wrong arity is refused."""
        with pytest.raises(EventTypeError, match=r"exactly \(self, event\)"):

            class Arity(fabula.Aggregate):
                @fabula.apply
                def _a(self) -> None: ...

    def test_forward_references_resolve_on_first_use(self) -> None:
        """Handlers annotated with classes defined later are resolved when first needed."""

        class Later(fabula.Aggregate):
            @fabula.apply
            def _a(self, event: "NotYetDefined") -> None: ...  # type: ignore[name-defined] # noqa: F821

        with pytest.raises(EventTypeError, match="cannot resolve"):
            Later(id=uuid4()).record(created())


class TestMarkSaved:
    def test_pending_append_expects_the_loaded_version(self) -> None:
        """pending_append carries the pending events and the version they follow."""
        order = Order.from_events(
            ORDER_ID, [attrs.evolve(created(), aggregate_id=ORDER_ID, version=1)]
        )
        assert order.pending_append() is None
        order.add_item(PRODUCT, 1, Decimal(1))
        order.add_item(PRODUCT, 2, Decimal(1))
        append = order.pending_append()
        assert append is not None
        assert (append.stream_id, append.expected_version) == (str(ORDER_ID), 1)
        assert append.events == order.pending_events

    def test_mark_saved_drops_the_oldest_pending(self) -> None:
        """mark_saved removes exactly the saved events from the front."""
        order = Order.create(uuid4(), ADDRESS)
        saved = order.pending_events
        order.add_item(PRODUCT, 1, Decimal(1))
        order.mark_saved(saved)
        assert [type(e) for e in order.pending_events] == [OrderItemAdded]

    def test_mark_saved_refuses_other_events(self) -> None:
        """Events that are not the oldest pending ones are refused."""
        order = Order.create(uuid4(), ADDRESS)
        with pytest.raises(ValueError, match="oldest pending"):
            order.mark_saved([created()])
        with pytest.raises(ValueError, match="oldest pending"):
            order.mark_saved([*order.pending_events, created()])
