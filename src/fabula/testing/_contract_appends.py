"""The EventStore contract, part one: appends, expected versions, atomicity, retries, bad input.

`EventStoreContract` (in `fabula.testing`) combines the parts; subclass it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import attrs
import pytest

from fabula._events import EventMetadata
from fabula._store import EventStore, ExpectedVersion, RecordedEvent, StreamAppend
from fabula.exceptions import (
    ConcurrencyError,
    DuplicateEventIdError,
    EmptyAppendError,
    EventVersionError,
    InvalidAppendError,
    InvalidReadError,
    NotAnEventError,
    SerializationError,
    StreamMismatchError,
)
from fabula.testing._contract_events import Deposited
from fabula.testing._suite import deposit, store_test

__all__ = ["AppendContract", "AtomicityContract", "BadInputContract"]

_store_test = store_test("event_store_factory")


def _ids(recorded: list[RecordedEvent]) -> list[Any]:
    return [r.event.event_id for r in recorded]


class AppendContract:
    """Appending and reading back; expected versions."""

    # -- append and read back ------------------------------------------------

    @_store_test
    async def test_append_then_read_stream_returns_the_events(self, store: EventStore) -> None:
        """Appended events read back equal, stamped with stream id and versions 1..n."""
        sent = [deposit(1, "a"), deposit(2, "b"), deposit(3, "c")]
        result = await store.append("acc-1", sent, expected_version=ExpectedVersion.NO_STREAM)
        assert (result.stream_id, result.version) == ("acc-1", 3)
        read = await store.read_stream("acc-1")
        expected = [attrs.evolve(e, aggregate_id="acc-1", version=n) for n, e in enumerate(sent, 1)]
        assert [r.event for r in read] == expected
        assert [r.stream_id for r in read] == ["acc-1"] * 3
        assert read[-1].position == result.position

    @_store_test
    async def test_events_keep_their_metadata_and_timestamps(self, store: EventStore) -> None:
        """Event ids, timestamps and metadata survive the round trip exactly."""
        meta = EventMetadata(correlation_id=uuid4(), causation_id=uuid4(), headers={"k": "v"})
        sent = Deposited(amount=Decimal("12.50"), metadata=meta)
        await store.append("acc-1", [sent], expected_version=0)
        (read,) = await store.read_stream("acc-1")
        assert read.event == attrs.evolve(sent, aggregate_id="acc-1", version=1)

    @_store_test
    async def test_any_text_in_an_event_round_trips_exactly(self, store: EventStore) -> None:
        """NUL, control characters, astral characters, in payload and headers: kept as sent.

        (Stream ids may not hold NUL: PostgreSQL's text cannot. Payloads are
        JSON, where NUL is written as an escape, so every store keeps it.)
        """
        text = "nul\x00 bell\x07 tab\t astral\U0001f600 bidi\u202e end"
        meta = EventMetadata(headers={"note": text, text: "key"})
        sent = Deposited(amount=Decimal(1), note=text, metadata=meta)
        first = await store.append("acc-1", [sent], expected_version=0)
        (read,) = await store.read_stream("acc-1")
        assert read.event == attrs.evolve(sent, aggregate_id="acc-1", version=1)
        assert await store.append("acc-1", [sent], expected_version=0) == first  # a retry

    @_store_test
    async def test_any_utc_offset_round_trips_exactly(self, store: EventStore) -> None:
        """Timestamps with sub-minute offsets (historical zones) read back as the same instant.

        A retry of such an append is still recognised as a retry.
        """
        odd = timezone(timedelta(hours=5, minutes=30, seconds=15))
        for n, stamp in enumerate(
            [
                datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=odd),
                datetime(1900, 6, 1, 12, tzinfo=timezone(timedelta(minutes=19, seconds=32))),
            ]
        ):
            sent = attrs.evolve(deposit(n), timestamp=stamp)
            first = await store.append(f"t-{n}", [sent], expected_version=0)
            (read,) = await store.read_stream(f"t-{n}")
            assert read.event.timestamp == stamp
            assert await store.append(f"t-{n}", [sent], expected_version=0) == first

    @_store_test
    async def test_versions_continue_across_appends(self, store: EventStore) -> None:
        """A second append continues the stream's versions."""
        await store.append("acc-1", [deposit()], expected_version=0)
        result = await store.append("acc-1", [deposit(), deposit()], expected_version=1)
        assert result.version == 3
        assert [r.event.version for r in await store.read_stream("acc-1")] == [1, 2, 3]

    @_store_test
    async def test_read_stream_from_version_and_limit(self, store: EventStore) -> None:
        """read_stream honours from_version and limit."""
        await store.append("acc-1", [deposit(n) for n in range(1, 6)], expected_version=0)
        window = await store.read_stream("acc-1", from_version=2, limit=2)
        assert [r.event.version for r in window] == [2, 3]
        assert [r.event.version for r in await store.read_stream("acc-1", from_version=5)] == [5]
        assert await store.read_stream("acc-1", from_version=6) == []

    @_store_test
    async def test_unknown_stream_reads_empty(self, store: EventStore) -> None:
        """Reading a stream that was never written returns no events."""
        assert await store.read_stream("nobody") == []

    @_store_test
    async def test_streams_are_separate(self, store: EventStore) -> None:
        """Events of one stream never appear in another."""
        await store.append("acc-1", [deposit(1)], expected_version=0)
        await store.append("acc-2", [deposit(2), deposit(3)], expected_version=0)
        assert [r.event.amount for r in await store.read_stream("acc-1")] == [1]  # type: ignore[attr-defined]
        assert len(await store.read_stream("acc-2")) == 2

    # -- expected versions ---------------------------------------------------

    @_store_test
    async def test_exact_expected_version_mismatch_raises(self, store: EventStore) -> None:
        """A wrong exact version raises ConcurrencyError with its context; nothing is written."""
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        with pytest.raises(ConcurrencyError) as info:
            await store.append("acc-1", [deposit()], expected_version=1)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == ("acc-1", 1, 2)
        assert len(await store.read_stream("acc-1")) == 2

    @_store_test
    async def test_expected_version_zero_means_new_stream(self, store: EventStore) -> None:
        """Exact version 0 and NO_STREAM refuse an existing stream."""
        await store.append("acc-1", [deposit()], expected_version=0)
        for expected in (0, ExpectedVersion.NO_STREAM):
            with pytest.raises(ConcurrencyError) as info:
                await store.append("acc-1", [deposit()], expected_version=expected)
            assert info.value.actual == 1

    @_store_test
    async def test_stream_exists_refuses_a_new_stream(self, store: EventStore) -> None:
        """STREAM_EXISTS fails on a missing stream and succeeds on an existing one."""
        with pytest.raises(ConcurrencyError) as info:
            await store.append("acc-1", [deposit()], expected_version=ExpectedVersion.STREAM_EXISTS)
        assert info.value.actual == 0
        assert await store.read_stream("acc-1") == []
        await store.append("acc-1", [deposit()], expected_version=0)
        result = await store.append(
            "acc-1", [deposit()], expected_version=ExpectedVersion.STREAM_EXISTS
        )
        assert result.version == 2

    @_store_test
    async def test_any_appends_whatever_the_version(self, store: EventStore) -> None:
        """ANY appends to new and existing streams alike."""
        await store.append("acc-1", [deposit()], expected_version=ExpectedVersion.ANY)
        result = await store.append("acc-1", [deposit()], expected_version=ExpectedVersion.ANY)
        assert result.version == 2

    @_store_test
    async def test_versioned_events_must_follow_the_stream(self, store: EventStore) -> None:
        """Events stamped for an older stream state conflict even under ANY."""
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        stale = attrs.evolve(deposit(), aggregate_id="acc-1", version=2)
        with pytest.raises(ConcurrencyError) as conflict:
            await store.append("acc-1", [stale], expected_version=ExpectedVersion.ANY)
        assert (conflict.value.expected, conflict.value.actual) == (1, 2)
        fresh = attrs.evolve(deposit(), aggregate_id="acc-1", version=3)
        assert (await store.append("acc-1", [fresh], expected_version=2)).version == 3

    @_store_test
    async def test_events_numbered_past_the_stream_are_invalid_not_a_conflict(
        self, store: EventStore
    ) -> None:
        """Version 5 on a stream at 1 is wrong numbering, not a race, whatever was expected."""
        await store.append("acc-1", [deposit()], expected_version=0)
        ahead = attrs.evolve(deposit(), aggregate_id="acc-1", version=5)
        for expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS, 1):
            with pytest.raises(EventVersionError, match="version 5 where version 2 is required"):
                await store.append("acc-1", [ahead], expected_version=expected)
        just_past = attrs.evolve(deposit(), aggregate_id="acc-1", version=3)  # one gap
        with pytest.raises(EventVersionError, match="version 3 where version 2 is required"):
            await store.append("acc-1", [just_past], expected_version=ExpectedVersion.ANY)
        new = attrs.evolve(deposit(), aggregate_id="acc-2", version=3)
        for expected in (ExpectedVersion.ANY, ExpectedVersion.NO_STREAM, 0):
            with pytest.raises(EventVersionError, match="version 3 where version 1 is required"):
                await store.append("acc-2", [new], expected_version=expected)
        assert len(await store.read_all()) == 1

    @_store_test
    async def test_a_batch_numbered_by_an_aggregate_is_stored_as_numbered(
        self, store: EventStore
    ) -> None:
        """Events already versioned 1, 2, 3 (as an aggregate records them) are stored so."""
        batch = [attrs.evolve(deposit(), aggregate_id="acc-1", version=n) for n in (1, 2, 3)]
        result = await store.append("acc-1", batch, expected_version=0)
        assert (result.version, [r.event.version for r in await store.read_stream("acc-1")]) == (
            3,
            [1, 2, 3],
        )
        fresh = [attrs.evolve(deposit(), aggregate_id="acc-3", version=n) for n in (1, 2)]
        new_stream = await store.append("acc-3", fresh, expected_version=ExpectedVersion.NO_STREAM)
        assert new_stream.version == 2
        more = [attrs.evolve(deposit(), aggregate_id="acc-1", version=n) for n in (4, 5)]
        assert (await store.append("acc-1", more, expected_version=3)).version == 5
        assert (
            await store.append("acc-2", [deposit(), deposit()], expected_version=0)
        ).version == 2


