"""The IdempotencyStore contract: a key's record and its command's events, all or nothing.

Subclass `IdempotencyStoreContract` beside `EventStoreContract`; it builds
its stores with the `idempotency_store_factory` fixture, which by default
is your `event_store_factory`. The stores must be event stores too: the
records are kept with the events they were appended with.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import pytest

from fabula._idempotency import IdempotencyRecord, IdempotencyStore
from fabula._store import StreamAppend
from fabula.exceptions import ConcurrencyError, IdempotencyKeyTakenError
from fabula.testing._suite import deposit, store_test

__all__ = ["IdempotencyStoreContract"]

_test = store_test("idempotency_store_factory")
_Store: TypeAlias = Any  # an IdempotencyStore that is also an EventStore


def _record(
    key: str = "key-1",
    *,
    at: datetime | None = None,
    keep: timedelta | None = timedelta(hours=1),
    result: str = '"first"',
) -> IdempotencyRecord:
    created = datetime.now(UTC) if at is None else at
    expires = None if keep is None else created + keep
    return IdempotencyRecord(key, "fingerprint-1", result, created, expires)


def _append(stream_id: str, expected: int = 0) -> list[StreamAppend]:
    return [StreamAppend(stream_id, [deposit()], expected_version=expected)]


class IdempotencyStoreContract:
    """The idempotency store contract suite (see the module docstring for use)."""

    @pytest.fixture
    def idempotency_store_factory(self, event_store_factory: Any) -> Any:  # noqa: ANN401 - the fixture's value
        """Override to build idempotency stores another way (default: `event_store_factory`)."""
        return event_store_factory

    @_test
    async def test_is_an_idempotency_store(self, store: _Store) -> None:
        """The store implements the IdempotencyStore protocol."""
        assert isinstance(store, IdempotencyStore)

    @_test
    async def test_an_unknown_key_has_no_record(self, store: _Store) -> None:
        """load_record of a key never used is None."""
        assert await store.load_record("never") is None

    @_test
    async def test_events_and_record_are_kept_together(self, store: _Store) -> None:
        """append_with_record stores the events and the record, and returns the results."""
        record = _record(keep=None)
        results = await store.append_with_record(_append("acc-1"), record)
        assert [(r.stream_id, r.version) for r in results] == [("acc-1", 1)]
        assert len(await store.read_stream("acc-1")) == 1
        assert await store.load_record("key-1") == record

    @_test
    async def test_a_record_without_events_is_kept(self, store: _Store) -> None:
        """A command that recorded no events still keeps its key."""
        record = _record()
        assert await store.append_with_record([], record) == []
        assert await store.load_record("key-1") == record

    @_test
    async def test_a_taken_key_is_refused_and_writes_nothing(self, store: _Store) -> None:
        """An unexpired key raises IdempotencyKeyTakenError with its record; no event is added."""
        first = _record()
        await store.append_with_record(_append("acc-1"), first)
        with pytest.raises(IdempotencyKeyTakenError) as taken:
            await store.append_with_record(_append("acc-2"), _record(result='"second"'))
        assert taken.value.record == first
        assert await store.read_stream("acc-2") == []
        assert await store.load_record("key-1") == first

    @_test
    async def test_an_expired_key_can_be_used_again(self, store: _Store) -> None:
        """Once a record has expired, the key takes a new record and new events."""
        past = datetime.now(UTC) - timedelta(hours=2)
        await store.append_with_record(_append("acc-1"), _record(at=past))
        again = _record(result='"again"')
        await store.append_with_record(_append("acc-2"), again)
        assert await store.load_record("key-1") == again
        assert len(await store.read_stream("acc-2")) == 1

    @_test
    async def test_a_failed_append_keeps_no_record(self, store: _Store) -> None:
        """When an append's expected version fails, neither its events nor its key are kept."""
        await store.append("acc-1", [deposit()], expected_version=0)
        with pytest.raises(ConcurrencyError):
            await store.append_with_record(_append("acc-1", expected=0), _record())
        assert await store.load_record("key-1") is None
        assert len(await store.read_stream("acc-1")) == 1

    @_test
    async def test_concurrent_claims_of_one_key_have_one_winner(self, store: _Store) -> None:
        """Of several commands racing with one key, exactly one stores its events."""
        outcomes = await asyncio.gather(
            *(store.append_with_record(_append(f"acc-{n}"), _record()) for n in range(5)),
            return_exceptions=True,
        )
        won = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, list)]
        assert len(won) == 1
        assert all(
            isinstance(o, IdempotencyKeyTakenError) for o in outcomes if not isinstance(o, list)
        )
        stored = [n for n in range(5) if await store.read_stream(f"acc-{n}")]
        assert stored == won

    @_test
    async def test_times_round_trip_as_the_same_instants(self, store: _Store) -> None:
        """created_at and expires_at come back timezone-aware and equal to what was saved."""
        moment = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
        record = _record(at=moment, keep=timedelta(days=400))
        await store.append_with_record([], record)
        loaded = await store.load_record("key-1")
        assert loaded is not None
        assert loaded.created_at.tzinfo is not None
        assert (loaded.created_at, loaded.expires_at) == (record.created_at, record.expires_at)
