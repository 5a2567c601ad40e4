"""Encoding events for storage and decoding them back, with upcasting."""

import enum
import inspect
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import cast
from uuid import UUID, uuid4

import attrs
import pytest
from hypothesis import given

import fabula
from fabula import DomainEvent, EventRegistry, EventSerializer, JSONObject
from fabula._events import IdKind, stream_id_as
from fabula.exceptions import SerializationError, UpcastError
from fabula.memory import InMemoryEventStore
from fabula.storage import SerializedEvent

from .support import strategies
from .support.domain import (
    Address,
    Colour,
    Everything,
    Line,
    OrderItemAdded,
    Priority,
)

STREAM = "3b2f6a4e-0c1d-4b8e-9f7a-2d5c6e8f9a0b"


def round_trip(event: DomainEvent, serializer: EventSerializer | None = None) -> DomainEvent:
    codec = serializer or EventSerializer()
    record = codec.encode(event)
    return codec.decode(record, stream_id=STREAM, version=7, position=42)


def everything(**changes: object) -> Everything:
    values: dict[str, object] = {
        "uid": uuid4(),
        "amount": Decimal("12.50"),
        "at": datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        "day": date(2026, 2, 28),
        "colour": Colour.GREEN,
        "priority": Priority.HIGH,
        "address": Address(street="Main 1", city="Utrecht"),
        "lines": (Line(uuid4(), 2, Decimal("0.10")), Line(uuid4(), 1, Decimal("1E+3"))),
        "pair": (3, "three"),
        "tags": fabula.storage.FrozenDict({"a": 1}),
        "by_product": fabula.storage.FrozenDict({uuid4(): Decimal("-0.00")}),
        "by_number": {1: "one", -20: "minus twenty"},
        "ratio": 0.1,
        "flag": True,
        "note": None,
    }
    values.update(changes)
    return Everything(**values)  # type: ignore[arg-type]


class TestRoundTrip:
    def test_every_supported_kind_round_trips_exactly(self) -> None:
        """UUID, Decimal, aware datetime, date, Enum, nested attrs, tuples and mappings."""
        event = everything()
        decoded = round_trip(event)
        assert decoded == attrs.evolve(event, aggregate_id=UUID(STREAM), version=7)
        assert isinstance(decoded, Everything)
        assert str(decoded.amount) == "12.50"
        assert decoded.at.utcoffset() == timedelta(hours=-5, minutes=-30)
        assert isinstance(decoded.tags, fabula.storage.FrozenDict)
        assert isinstance(decoded.by_product, fabula.storage.FrozenDict)
        assert type(decoded.by_number) is dict
        assert type(decoded.lines) is tuple

    @given(strategies.everything)
    def test_any_event_round_trips(self, event: Everything) -> None:
        """Whatever values the strategy draws come back equal."""
        assert round_trip(event) == attrs.evolve(event, aggregate_id=UUID(STREAM), version=7)

    def test_payload_holds_only_the_events_own_fields(self) -> None:
        """Base fields live in the record's columns, not in the JSON payload."""
        event = OrderItemAdded(product_id=uuid4(), quantity=2, unit_price=Decimal("9.99"))
        record = EventSerializer().encode(event)
        assert record.type_name == "tests.OrderItemAdded"
        assert record.schema_version == 1
        assert record.event_id == event.event_id
        assert record.timestamp == event.timestamp
        assert record.metadata == "{}"
        assert record.data == (
            f'{{"product_id":"{event.product_id}","quantity":2,"unit_price":"9.99"}}'
        )

    def test_metadata_round_trips(self) -> None:
        """Correlation id, causation id and headers survive."""
        metadata = fabula.EventMetadata(
            correlation_id=uuid4(), causation_id=uuid4(), headers={"user": "ann"}
        )
        event = attrs.evolve(everything(), metadata=metadata)
        assert round_trip(event).metadata == metadata

    @pytest.mark.parametrize(
        ("kind", "stream_id", "expected"),
        [
            (UUID, STREAM, UUID(STREAM)),
            (str, STREAM, STREAM),
            (str, "order-1", "order-1"),
            (str, "x" * 36, "x" * 36),
        ],
    )
    def test_aggregate_id_comes_from_the_stream_as_declared(
        self, kind: IdKind, stream_id: str, expected: object
    ) -> None:
        """A UUID class reads its stream id as a UUID; a str class keeps the text."""
        assert stream_id_as(kind, stream_id) == expected
        assert type(stream_id_as(kind, stream_id)) is type(expected)


