"""Event classes, their metadata and the registry of stored names."""

from uuid import uuid4

import attrs
import pytest

import fabula
from fabula import DomainEvent, EventRegistry
from fabula.exceptions import EventTypeError

from .support.domain import OrderItemAdded, OrderSubmitted


@attrs.frozen
class Renamed(DomainEvent):
    name: str


@attrs.frozen
class Moved(DomainEvent):
    to: str


class TestDomainEvent:
    def test_base_fields_have_defaults(self) -> None:
        """An event is built from its own fields alone, unstamped, with a fresh id and UTC time."""
        event = Renamed(name="x")
        assert (event.aggregate_id, event.version) == ("", 0)  # type: ignore[comparison-overlap] # unset until recorded
        assert event.timestamp.utcoffset() is not None
        assert event.metadata == fabula.EventMetadata()
        assert Renamed(name="x").event_id != event.event_id

    def test_events_are_frozen_and_hashable(self) -> None:
        """Events cannot be changed after creation and can be hashed."""
        event = Renamed(name="x")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.name = "y"  # type: ignore[misc]
        assert hash(event) == hash(attrs.evolve(event))

    def test_own_fields_may_be_positional(self) -> None:
        """A plain @attrs.frozen subclass takes its own fields positionally."""
        assert Renamed("x").name == "x"

    def test_metadata_headers_are_frozen(self) -> None:
        """Metadata headers given as a dict become a hashable FrozenDict."""
        metadata = fabula.EventMetadata(correlation_id=uuid4(), headers={"tenant": "a"})
        assert isinstance(metadata.headers, fabula.storage.FrozenDict)
        assert metadata.headers == {"tenant": "a"}
        assert hash(metadata) == hash(attrs.evolve(metadata))


class TestRegistry:
    def test_register_and_look_up(self) -> None:
        """A registered class is found by name and by class."""
        registry = EventRegistry()
        entry = registry.register(Renamed, "t.Renamed", version=2)
        assert registry.by_name("t.Renamed") == entry
        assert registry.by_class(Renamed) == fabula.storage.EventRegistration(
            "t.Renamed", Renamed, 2
        )
        assert "t.Renamed" in registry
        assert Renamed in registry
        assert list(registry) == [entry]
        assert repr(registry) == "<EventRegistry: 1 event types, 0 upcasters>"

    def test_duplicate_names_are_rejected(self) -> None:
        """A second class under a taken name raises DuplicateEventTypeError naming both."""
        registry = EventRegistry()
        registry.register(Renamed, "t.Event")
        with pytest.raises(fabula.exceptions.DuplicateEventTypeError) as info:
            registry.register(Moved, "t.Event")
        assert info.value.name == "t.Event"
        assert (info.value.existing, info.value.new) == (Renamed, Moved)
        assert "Renamed" in str(info.value)
        assert "Moved" in str(info.value)
        assert registry.by_name("t.Event").cls is Renamed  # type: ignore[union-attr]

    def test_duplicate_names_in_the_default_registry_fail_at_import(self) -> None:
        """The decorator refuses a name another class already holds."""
        with pytest.raises(
            fabula.exceptions.DuplicateEventTypeError, match=r"tests\.OrderItemAdded"
        ):

            @fabula.event("tests.OrderItemAdded")
            @attrs.frozen
            class Impostor(DomainEvent):
                quantity: int

    def test_reregistering_the_same_definition_replaces_it(self) -> None:
        """Re-running a class definition (a module reload) replaces the registration."""
        registry = EventRegistry()

        def define() -> type[DomainEvent]:
            @fabula.event("t.Reloaded", registry=registry)
            @attrs.frozen
            class Reloaded(DomainEvent):
                value: int

            return Reloaded

        first, second = define(), define()
        assert first is not second
        assert registry.by_name("t.Reloaded").cls is second  # type: ignore[union-attr]
        with pytest.raises(fabula.exceptions.UnregisteredEventError):
            registry.by_class(first)

    def test_one_class_cannot_have_two_names(self) -> None:
        """Registering a class under a second name is refused."""
        registry = EventRegistry()
        registry.register(Renamed, "t.A")
        with pytest.raises(EventTypeError, match=r"already registered as 't\.A'"):
            registry.register(Renamed, "t.B")

    @pytest.mark.parametrize(
        ("name", "version", "match"),
        [("", 1, "non-empty"), ("  ", 1, "non-empty"), ("t.X", 0, ">= 1"), ("t.X", True, ">= 1")],
    )
    def test_bad_names_and_versions(self, name: str, version: int, match: str) -> None:
        """Empty names and versions below 1 are refused with the offending value."""
        with pytest.raises(EventTypeError, match=match):
            EventRegistry().register(Renamed, name, version=version)

    def test_non_events_are_refused(self) -> None:
        """Only attrs subclasses of DomainEvent can be registered."""
        with pytest.raises(EventTypeError, match=r"not a subclass of fabula\.DomainEvent"):
            EventRegistry().register(int, "t.Int")  # type: ignore[arg-type]

    def test_decorator_below_attrs_is_refused(self) -> None:
        """@fabula.event applied before @attrs.frozen (wrong order) is explained."""
        with pytest.raises(EventTypeError, match=r"above @fabula.event|below @fabula.event"):

            @attrs.frozen
            @fabula.event("t.WrongOrder", registry=EventRegistry())
            class WrongOrder(DomainEvent):
                value: int

    def test_redefining_base_fields_is_refused(self) -> None:
        """An event may not redefine the base fields."""
        with pytest.raises(EventTypeError, match="version"):

            @fabula.event("t.Shadow", registry=EventRegistry())
            @attrs.frozen
            class Shadow(DomainEvent):
                version: int = 3

    def test_unregistered_classes_are_named(self) -> None:
        """Looking up an unregistered class raises UnregisteredEventError naming it."""
        with pytest.raises(fabula.exceptions.UnregisteredEventError, match="Moved"):
            EventRegistry().by_class(Moved)

    def test_default_registry_holds_decorated_classes(self) -> None:
        """fabula.event registers in the default registry."""
        assert fabula.default_registry.by_class(OrderItemAdded).name == "tests.OrderItemAdded"
        assert fabula.default_registry.by_class(OrderSubmitted).version == 1

    def test_duplicate_upcasters_are_refused(self) -> None:
        """Two upcasters from one version of one event are refused."""
        registry = EventRegistry()
        registry.add_upcaster("t.X", 1, dict)
        with pytest.raises(EventTypeError, match="already registered"):
            registry.add_upcaster("t.X", 1, dict)
        with pytest.raises(EventTypeError, match="from_version"):
            registry.add_upcaster("t.X", 0, dict)