class AtomicityContract:
    """All or nothing, and retries that are recognised as such."""

    # -- atomicity and idempotency -------------------------------------------

    @_store_test
    async def test_a_failed_batch_writes_nothing(self, store: EventStore) -> None:
        """A batch with an unencodable event is refused whole."""
        bad = Deposited(amount=1.5)  # type: ignore[arg-type]
        with pytest.raises(SerializationError):
            await store.append("acc-1", [deposit(), bad], expected_version=0)
        assert await store.read_stream("acc-1") == []
        assert await store.read_all() == []

    @_store_test
    async def test_reappending_the_same_events_is_idempotent(self, store: EventStore) -> None:
        """A retry of a stored append returns the original result and adds nothing."""
        batch = [deposit(1), deposit(2)]
        first = await store.append("acc-1", batch, expected_version=0)
        await store.append("acc-1", [deposit(3)], expected_version=2)
        again = await store.append("acc-1", batch, expected_version=0)
        assert again == first
        assert len(await store.read_stream("acc-1")) == 3

    @_store_test
    async def test_a_retry_without_an_exact_version_is_idempotent(self, store: EventStore) -> None:
        """A retry under ANY or STREAM_EXISTS also returns the original result, adding nothing."""
        await store.append("acc-1", [deposit(1)], expected_version=0)
        for expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS):
            batch = [deposit(2), deposit(3)]
            first = await store.append("acc-1", batch, expected_version=expected)
            await store.append("acc-1", [deposit(4)], expected_version=ExpectedVersion.ANY)
            assert await store.append("acc-1", batch, expected_version=expected) == first
        assert [r.event.version for r in await store.read_stream("acc-1")] == [1, 2, 3, 4, 5, 6, 7]

    @_store_test
    async def test_reused_event_ids_otherwise_are_refused(self, store: EventStore) -> None:
        """Stored ids in another order, another stream or beside new events are refused."""
        a, b = deposit(1), deposit(2)
        await store.append("acc-1", [a, b], expected_version=0)
        for stream_id, batch in (
            ("acc-1", [b, a]),
            ("acc-2", [a]),
            ("acc-1", [a, deposit(3)]),
        ):
            with pytest.raises(DuplicateEventIdError):
                await store.append(stream_id, batch, expected_version=ExpectedVersion.ANY)
        assert _ids(await store.read_all()) == [a.event_id, b.event_id]

    @_store_test
    async def test_same_id_in_one_batch_is_refused(self, store: EventStore) -> None:
        """One event twice in a batch is refused."""
        a = deposit()
        with pytest.raises(DuplicateEventIdError):
            await store.append("acc-1", [a, a], expected_version=0)
        assert await store.read_all() == []

    @_store_test
    async def test_append_many_is_atomic(self, store: EventStore) -> None:
        """One conflicting stream makes append_many store nothing at all."""
        await store.append("acc-2", [deposit()], expected_version=0)
        with pytest.raises(ConcurrencyError):
            await store.append_many(
                [
                    StreamAppend("acc-1", [deposit()], expected_version=0),
                    StreamAppend("acc-2", [deposit()], expected_version=0),
                ]
            )
        assert await store.read_stream("acc-1") == []
        assert len(await store.read_all()) == 1

    @_store_test
    async def test_append_many_appends_every_stream(self, store: EventStore) -> None:
        """append_many returns one result per stream, in order."""
        results = await store.append_many(
            [
                StreamAppend("acc-1", [deposit(), deposit()], expected_version=0),
                StreamAppend("acc-2", [deposit()], expected_version=ExpectedVersion.NO_STREAM),
            ]
        )
        assert [(r.stream_id, r.version) for r in results] == [("acc-1", 2), ("acc-2", 1)]
        log = await store.read_all()
        assert [r.position for r in log][-1] == results[-1].position
        assert [r.stream_id for r in log] == ["acc-1", "acc-1", "acc-2"]

    @_store_test
    async def test_append_many_with_a_bad_event_later_writes_nothing(
        self, store: EventStore
    ) -> None:
        """An unencodable event in a later stream's part refuses the whole unit."""
        bad = Deposited(amount=float("nan"))  # type: ignore[arg-type]
        with pytest.raises(SerializationError):
            await store.append_many(
                [
                    StreamAppend("acc-1", [deposit()], expected_version=0),
                    StreamAppend("acc-2", [deposit(), bad], expected_version=0),
                ]
            )
        assert await store.read_all() == []

    @_store_test
    async def test_append_many_retry_is_idempotent(self, store: EventStore) -> None:
        """Repeating an append_many returns the original results and stores nothing new."""
        unit = [
            StreamAppend("acc-1", [deposit(1), deposit(2)], expected_version=0),
            StreamAppend("acc-2", [deposit(3)], expected_version=0),
        ]
        first = await store.append_many(unit)
        assert await store.append_many(unit) == first
        assert len(await store.read_all()) == 3

    @_store_test
    async def test_retry_with_changed_content_is_refused(self, store: EventStore) -> None:
        """Reusing stored event ids with other content is not a retry."""
        sent = deposit(1, "original")
        await store.append("acc-1", [sent], expected_version=0)
        changed = attrs.evolve(sent, note="changed")
        with pytest.raises(DuplicateEventIdError):
            await store.append("acc-1", [changed], expected_version=0)
        (stored,) = await store.read_stream("acc-1")
        assert stored.event.note == "original"  # type: ignore[attr-defined]

    @_store_test
    async def test_retry_must_repeat_the_expected_version(self, store: EventStore) -> None:
        """Stored events re-sent with an exact version that could not have stored them fail."""
        a, b = deposit(1), deposit(2)
        await store.append("acc-1", [a, b], expected_version=0)
        with pytest.raises(DuplicateEventIdError):
            await store.append("acc-1", [b], expected_version=0)
        for wrong in (1, 5):  # too high cannot have stored them either
            with pytest.raises(DuplicateEventIdError):
                await store.append("acc-1", [a, b], expected_version=wrong)
        assert len(await store.read_all()) == 2