class TestRefusals:
    def test_float_for_decimal_is_refused(self) -> None:
        """A float in a Decimal field is refused on encode, with a hint."""
        event = OrderItemAdded(product_id=uuid4(), quantity=1, unit_price=0.1)  # type: ignore[arg-type]
        with pytest.raises(SerializationError, match=r"expected a Decimal, got float 0\.1") as info:
            EventSerializer().encode(event)
        assert info.value.type_name == "tests.OrderItemAdded"

    def test_naive_datetime_is_refused(self) -> None:
        """A naive datetime field is refused rather than guessed."""
        with pytest.raises(SerializationError, match="naive datetime"):
            EventSerializer().encode(everything(at=datetime(2026, 1, 1)))  # noqa: DTZ001

    def test_naive_timestamp_is_refused(self) -> None:
        """A naive event timestamp is refused too."""
        event = attrs.evolve(everything(), timestamp=datetime(2026, 1, 1))  # noqa: DTZ001
        with pytest.raises(SerializationError, match="naive datetime"):
            EventSerializer().encode(event)

    def test_nan_is_refused(self) -> None:
        """NaN has no JSON form and is refused."""
        with pytest.raises(SerializationError, match=r"float nan is not finite"):
            EventSerializer().encode(everything(ratio=float("nan")))

    def test_unregistered_class_is_refused(self) -> None:
        """Encoding an event class without a stored name raises UnregisteredEventError."""

        @attrs.frozen
        class Stray(DomainEvent):
            value: int

        with pytest.raises(fabula.exceptions.UnregisteredEventError, match="Stray"):
            EventSerializer().encode(Stray(value=1))


def stored(
    data: str, *, type_name: str = "tests.OrderItemAdded", version: int = 1
) -> SerializedEvent:
    return SerializedEvent(
        event_id=uuid4(),
        type_name=type_name,
        schema_version=version,
        timestamp=datetime.now(UTC),
        data=data,
        metadata="{}",
    )


class TestDecodeErrors:
    def test_unknown_type_names_type_stream_and_position(self) -> None:
        """A stored name no class has raises UnknownEventTypeError with its context."""
        with pytest.raises(fabula.exceptions.UnknownEventTypeError) as info:
            EventSerializer().decode(
                stored("{}", type_name="gone.Event"), stream_id=STREAM, version=1, position=9
            )
        assert (info.value.type_name, info.value.stream_id, info.value.position) == (
            "gone.Event",
            STREAM,
            9,
        )
        assert "gone.Event" in str(info.value)
        assert STREAM in str(info.value)
        assert "9" in str(info.value)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            ("not json", "cannot decode"),
            ("[1, 2]", "not a JSON object"),
            ('{"quantity": 1, "unit_price": "1"}', "product_id"),
            (f'{{"product_id": "{uuid4()}", "quantity": "1", "unit_price": "1"}}', "quantity"),
            (f'{{"product_id": "{uuid4()}", "quantity": true, "unit_price": "1"}}', "quantity"),
            (f'{{"product_id": "{uuid4()}", "quantity": 1, "unit_price": 0.5}}', "unit_price"),
            (f'{{"product_id": "{uuid4()}", "quantity": 1, "unit_price": "x"}}', "unit_price"),
            ('{"product_id": "x", "quantity": 1, "unit_price": "1"}', "product_id"),
            (
                f'{{"product_id": "{uuid4()}", "quantity": 1, "unit_price": "1", "extra": 1}}',
                "extra",
            ),
        ],
    )
    def test_bad_payloads_raise_serialization_error(self, data: str, match: str) -> None:
        """Payloads that do not fit the class name the field, type, stream and position."""
        with pytest.raises(SerializationError, match=match) as info:
            EventSerializer().decode(stored(data), stream_id=STREAM, version=1, position=9)
        assert (info.value.type_name, info.value.stream_id, info.value.position) == (
            "tests.OrderItemAdded",
            STREAM,
            9,
        )
        assert "position 9" in str(info.value)


