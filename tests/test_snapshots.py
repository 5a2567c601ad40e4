"""Snapshots: taken every N events, loaded with newer events, never trusted when unreadable."""

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import attrs
import pytest

import fabula
from fabula import Repository
from fabula.memory import InMemoryEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.storage import Snapshot, SnapshotCodec

from .support.domain import ADDRESS, Order

PRODUCT = uuid4()


@fabula.event("tests.snapshots.Reading")
@attrs.frozen
class Reading(fabula.DomainEvent):
    text: str


@attrs.define
class Gauge(fabula.Aggregate):
    last: float = 0.0

    @fabula.apply
    def _read(self, event: Reading) -> None:
        self.last = float(event.text)


class Meter(fabula.Aggregate):
    """Not an attrs class: its state cannot be snapshotted."""

    last = 0.0

    @fabula.apply
    def _read(self, event: Reading) -> None:
        self.last = float(event.text)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[fabula.EventStore]:
    built: fabula.EventStore
    if request.param == "memory":
        built = InMemoryEventStore()
    else:
        built = SQLiteEventStore(tmp_path / "events.db")
    yield built
    await built.close()


async def order_with(repo: Repository, items: int) -> Order:
    """Save an order, then add `items` items one save at a time."""
    order = Order.create(uuid4(), ADDRESS)
    await repo.save(order)
    for n in range(items):
        order.add_item(PRODUCT, 1, Decimal(n))
        await repo.save(order)
    return order


