"""The SnapshotStore contract: the latest snapshot of each stream, never an older one.

Subclass `SnapshotStoreContract` beside `EventStoreContract`; it builds its
stores with the `snapshot_store_factory` fixture, which by default is your
`event_store_factory`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fabula._snapshots import Snapshot, SnapshotStore
from fabula.testing._suite import store_test

__all__ = ["SnapshotStoreContract"]

_test = store_test("snapshot_store_factory")


def _snapshot(version: int, stream_id: str = "acc-1", state: str = '{"n":1}') -> Snapshot:
    return Snapshot(stream_id, "tests.Account", version, 1, state)


class SnapshotStoreContract:
    """The snapshot store contract suite (see the module docstring for use)."""

    @pytest.fixture
    def snapshot_store_factory(self, event_store_factory: Any) -> Any:  # noqa: ANN401 - the fixture's value
        """Override to build snapshot stores another way (default: `event_store_factory`)."""
        return event_store_factory

    @_test
    async def test_is_a_snapshot_store(self, store: SnapshotStore) -> None:
        """The store implements the SnapshotStore protocol."""
        assert isinstance(store, SnapshotStore)

    @_test
    async def test_a_stream_without_a_snapshot_loads_none(self, store: SnapshotStore) -> None:
        """load_snapshot of a stream never snapshotted is None."""
        assert await store.load_snapshot("acc-1") is None

    @_test
    async def test_a_snapshot_round_trips_exactly(self, store: SnapshotStore) -> None:
        """Every field comes back as saved, the state's text included."""
        saved = Snapshot("acc-1", "tests.Account", 7, 3, '{"owner":"Zoë 🎉","total":"1.10"}')
        await store.save_snapshot(saved)
        assert await store.load_snapshot("acc-1") == saved

    @_test
    async def test_a_later_snapshot_replaces_an_earlier_one(self, store: SnapshotStore) -> None:
        """Saving a higher version replaces the stored snapshot."""
        await store.save_snapshot(_snapshot(5))
        await store.save_snapshot(_snapshot(9, state='{"n":9}'))
        assert await store.load_snapshot("acc-1") == _snapshot(9, state='{"n":9}')

    @_test
    async def test_an_older_or_equal_snapshot_never_replaces(self, store: SnapshotStore) -> None:
        """Saving a lower or equal version keeps the snapshot already stored."""
        await store.save_snapshot(_snapshot(9))
        await store.save_snapshot(_snapshot(4, state='{"n":4}'))
        await store.save_snapshot(_snapshot(9, state='{"n":"other"}'))
        assert await store.load_snapshot("acc-1") == _snapshot(9)

    @_test
    async def test_snapshots_are_kept_per_stream(self, store: SnapshotStore) -> None:
        """Each stream has its own latest snapshot."""
        await store.save_snapshot(_snapshot(3, "acc-1"))
        await store.save_snapshot(_snapshot(8, "acc-2"))
        assert await store.load_snapshot("acc-1") == _snapshot(3, "acc-1")
        assert await store.load_snapshot("acc-2") == _snapshot(8, "acc-2")

    @_test
    async def test_concurrent_saves_keep_the_highest_version(self, store: SnapshotStore) -> None:
        """Whatever order concurrent saves land in, the highest version is what stays."""
        await asyncio.gather(*(store.save_snapshot(_snapshot(v)) for v in (4, 9, 2, 7, 5)))
        assert await store.load_snapshot("acc-1") == _snapshot(9)