class TestUuidFields:
    """A UUID field's stored text decodes as `UUID(text)` reads it, on the fast path or not."""

    @pytest.mark.parametrize(
        "text",
        [
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",  # as str(uuid) writes it
            "1B4E28BA-2FA1-11D2-883F-0016D3CCA427",  # capitals
            "1b4e28ba2fa1-11d2-883f-0016d3cc-a427",  # the dashes elsewhere
            "{1b4e28ba-2fa1-11d2-883f-0016d3cca427}",  # braces
            "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "1b4e28ba2fa111d2883f0016d3cca427",  # no dashes
        ],
    )
    def test_every_form_uuid_accepts_gives_its_value(self, text: str) -> None:
        data = f'{{"product_id": "{text}", "quantity": 1, "unit_price": "1"}}'
        event = EventSerializer().decode(stored(data), stream_id=STREAM, version=1)
        assert isinstance(event, OrderItemAdded)
        assert event.product_id == UUID(text)
        assert str(event.product_id) == str(UUID(text))
        assert hash(event.product_id) == hash(UUID(text))

    @pytest.mark.parametrize(
        "text",
        [
            "1b4e28ba-2fa1-11d2-883f-0016d3cca42g",  # not hexadecimal
            "1b4e28ba-2fa1-11d2-883f-0016d3cca4",  # too short
            "1b4e28ba-2fa1-11d2-883f--016d3cca427",  # 36 characters, five dashes
        ],
    )
    def test_text_uuid_refuses_is_a_serialization_error(self, text: str) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the stdlib's own refusal
            UUID(text)
        data = f'{{"product_id": "{text}", "quantity": 1, "unit_price": "1"}}'
        with pytest.raises(SerializationError, match="product_id"):
            EventSerializer().decode(stored(data), stream_id=STREAM, version=1)


@attrs.frozen
class PriceV1(DomainEvent):
    amount: str


@attrs.frozen
class PriceV3(DomainEvent):
    amount: Decimal
    currency: str
    source: str


def registry_v3() -> EventRegistry:
    registry = EventRegistry()
    registry.register(PriceV3, "t.Price", version=3)

    @fabula.upcaster("t.Price", from_version=1, registry=registry)
    def _v1_to_v2(payload: JSONObject) -> JSONObject:
        return {**payload, "currency": "EUR"}

    @fabula.upcaster("t.Price", from_version=2, registry=registry)
    def _v2_to_v3(payload: JSONObject) -> JSONObject:
        amount = cast("str", payload["amount"]).replace(",", ".")
        return {**payload, "amount": amount, "source": "v2"}

    return registry


