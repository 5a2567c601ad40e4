"""fabula's stores implement each protocol they claim exactly: same parameters, kinds, defaults."""

import inspect

import pytest

import fabula
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.storage import (
    IdempotencyStore,
    ProjectionLeases,
    ProjectionStore,
    SerializingStore,
    SnapshotStore,
)

PROTOCOLS: list[type] = [
    fabula.EventStore,
    ProjectionStore,
    SnapshotStore,
    IdempotencyStore,
]
STORES: list[type] = [InMemoryEventStore, SQLiteEventStore, PostgresEventStore]


def methods(protocol: type) -> list[str]:
    """The methods a protocol declares in its own body (async with included)."""
    return sorted(
        name
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and (not name.startswith("_") or name.startswith("__a"))
    )


def shape(function: object) -> list[tuple[str, object, object]]:
    """Each parameter's name, kind and default: what callers rely on."""
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("store", STORES, ids=lambda s: s.__name__)
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_stores_take_the_protocols_arguments(store: type, protocol: type) -> None:
    """Every method of the protocol has, in the store, the same parameters and defaults."""
    assert methods(protocol)
    different = {
        name: (shape(getattr(protocol, name)), shape(getattr(store, name)))
        for name in methods(protocol)
        if shape(getattr(protocol, name)) != shape(getattr(store, name))
    }
    assert different == {}


def test_the_postgresql_store_offers_leases_as_declared() -> None:
    """The lease method matches ProjectionLeases, the only protocol of a store there."""
    assert shape(PostgresEventStore.projection_lease) == shape(ProjectionLeases.projection_lease)
    assert not hasattr(SQLiteEventStore, "projection_lease")


async def test_every_store_names_its_serializer() -> None:
    """Each store is a SerializingStore, so tools can read its stored names."""
    stores: list[InMemoryEventStore | SQLiteEventStore | PostgresEventStore] = [
        InMemoryEventStore(),
        SQLiteEventStore(":memory:"),
        PostgresEventStore("postgresql://nowhere.invalid/none"),  # not opened: no server needed
    ]
    try:
        assert all(isinstance(store, SerializingStore) for store in stores)
    finally:
        for store in stores:
            await store.close()


def test_a_stream_append_names_its_expected_version() -> None:
    """StreamAppend's expected_version is keyword-only: a bare number could be anything."""
    with pytest.raises(TypeError):
        fabula.StreamAppend("acc-1", [], 0)  # type: ignore[call-arg] # the point of the test
    assert fabula.StreamAppend("acc-1", [], expected_version=0).expected_version == 0