class BadInputContract:
    """Bad arguments raise specific errors and change nothing."""

    # -- bad input -----------------------------------------------------------------

    @_store_test
    async def test_bad_appends_raise_specific_errors(self, store: EventStore) -> None:
        """Each kind of bad append raises its own error and writes nothing."""
        other = attrs.evolve(deposit(), aggregate_id="acc-2")
        gap = attrs.evolve(deposit(), version=5)
        cases: list[tuple[Any, object, type[Exception], str]] = [
            ([], 0, EmptyAppendError, "empty"),
            (None, 0, InvalidAppendError, "NoneType"),
            (deposit(), 0, InvalidAppendError, "Deposited"),
            (["not an event"], 0, NotAnEventError, "'not an event'"),
            ([deposit(), 42], 0, NotAnEventError, "42"),
            ([other], 0, StreamMismatchError, "acc-2"),
            ([gap], 0, EventVersionError, "version 5"),
            ([gap], ExpectedVersion.NO_STREAM, EventVersionError, "version 5"),
            ([deposit()], -1, InvalidAppendError, "-1"),
            ([deposit()], "1", InvalidAppendError, "'1'"),
        ]
        for events, expected, error, offending in cases:
            with pytest.raises(error) as info:
                await store.append("acc-1", events, expected_version=expected)  # type: ignore[arg-type]
            assert "acc-1" in str(info.value)
            assert offending in str(info.value)
        with pytest.raises(EmptyAppendError):
            await store.append_many([])
        assert await store.read_all() == []

    @_store_test
    async def test_badly_numbered_batches_are_refused(self, store: EventStore) -> None:
        """A numbered batch with a gap, a repeat or a mix of numbered and unnumbered is refused."""

        def numbered(*versions: int) -> list[Deposited]:
            return [attrs.evolve(deposit(), aggregate_id="acc-1", version=v) for v in versions]

        cases: list[tuple[list[Deposited], str]] = [
            (numbered(-1), "version -1 where version 1"),
            ([deposit(), *numbered(-1)], "version -1 where version 0"),
            (numbered(1, 3), "version 3 where version 2"),
            (numbered(1, 1), "version 1 where version 2"),
            (numbered(1, 2, 4), "version 4 where version 3"),
            (numbered(2, 1), "version 2 where version 1"),
            ([deposit(), *numbered(2)], "version 2 where version 0"),
            ([*numbered(1), deposit()], "version 0 where version 2"),
        ]
        with pytest.raises(EventVersionError, match="version -1 where version 1"):
            await store.append("acc-1", numbered(-1), expected_version=ExpectedVersion.ANY)
        for batch, offending in cases:
            with pytest.raises(EventVersionError, match=offending):
                await store.append("acc-1", batch, expected_version=0)
            for expected in (ExpectedVersion.ANY, ExpectedVersion.NO_STREAM):
                with pytest.raises(EventVersionError):
                    await store.append("acc-1", batch, expected_version=expected)
        assert await store.read_all() == []

    @_store_test
    async def test_numbering_is_checked_against_the_expected_version(
        self, store: EventStore
    ) -> None:
        """A numbered batch starts right after an exact expected version, or at 1 when new."""
        with pytest.raises(EventVersionError, match="version 2 where version 1"):
            await store.append(
                "acc-1",
                [attrs.evolve(deposit(), aggregate_id="acc-1", version=2)],
                expected_version=ExpectedVersion.NO_STREAM,
            )
        await store.append("acc-1", [deposit() for _ in range(3)], expected_version=0)
        early = attrs.evolve(deposit(), aggregate_id="acc-1", version=2)
        with pytest.raises(EventVersionError, match="version 2 where version 4"):
            await store.append("acc-1", [early], expected_version=3)
        assert len(await store.read_stream("acc-1")) == 3

    @_store_test
    async def test_numbering_holds_beyond_small_numbers(self, store: EventStore) -> None:
        """Versions in the hundreds are compared by value: 301 and 302 follow 300."""
        await store.append("acc-1", [deposit() for _ in range(300)], expected_version=0)
        batch = [attrs.evolve(deposit(), aggregate_id="acc-1", version=v) for v in (301, 302)]
        first = await store.append("acc-1", batch, expected_version=300)
        assert first.version == 302
        assert await store.append("acc-1", batch, expected_version=300) == first  # a retry
        assert await store.read_all(after=2**63 - 1) == []  # the largest position is allowed

    @_store_test
    async def test_an_event_of_another_aggregate_is_refused_whatever_its_id(
        self, store: EventStore
    ) -> None:
        """Events whose aggregate id sorts before or after the stream id are both refused."""
        for other in ("acc-0", "acc-2", "ACC-1", "acc-10"):
            with pytest.raises(StreamMismatchError, match=other):
                await store.append(
                    "acc-1", [attrs.evolve(deposit(), aggregate_id=other)], expected_version=0
                )
        assert await store.read_all() == []

    @_store_test
    async def test_stream_ids_must_be_text_every_store_can_hold(self, store: EventStore) -> None:
        """Empty, non-str, over 256 characters, a NUL, a lone surrogate: refused, saying why."""
        bad: list[tuple[object, str]] = [
            ("", "must not be empty"),
            (None, "must be a str, not NoneType"),
            (7, "must be a str, not int"),
            (b"acc-1", "must be a str, not bytes"),
            ("a" * 257, "must be at most 256 characters long, not 257"),
            ("x" * 1_000_000, "not 1000000"),
            ("acc\x00-1", "must not contain a NUL character"),
            ("acc-\udc80", "must be valid UTF-8"),
        ]
        for stream_id, why in bad:
            with pytest.raises(InvalidAppendError, match=why) as info:
                await store.append(stream_id, [deposit()], expected_version=0)  # type: ignore[arg-type]
            assert len(str(info.value)) < 300  # the message does not hold the whole id
            assert info.value.stream_id == (
                stream_id if isinstance(stream_id, str) else repr(stream_id)
            )
            with pytest.raises(InvalidAppendError, match=why):
                await store.append_many(
                    [StreamAppend(stream_id, [deposit()], expected_version=0)]  # type: ignore[arg-type]
                )
            with pytest.raises(InvalidReadError, match=why) as read:
                await store.read_stream(stream_id)  # type: ignore[arg-type]
            assert len(str(read.value)) < 300
        assert await store.read_all() == []

    @_store_test
    async def test_the_longest_and_the_widest_stream_ids_are_kept(self, store: EventStore) -> None:
        """256 characters, of up to four UTF-8 bytes each, are stored and read back exactly."""
        for stream_id in ("a" * 256, "\U0001f600" * 256, "tab\there é\u200b"):
            await store.append(stream_id, [deposit()], expected_version=0)
            (recorded,) = await store.read_stream(stream_id)
            assert recorded.stream_id == stream_id

    @_store_test
    async def test_bad_reads_raise_invalid_read_error(self, store: EventStore) -> None:
        """Negative positions and non-positive limits are refused, naming the value."""
        calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: store.read_all(after=-1), "after=-1"),
            (lambda: store.read_all(limit=0), "limit=0"),
            (lambda: store.read_all(limit=-5), "limit=-5"),
            (lambda: store.read_stream("acc-1", from_version=0), "from_version=0"),
            (lambda: store.read_stream("acc-1", limit=0), "limit=0"),
            (lambda: anext(aiter(store.subscribe(after=-1))), "after=-1"),
            (lambda: store.read_all(after=2**63), "2**63"),
            (lambda: store.read_all(limit=2**63), "2**63"),
            (lambda: store.read_stream("acc-1", from_version=2**63), "2**63"),
            (lambda: store.read_stream("acc-1", limit=2**63), "2**63"),
            (lambda: store.read_all(event_types=[""]), "''"),
            (lambda: store.read_all(event_types=["bad\udc80"]), "bad"),
            (lambda: store.read_all(event_types=[42]), "42"),  # type: ignore[arg-type]
            (lambda: store.read_all(event_types=["n" * 1025]), "nnn"),
        ]
        for call, offending in calls:
            with pytest.raises(InvalidReadError) as info:
                await call()
            assert offending in str(info.value)
        assert await store.read_all(event_types=["n" * 1024]) == []  # long, but a name

    @_store_test
    async def test_store_works_as_an_async_context_manager(self, store: EventStore) -> None:
        """`async with store:` returns the store itself."""
        async with store as entered:
            assert entered is store
            await store.append("acc-1", [deposit()], expected_version=0)