class TestUpcasting:
    async def test_chain_upgrades_old_payloads_on_read(self) -> None:
        """v1 payloads pass through v1→v2→v3 on read; the stored record is not rewritten."""
        old = EventRegistry()
        old.register(PriceV1, "t.Price", version=1)
        store = InMemoryEventStore(serializer=EventSerializer(old))
        await store.append(STREAM, [PriceV1(amount="12,50")], expected_version=0)

        store.serializer = EventSerializer(registry_v3())
        (recorded,) = await store.read_stream(STREAM)
        assert isinstance(recorded.event, PriceV3)
        assert (recorded.event.amount, recorded.event.currency, recorded.event.source) == (
            Decimal("12.50"),
            "EUR",
            "v2",
        )
        assert store._log[0].record.schema_version == 1
        assert store._log[0].record.data == '{"amount":"12,50"}'

    def test_partial_chain_starts_at_the_stored_version(self) -> None:
        """A v2 payload only runs the v2→v3 upcaster."""
        decoded = EventSerializer(registry_v3()).decode(
            stored('{"amount": "3,00", "currency": "USD"}', type_name="t.Price", version=2),
            stream_id=STREAM,
            version=1,
        )
        assert decoded == PriceV3(
            aggregate_id=UUID(STREAM),
            version=1,
            event_id=decoded.event_id,
            timestamp=decoded.timestamp,
            amount=Decimal("3.00"),
            currency="USD",
            source="v2",
        )

    def test_missing_link_raises_upcast_error(self) -> None:
        """A gap in the chain names the missing version."""
        registry = EventRegistry()
        registry.register(PriceV3, "t.Price", version=3)
        registry.add_upcaster("t.Price", 2, dict)
        with pytest.raises(UpcastError, match="no upcaster from schema version 1 to 2"):
            EventSerializer(registry).decode(
                stored('{"amount": "1"}', type_name="t.Price"), stream_id=STREAM, version=1
            )

    def test_newer_schema_than_the_code_raises(self) -> None:
        """A payload written by newer code is refused, not guessed at."""
        with pytest.raises(UpcastError, match="newer than the registered version 3"):
            EventSerializer(registry_v3()).decode(
                stored("{}", type_name="t.Price", version=4), stream_id=STREAM, version=1
            )

    def test_failing_upcaster_is_reported(self) -> None:
        """An upcaster that raises is reported with its version and the event's context."""
        registry = EventRegistry()
        registry.register(PriceV3, "t.Price", version=2)

        def broken(_: JSONObject) -> JSONObject:
            raise KeyError("currency")

        registry.add_upcaster("t.Price", 1, broken)
        with pytest.raises(UpcastError, match="upcaster from version 1 failed") as info:
            EventSerializer(registry).decode(
                stored("{}", type_name="t.Price"), stream_id=STREAM, version=1, position=3
            )
        assert info.value.position == 3


@fabula.event("tests.Typed")
@attrs.frozen
class Typed(DomainEvent):
    count: int = 1
    name: str = "n"
    flag: bool = False
    keyed: Mapping[int, int] = attrs.Factory(dict)
    either: int | str = 0


class TupleValued(enum.Enum):
    A = (1, 2)


@fabula.event("tests.OddEnum")
@attrs.frozen
class OddEnum(DomainEvent):
    value: TupleValued


@fabula.event("tests.UnstorableUnion")
@attrs.frozen
class UnstorableUnion(DomainEvent):
    ref: UUID | str