class TestSnapshots:
    async def test_snapshot_every_n_events(self, store: fabula.storage.SnapshotStore) -> None:
        """A snapshot is taken each time a save crosses a multiple of N."""
        repo = Repository(store, snapshot_every={Order: 5})  # type: ignore[arg-type]
        order = await order_with(repo, 11)
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        assert (snapshot.version, snapshot.schema_version) == (10, 1)
        assert snapshot.aggregate_type == "tests.support.domain.Order"

    async def test_loading_from_a_snapshot_equals_full_replay(
        self, store: fabula.EventStore
    ) -> None:
        """An aggregate loaded from snapshot + newer events equals one replayed in full."""
        with_snapshots = Repository(store, snapshot_every=4)
        order = await order_with(with_snapshots, 9)
        from_snapshot = await with_snapshots.get(Order, order.id)
        full = await Repository(store).get(Order, order.id)
        assert from_snapshot == full == order
        assert from_snapshot.version == 10

    async def test_loading_uses_the_snapshot(self, store: fabula.storage.SnapshotStore) -> None:
        """The loaded state comes from the snapshot: a doctored snapshot shows through."""
        repo = Repository(store, snapshot_every=3)  # type: ignore[arg-type]
        order = await order_with(repo, 3)
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        assert snapshot.version == 3
        doctored = attrs.evolve(
            snapshot, version=4, state=snapshot.state.replace('"draft"', '"submitted"')
        )
        await store.save_snapshot(doctored)
        loaded = await repo.get(Order, order.id)
        assert (loaded.status.value, loaded.version) == ("submitted", 4)

    async def test_past_version_256_the_snapshot_and_the_events_after_it_load(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The snapshot's own event is found by version, and only the newer events are applied."""
        repo = Repository(store, snapshot_every=300)  # type: ignore[arg-type]
        order = Order.create(uuid4(), ADDRESS)
        for n in range(299):
            order.add_item(PRODUCT, 1, Decimal(n % 7))
        await repo.save(order)  # versions 1..300 in one save: a snapshot at 300
        order.add_item(PRODUCT, 1, Decimal(1))
        order.add_item(PRODUCT, 1, Decimal(1))
        await repo.save(order)  # 301 and 302: no snapshot
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        assert snapshot.version == 300
        # Labelled 301 and submitted: only event 302 is applied on top of it.
        doctored = snapshot.state.replace('"draft"', '"submitted"')
        await store.save_snapshot(attrs.evolve(snapshot, version=301, state=doctored))
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            loaded = await repo.get(Order, order.id)
        assert caplog.text == ""
        assert (loaded.status.value, loaded.version) == ("submitted", 302)
        assert loaded.lines[PRODUCT].quantity == 300

    async def test_no_snapshot_between_two_multiples(
        self, store: fabula.storage.SnapshotStore
    ) -> None:
        """A save that crosses no multiple of N takes no snapshot, at any version."""
        repo = Repository(store, snapshot_every=2)  # type: ignore[arg-type]
        order = Order.create(uuid4(), ADDRESS)
        for _ in range(599):
            order.add_item(PRODUCT, 1, Decimal(1))
        await repo.save(order)  # version 600: a snapshot
        order.add_item(PRODUCT, 1, Decimal(1))
        await repo.save(order)  # version 601: none
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        assert snapshot.version == 600

    async def test_an_interval_of_one_snapshots_every_save(
        self, store: fabula.storage.SnapshotStore
    ) -> None:
        """snapshot_every=1 is allowed: each save leaves a snapshot of its version."""
        repo = Repository(store, snapshot_every=1)  # type: ignore[arg-type]
        order = Order.create(uuid4(), ADDRESS)
        await repo.save(order)
        versions = []
        for _ in range(3):
            order.add_item(PRODUCT, 1, Decimal(1))
            await repo.save(order)
            snapshot = await store.load_snapshot(str(order.id))
            versions.append(None if snapshot is None else snapshot.version)
        assert versions == [2, 3, 4]

    async def test_a_snapshot_beyond_the_stream_is_ignored(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshot of a version the stream does not have is never trusted."""
        repo = Repository(store, snapshot_every=2)  # type: ignore[arg-type]
        order = await order_with(repo, 1)
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        await store.save_snapshot(attrs.evolve(snapshot, version=40))
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            loaded = await repo.get(Order, order.id)
        assert loaded == order
        assert "no event of that version" in caplog.text
        loaded.add_item(PRODUCT, 1, Decimal(1))
        await repo.save(loaded)

    async def test_unreadable_snapshot_is_ignored_with_a_warning(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshot whose state does not decode is ignored: full replay and a warning."""
        repo = Repository(store, snapshot_every=3)  # type: ignore[arg-type]
        order = await order_with(repo, 5)
        broken = Snapshot(str(order.id), "tests.support.domain.Order", 99, 1, '{"status": 12}')
        await store.save_snapshot(broken)
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            loaded = await repo.get(Order, order.id)
        assert loaded == order
        assert "does not decode" in caplog.text

    async def test_snapshot_of_another_version_is_ignored(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshot written under another snapshot_version is never trusted."""
        repo = Repository(store, snapshot_every=2)  # type: ignore[arg-type]
        order = await order_with(repo, 3)
        snapshot = await store.load_snapshot(str(order.id))
        assert snapshot is not None
        await store.save_snapshot(attrs.evolve(snapshot, schema_version=7, version=50))
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            assert await repo.get(Order, order.id) == order
        assert "snapshot_version 7 is not 1" in caplog.text

    async def test_older_snapshots_do_not_replace_newer(
        self, store: fabula.storage.SnapshotStore
    ) -> None:
        """save_snapshot keeps the snapshot of the highest version."""
        await store.save_snapshot(Snapshot("s", "T", 10, 1, "{}"))
        await store.save_snapshot(Snapshot("s", "T", 5, 1, '{"old": 1}'))
        assert await store.load_snapshot("s") == Snapshot("s", "T", 10, 1, "{}")
        assert await store.load_snapshot("other") is None

    async def test_no_snapshots_without_configuration(
        self, store: fabula.storage.SnapshotStore
    ) -> None:
        """With snapshot_every unset nothing is snapshotted."""
        order = await order_with(Repository(store), 6)  # type: ignore[arg-type]
        assert await store.load_snapshot(str(order.id)) is None

    async def test_a_snapshot_that_cannot_be_taken_is_logged_and_the_save_stands(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """State JSON cannot hold (an infinite float) costs the snapshot, never the events."""
        repo = Repository(store, snapshot_every=2)  # type: ignore[arg-type]
        gauge = Gauge(id=uuid4())
        gauge.record(Reading(text="1.5"))
        gauge.record(Reading(text="inf"))
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            (result,) = await repo.save(gauge)
        assert result.version == 2
        assert gauge.pending_events == ()
        assert f"could not snapshot Gauge {gauge.id} at version 2" in caplog.text
        assert "not finite" in caplog.text
        assert await store.load_snapshot(str(gauge.id)) is None
        loaded = await repo.get(Gauge, gauge.id)
        assert (loaded.version, loaded.last) == (2, float("inf"))

    async def test_a_snapshot_of_a_plain_class_is_logged_and_the_save_stands(
        self, store: fabula.storage.SnapshotStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An aggregate that is no attrs class cannot be snapshotted: a warning, not an error."""
        repo = Repository(store, snapshot_every=1)  # type: ignore[arg-type]
        meter = Meter(id=uuid4())
        meter.record(Reading(text="2"))
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            (result,) = await repo.save(meter)
        assert result.version == 1
        (record,) = caplog.records
        assert "could not snapshot Meter" in record.getMessage()
        assert record.exc_info is not None
        assert "attrs aggregate" in str(record.exc_info[1])
        assert (await repo.get(Meter, meter.id)).last == 2.0

    async def test_a_snapshot_the_store_refuses_is_logged_and_the_save_stands(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store error while saving the snapshot (here a trigger refusing it) loses no event."""
        path = tmp_path / "events.db"
        async with SQLiteEventStore(path) as store:
            await store.save_snapshot(Snapshot("warm-up", "T", 1, 1, "{}"))  # the schema exists
            with contextlib.closing(sqlite3.connect(path)) as other, other:
                other.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON fabula_snapshots "
                    "BEGIN SELECT RAISE(ABORT, 'snapshots refused'); END"
                )
            repo = Repository(store, snapshot_every=1)
            order = Order.create(uuid4(), ADDRESS)
            with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
                (result,) = await repo.save(order)
            assert result.version == 1
            (record,) = caplog.records
            assert f"could not snapshot Order {order.id} at version 1" in record.getMessage()
            assert record.exc_info is not None
            assert isinstance(record.exc_info[1], fabula.StoreError)
            assert "snapshots refused" in str(record.exc_info[1])
            assert await store.load_snapshot(str(order.id)) is None
            assert await repo.get(Order, order.id) == order


class TestConfiguration:
    @pytest.mark.parametrize("bad", [0, -3, True, "5"])
    def test_intervals_must_be_positive_ints(self, bad: object) -> None:
        """snapshot_every must be a positive int."""
        with pytest.raises((TypeError, ValueError), match="positive int"):
            Repository(InMemoryEventStore(), snapshot_every=bad)  # type: ignore[arg-type]

    def test_snapshot_types_must_be_attrs_aggregates(self) -> None:
        """Per-type intervals are only accepted for attrs aggregates."""

        class Plain(fabula.Aggregate):
            pass

        with pytest.raises(TypeError, match="attrs subclasses"):
            Repository(InMemoryEventStore(), snapshot_every={Plain: 5})

    @pytest.mark.parametrize("version", [-1, -40])
    def test_negative_versions_are_not_trusted(
        self, version: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A snapshot with an impossible version decodes to None with a warning."""
        order_id = uuid4()
        snapshot = Snapshot(str(order_id), "tests.support.domain.Order", version, 1, "{}")
        with caplog.at_level(logging.WARNING, logger="fabula.snapshots"):
            assert SnapshotCodec().decode(snapshot, Order, order_id) is None
        assert f"cannot restore version {version}" in caplog.text

    def test_codec_refuses_pending_events(self) -> None:
        """A snapshot is of saved state only."""
        with pytest.raises(TypeError, match="pending"):
            SnapshotCodec().encode(Order.create(uuid4(), ADDRESS))
