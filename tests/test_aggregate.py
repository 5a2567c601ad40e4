"""The Aggregate base: recording, applying, replaying, and the apply-handler rules."""

from decimal import Decimal
from typing import NewType
from uuid import UUID, uuid4

import attrs
import pytest

import fabula
from fabula import EventMetadata
from fabula.exceptions import (
    EventTypeError,
    EventVersionError,
    InvalidAggregateIdError,
    MissingApplyHandlerError,
)
from fabula.testing import given

from .support.domain import (
    ADDRESS,
    Order,
    OrderCreated,
    OrderError,
    OrderItemAdded,
    OrderSubmitted,
    Tally,
)

PRODUCT = UUID("00000000-0000-4000-8000-000000000001")
Sku = NewType("Sku", str)
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

    @pytest.mark.parametrize(
        "other", [UUID(int=0), UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"), "a", "zzz"]
    )
    def test_record_refuses_events_of_any_other_aggregate(self, other: UUID | str) -> None:
        """Whether the other id sorts before or after this one, as a UUID or as text."""
        order = Order(id=ORDER_ID)
        with pytest.raises(fabula.exceptions.StreamMismatchError):
            order.record(attrs.evolve(created(), aggregate_id=other))  # type: ignore[arg-type]

    def test_record_takes_an_event_naming_this_aggregate_by_its_text(self) -> None:
        """An event that already carries this aggregate's id as text is this aggregate's."""
        order = Order(id=uuid4())
        stamped = order.record(attrs.evolve(created(), aggregate_id=str(order.id)))  # type: ignore[arg-type]
        assert (stamped.aggregate_id, order.version) == (order.id, 1)

    def test_string_ids_work(self) -> None:
        """An Aggregate[str] has string ids, and its DomainEvent[str] events carry them."""
        tally = Tally(id="tally-42")
        tally.add(2)
        (event,) = tally.pending_events
        assert (tally.id, event.aggregate_id, tally.count) == ("tally-42", "tally-42", 2)
        assert Tally(id=ORDER_ID).id == str(ORDER_ID)  # type: ignore[arg-type] # a UUID: its text

    def test_uuid_ids_given_as_text_are_uuids(self) -> None:
        """The id's declared type holds at run time: text of a UUID becomes the UUID."""
        order = Order(id=str(ORDER_ID))  # type: ignore[arg-type] # text, on purpose
        assert order.id == ORDER_ID
        assert type(order.id) is UUID
        order.record(created())
        assert type(order.pending_events[0].aggregate_id) is UUID
        assert Order.coerce_id(str(ORDER_ID).upper()) == ORDER_ID

    def test_a_string_id_for_a_uuid_aggregate_says_how_to_declare_one(self) -> None:
        """Order (UUID ids) refuses "order-42", and names Aggregate[str]."""
        with pytest.raises(InvalidAggregateIdError, match=r"Aggregate\[str\]"):
            Order(id="order-42")  # type: ignore[arg-type]

    def test_an_event_of_uuid_ids_in_a_string_aggregate_is_a_declaration_error(self) -> None:
        """Recording a UUID event into an aggregate with "tally-1" ids says what to declare."""

        @attrs.define
        class Mixed(fabula.Aggregate[str]):
            @fabula.apply
            def _created(self, event: OrderCreated) -> None:
                del event

        with pytest.raises(EventTypeError, match=r"DomainEvent\[str\]"):
            Mixed(id="m-1").record(created())
        Mixed(id=str(ORDER_ID)).record(created())  # a UUID's text converts: allowed

    def test_new_types_of_ids(self) -> None:
        """A NewType over UUID or str stands for the type it wraps."""

        @attrs.define
        class Product(fabula.Aggregate[Sku]):
            pass

        product = Product(id=Sku("p-1"))
        assert product.id == "p-1"
        assert isinstance(Product.new_id(), str)
        assert isinstance(Order.new_id(), UUID)

    @pytest.mark.parametrize(
        ("kind", "bad", "why"),
        [
            (Order, "", "not the text of a UUID"),
            (Order, 42, "must be a UUID, or the text of one"),
            (Order, None, "must be a UUID, or the text of one"),
            (Tally, "", "must not be empty"),
            (Tally, 42, "must be a UUID or a str"),
        ],
    )
    def test_bad_ids_are_refused(self, kind: type[fabula.Aggregate], bad: object, why: str) -> None:
        """Ids must be of the declared kind: the error is a TypeError and a ValueError."""
        with pytest.raises(InvalidAggregateIdError, match=why) as refused:
            kind(id=bad)  # type: ignore[arg-type]
        assert isinstance(refused.value, TypeError)
        assert isinstance(refused.value, ValueError)
        assert (refused.value.aggregate_type, refused.value.value) == (kind, bad)
        assert str(refused.value).startswith(f"{kind.__name__} id {bad!r}: ")


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

    def test_handler_with_an_extra_parameter_is_refused(self) -> None:
        """An apply handler taking more than (self, event) is refused too."""
        with pytest.raises(EventTypeError, match=r"exactly \(self, event\)"):

            class Extra(fabula.Aggregate):
                @fabula.apply
                def _a(self, event: OrderCreated, more: int) -> None: ...

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


class TestMoreRules:
    """Rules of the base class that a mutation run showed no test held."""

    def test_equality_compares_state_not_unsaved_events(self) -> None:
        """An aggregate with pending events equals one loaded from the same events."""
        order = Order.create(uuid4(), ADDRESS)
        loaded = Order.from_events(order.id, order.pending_events)
        assert loaded == order
        assert loaded.pending_events == ()

    def test_the_id_is_keyword_only_and_the_version_is_not_an_argument(self) -> None:
        """Aggregates are built with id=...; their version comes only from their events."""
        with pytest.raises(TypeError):
            Order(ORDER_ID)  # type: ignore[call-arg] # the point of the test
        with pytest.raises(TypeError):
            Order(id=ORDER_ID, version=3)  # type: ignore[call-arg]
        assert Order(id=ORDER_ID).version == 0

    def test_pending_events_are_neither_an_argument_nor_shown(self) -> None:
        """Pending events are internal: not an __init__ argument, not in the repr."""
        with pytest.raises(TypeError):
            Order(id=ORDER_ID, pending=[])  # type: ignore[call-arg]
        order = Order.create(uuid4(), ADDRESS)
        assert "OrderCreated" not in repr(order)

    def test_long_histories_replay(self) -> None:
        """Versions in the hundreds are compared by value: a 300-event history replays."""
        events = [
            attrs.evolve(created() if n == 1 else created_item(), aggregate_id=ORDER_ID, version=n)
            for n in range(1, 301)
        ]
        assert Order.from_events(ORDER_ID, events).version == 300

    def test_an_id_given_as_text_matches_the_same_uuid(self) -> None:
        """A UUID id and its text are the same aggregate, whichever side holds which."""
        as_uuid = attrs.evolve(created(), aggregate_id=ORDER_ID, version=1)
        assert Order.from_events(str(ORDER_ID), [as_uuid]).version == 1
        as_text = attrs.evolve(created(), aggregate_id=str(ORDER_ID), version=1)  # type: ignore[arg-type]
        assert Order.from_events(ORDER_ID, [as_text]).version == 1

    def test_snapshots_are_of_version_1_unless_a_class_says_otherwise(self) -> None:
        """snapshot_version, the schema version of an aggregate's snapshots, defaults to 1."""
        assert fabula.Aggregate.snapshot_version == 1
        assert Order.snapshot_version == 1

    def test_replay_refuses_a_repeated_or_earlier_version(self) -> None:
        """Replaying version 1 twice, or going back, is refused like a gap."""
        first = attrs.evolve(created(), aggregate_id=ORDER_ID, version=1)
        again = attrs.evolve(created(), aggregate_id=ORDER_ID, version=1)
        with pytest.raises(EventVersionError, match="version 1 where version 2"):
            Order.from_events(ORDER_ID, [first, again])

    @pytest.mark.parametrize(
        "other", [UUID(int=0), UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"), "a", "zzz"]
    )
    def test_replay_refuses_events_of_any_other_aggregate(self, other: UUID | str) -> None:
        """Another aggregate's event is refused whether its id sorts before or after this one."""
        event = attrs.evolve(created(), aggregate_id=other, version=1)  # type: ignore[arg-type]
        with pytest.raises(fabula.exceptions.StreamMismatchError):
            Order.from_events(ORDER_ID, [event])

    def test_mark_saved_wants_the_very_events_not_equal_copies(self) -> None:
        """mark_saved() refuses copies of the pending events, even equal ones."""
        order = Order.create(uuid4(), ADDRESS)
        (pending,) = order.pending_events
        with pytest.raises(ValueError, match="not the oldest pending"):
            order.mark_saved([attrs.evolve(pending)])
        assert order.pending_events == (pending,)

    def test_restore_version_sets_a_version_and_refuses_bad_ones(self) -> None:
        """restore_version() sets the version of an aggregate without pending events, only."""
        order = Order(id=ORDER_ID)
        order.restore_version(3)
        assert order.version == 3
        order.restore_version(0)
        assert order.version == 0
        for bad in (-1, -40):
            with pytest.raises(ValueError, match=f"cannot restore version {bad}"):
                Order(id=ORDER_ID).restore_version(bad)
        busy = Order.create(uuid4(), ADDRESS)
        with pytest.raises(ValueError, match="cannot restore version 5"):
            busy.restore_version(5)


class TestMetadata:
    async def test_events_recorded_in_a_command_carry_its_ids_unless_they_have_their_own(
        self,
    ) -> None:
        """Inside a command, record() stamps the command's metadata on events without any."""
        own = fabula.EventMetadata(correlation_id=uuid4())
        recorded: list[fabula.DomainEvent] = []

        @attrs.frozen(kw_only=True)
        class Place(fabula.Command[None]):
            pass

        bus = fabula.CommandBus()
        bus.use(fabula.Correlation())

        @bus.register(Place)
        async def place(command: Place) -> None:
            del command
            order = Order.create(uuid4(), ADDRESS)
            recorded.append(order.record(attrs.evolve(created_item(), metadata=own)))
            recorded.append(order.record(attrs.evolve(created_item(), metadata=EventMetadata())))
            recorded.insert(0, order.pending_events[0])

        command = Place(correlation_id=uuid4())
        await bus.dispatch(command)
        stamped, kept, empty = recorded
        assert stamped.metadata.correlation_id == command.correlation_id
        assert stamped.metadata.causation_id == command.message_id
        assert (stamped.version, kept.version, empty.version) == (1, 2, 3)
        assert kept.metadata == own
        assert empty.metadata == stamped.metadata  # empty metadata counts as none


def created_item() -> OrderItemAdded:
    return OrderItemAdded(product_id=PRODUCT, quantity=1, unit_price=Decimal(1))