class TestWriteTimeChecks:
    """What cannot be read back is refused when written, not discovered on read."""

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"count": "3"}, "expected int, got str"),
            ({"count": True}, "expected int, got bool"),
            ({"count": 3.0}, "expected int, got float"),
            ({"name": None}, "expected str, got NoneType"),
            ({"flag": 1}, "expected bool, got int"),
            ({"keyed": {"x": 2}}, "expected an int key, got str"),
            ({"either": 1.5}, "expected int | str, got float"),
        ],
    )
    def test_mistyped_values_are_refused(self, changes: dict[str, object], match: str) -> None:
        """Values of the wrong type raise SerializationError on encode."""
        event = Typed(**changes)  # type: ignore[arg-type]
        with pytest.raises(SerializationError, match=match):
            EventSerializer().encode(event)

    def test_primitive_unions_round_trip(self) -> None:
        """int | str fields keep whichever type they hold."""
        for value in (7, "seven"):
            event = Typed(either=value)
            assert round_trip(event).either == value  # type: ignore[attr-defined]

    def test_enum_values_must_be_json_scalars(self) -> None:
        """An Enum whose values JSON cannot hold is refused on encode."""
        with pytest.raises(SerializationError, match="values must be str, int, float or bool"):
            EventSerializer().encode(OddEnum(value=TupleValued.A))

    def test_field_types_that_cannot_be_read_are_refused(self) -> None:
        """A field type the converter cannot decode is refused at the first encode."""
        with pytest.raises(SerializationError, match="cannot store"):
            EventSerializer().encode(UnstorableUnion(ref="x"))

    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
    def test_non_finite_decimals_are_refused(self, value: str) -> None:
        """Decimal NaN and infinities are refused (NaN never equals itself on read)."""
        with pytest.raises(SerializationError, match="not a finite number"):
            EventSerializer().encode(everything(amount=Decimal(value)))

    def test_metadata_of_the_wrong_type_is_refused(self) -> None:
        """Metadata that is not an EventMetadata raises SerializationError, not AttributeError."""
        event = Typed(metadata={"correlation_id": uuid4()})  # type: ignore[arg-type]
        with pytest.raises(SerializationError, match="metadata must be an EventMetadata"):
            EventSerializer().encode(event)

    def test_metadata_fields_are_validated(self) -> None:
        """EventMetadata refuses ids that are not UUIDs and headers that are not str."""
        with pytest.raises(TypeError, match="correlation_id"):
            fabula.EventMetadata(correlation_id="abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="str to str"):
            fabula.EventMetadata(headers={1: "v"})  # type: ignore[dict-item]

    def test_event_ids_must_be_uuids(self) -> None:
        """An event id that is not a UUID is refused."""
        with pytest.raises(SerializationError, match="expected a UUID"):
            EventSerializer().encode(Typed(event_id="abc"))  # type: ignore[arg-type]


@fabula.event("tests.Measured")
@attrs.frozen
class Measured(DomainEvent):
    reading: float | str = 0.0
    samples: list[int] | None = None
    extra: Mapping = attrs.Factory(dict)  # type: ignore[type-arg] # a bare Mapping on purpose


@attrs.frozen
class Ref:
    to: UUID | str


@fabula.event("tests.Nested")
@attrs.frozen
class Nested(DomainEvent):
    refs: tuple[Ref, ...] = ()


@fabula.event("tests.Dated")
@attrs.frozen
class Dated(DomainEvent):
    day: date


class TestFieldKinds:
    """Values that fit their field round-trip; values that do not are refused on encode."""

    def test_a_union_with_float_takes_ints_and_floats_and_strs_only(self) -> None:
        """An int may stand for a float; a bool or bytes may not, though bool is an int."""
        for value in (2.5, 3, "n/a"):
            assert round_trip(Measured(reading=value)).reading == value  # type: ignore[attr-defined]
        for bad in (True, b"2", None):
            with pytest.raises(SerializationError, match=r"expected float \| str, got"):
                EventSerializer().encode(Measured(reading=bad))  # type: ignore[arg-type]

    def test_an_optional_container_round_trips(self) -> None:
        """`list[int] | None`: one type and None is no ambiguous union."""
        for value in ([1, 2], None):
            assert round_trip(Measured(samples=value)).samples == value  # type: ignore[attr-defined]

    def test_a_bare_mapping_round_trips(self) -> None:
        """A Mapping without type arguments holds JSON values as they are."""
        event = Measured(extra={"a": 1, "b": [True, None]})
        assert round_trip(event).extra == {"a": 1, "b": [True, None]}  # type: ignore[attr-defined]

    def test_an_ambiguous_union_inside_a_nested_class_is_refused(self) -> None:
        """`UUID | str` would read back as str: refused, however deep it is declared."""
        with pytest.raises(SerializationError, match="cannot store"):
            EventSerializer().encode(Nested(refs=(Ref(to="x"),)))

    def test_a_date_field_refuses_a_datetime(self) -> None:
        """A datetime is a date subclass, but it would not read back as the date it was."""
        with pytest.raises(SerializationError, match="expected a date, got datetime"):
            EventSerializer().encode(Dated(day=datetime.now(UTC)))
        assert round_trip(Dated(day=date(2026, 12, 2))).day == date(2026, 12, 2)  # type: ignore[attr-defined]

    def test_int_keys_an_upcaster_builds_are_taken_as_they_are(self) -> None:
        """A payload's keys are text in JSON; an untyped upcaster may hand over real ints."""
        registry = EventRegistry()
        registry.register(Typed, "t.Typed", version=2)
        keyed = {1: 10, -2: 20}
        registry.add_upcaster("t.Typed", 1, lambda payload: {**payload, "keyed": keyed})  # type: ignore[dict-item]
        decoded = EventSerializer(registry).decode(
            stored("{}", type_name="t.Typed"), stream_id=STREAM, version=1
        )
        assert decoded.keyed == {1: 10, -2: 20}  # type: ignore[attr-defined]


class Opaque:
    """A class cattrs knows nothing about."""


@fabula.event("tests.HoldsOpaque")
@attrs.frozen
class HoldsOpaque(DomainEvent):
    thing: Opaque


@fabula.event("tests.Sourced")
@attrs.frozen
class Sourced(DomainEvent):
    amount: str
    source: str = "written as v2"


class TestSerializerEdges:
    def test_a_field_type_without_a_converter_is_refused_by_name(self) -> None:
        """A field of a class cattrs cannot build is a SerializationError naming the class."""
        with pytest.raises(SerializationError, match="HoldsOpaque has a field type fabula"):
            EventSerializer().encode(HoldsOpaque(thing=Opaque()))

    def test_an_old_payload_that_also_fits_the_new_class_is_still_upcast(self) -> None:
        """Upcasters run for every older payload, even one the new class could read as it is."""
        registry = EventRegistry()
        registry.register(Sourced, "t.Sourced", version=2)
        registry.add_upcaster("t.Sourced", 1, lambda payload: {**payload, "source": "upcast"})
        old = '{"amount": "1", "source": "as v1 wrote it"}'  # every field of the new class
        decoded = EventSerializer(registry).decode(
            stored(old, type_name="t.Sourced"), stream_id=STREAM, version=1
        )
        assert decoded.source == "upcast"  # type: ignore[attr-defined]

    def test_caches_are_not_constructor_arguments(self) -> None:
        """An EventSerializer is built from a registry and a converter, nothing else."""
        assert list(inspect.signature(EventSerializer).parameters) == ["registry", "converter"]
        with pytest.raises(TypeError):
            EventSerializer(decoders={})  # type: ignore[call-arg]

    def test_a_payload_of_a_newer_schema_is_refused_even_if_it_fits(self) -> None:
        """Code older than the data must not read it as if it knew it, even when the fields fit."""
        registry = EventRegistry()
        registry.register(Sourced, "t.Sourced", version=2)
        for newer in (3, 300):
            with pytest.raises(UpcastError, match=f"schema version {newer}, newer than"):
                EventSerializer(registry).decode(
                    stored('{"amount": "1", "source": "v3"}', type_name="t.Sourced", version=newer),
                    stream_id=STREAM,
                    version=1,
                )

    def test_a_field_type_without_a_converter_is_refused_on_read_too(self) -> None:
        """Stored data of such a class is a SerializationError, whichever decoder meets it first."""
        with pytest.raises(SerializationError, match="Opaque"):
            EventSerializer().decode(
                stored('{"thing": {}}', type_name="tests.HoldsOpaque"), stream_id=STREAM, version=1
            )

    def test_a_payload_that_is_no_object_is_quoted_up_to_80_characters(self) -> None:
        """The message shows the start of the stored text, not all of it."""
        data = "[" + ", ".join(["1234567"] * 40) + "]"
        with pytest.raises(SerializationError) as info:
            EventSerializer().decode(stored(data), stream_id=STREAM, version=1)
        assert f"not a JSON object: {data[:80]!r}" in str(info.value)
        assert data[:81] not in str(info.value)

    def test_a_current_payload_without_a_defaulted_field_takes_the_default(self) -> None:
        """A field added with a default needs no upcaster: payloads without it still decode."""
        registry = EventRegistry()
        registry.register(Sourced, "t.Sourced", version=2)
        decoded = EventSerializer(registry).decode(
            stored('{"amount": "1"}', type_name="t.Sourced", version=2), stream_id=STREAM, version=1
        )
        assert decoded.source == "written as v2"  # type: ignore[attr-defined]

    def test_only_the_canonical_text_of_a_uuid_makes_a_uuid_id(self) -> None:
        """Hyphens elsewhere, capitals or braces: not a UUID stream; a str id stays the text."""
        canonical = "1234abcd-1234-1234-1234-123456781234"
        assert stream_id_as(UUID, canonical) == UUID(canonical)
        for other in (
            "1234abcd-1234-1234-12341234-56781234",  # 36 characters, hyphens moved
            canonical.upper(),
            "{1234abcd-1234-1234-1234-12345678123}",
        ):
            with pytest.raises(ValueError, match="not the canonical text of a UUID"):
                stream_id_as(UUID, other)
            assert stream_id_as(str, other) == other

    def test_a_serializer_shows_its_registry(self) -> None:
        """repr() is short: the registry it reads, not its caches."""
        assert repr(EventSerializer()).startswith("<EventSerializer")
