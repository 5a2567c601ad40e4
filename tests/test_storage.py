"""The decisions `fabula.storage` gives store authors: checked batches and duplicate ids."""

from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import attrs
import pytest

from fabula import DomainEvent, EventSerializer, ExpectedVersion, StreamAppend
from fabula.exceptions import DuplicateEventIdError
from fabula.storage import (
    PendingAppend,
    StoredEvent,
    decode_rows,
    explain_duplicate,
    match_retry,
    prepare_append,
    prepare_appends,
)
from fabula.testing import Deposited, deposit

from .support.domain import OrderItemAdded

SERIALIZER = EventSerializer()


def numbered(*versions: int) -> list[Deposited]:
    return [attrs.evolve(deposit(), version=v) for v in versions]


class TestPendingAppend:
    def test_first_version_is_the_first_events_own(self) -> None:
        """A batch numbered by an aggregate starts at its first event's version; else 0."""
        (part,) = prepare_append("acc-1", numbered(3, 4, 5), 2, SERIALIZER)
        assert part.first_version == 3
        (part,) = prepare_append("acc-1", [deposit(), deposit()], 2, SERIALIZER)
        assert part.first_version == 0
        assert [r.event_id for r in part.records] == [e.event_id for e in part.events]


class TestDuplicateIds:
    @pytest.mark.parametrize("parts", [2, 3])
    def test_an_id_repeated_across_parts_is_refused_before_any_write(self, parts: int) -> None:
        """The repeat is named in the part where it repeats, whichever part that is."""
        repeated = deposit()
        appends = [
            StreamAppend(f"acc-{n}", [deposit()], expected_version=0) for n in range(parts - 1)
        ]
        appends[0] = StreamAppend("acc-0", [repeated], expected_version=0)
        appends.append(
            StreamAppend("acc-last", [deposit(), attrs.evolve(repeated)], expected_version=0)
        )
        with pytest.raises(DuplicateEventIdError) as info:
            prepare_appends(appends, SERIALIZER)
        assert info.value.event_id == repeated.event_id
        assert info.value.stream_id == "acc-last"
        assert "earlier in the same append_many" in str(info.value)

    def test_the_violation_names_where_the_id_is_stored(self) -> None:
        """Stored in another stream, in this one, or nowhere to be found (a racing writer)."""
        parts = prepare_appends(
            [
                StreamAppend("acc-1", [deposit(), deposit()], expected_version=0),
                StreamAppend("acc-2", [deposit()], expected_version=0),
            ],
            SERIALIZER,
        )
        first, second = parts[0].records[0].event_id, parts[1].records[0].event_id
        for other in ("acc-9", "acc-0"):  # sorting after the stream and before it
            elsewhere = explain_duplicate(parts, {second: other})
            assert (elsewhere.stream_id, elsewhere.event_id) == ("acc-2", second)
            assert f"in stream {other!r}, and this batch is not a retry" in str(elsewhere)
        same = "".join(["acc", "-1"])  # noqa: FLY002 - equal to the stream id, not the same object
        here = explain_duplicate(parts, {first: same})
        assert (here.stream_id, here.event_id) == ("acc-1", first)
        assert "in this stream" in str(here)
        racing = explain_duplicate(parts, {})
        assert (racing.stream_id, racing.event_id) == ("acc-1", first)
        assert str(racing).endswith("stored concurrently")


def stored_as(
    part: PendingAppend, *, stream_id: str, versions: list[int]
) -> dict[UUID, StoredEvent]:
    """The part's records as a store would hold them, at `versions` in `stream_id`."""
    return {
        record.event_id: StoredEvent(
            position=version,
            stream_id=stream_id,
            version=version,
            event_id=record.event_id,
            type_name=record.type_name,
            schema_version=record.schema_version,
            timestamp=record.timestamp,
            data=record.data,
            metadata=record.metadata,
        )
        for record, version in zip(part.records, versions, strict=True)
    }


class TestMatchRetry:
    def test_a_retry_of_the_stored_append_gets_its_result(self) -> None:
        (part,) = prepare_append("acc-1", [deposit(1), deposit(2)], 4, SERIALIZER)
        result = match_retry(part, stored_as(part, stream_id="acc-1", versions=[5, 6]))
        assert result is not None
        assert (result.stream_id, result.version, result.position) == ("acc-1", 6, 6)
        assert match_retry(part, {}) is None

    @pytest.mark.parametrize("other", ["acc-0", "acc-2"])
    def test_the_same_ids_in_another_stream_are_no_retry(self, other: str) -> None:
        (part,) = prepare_append("acc-1", [deposit(1), deposit(2)], 4, SERIALIZER)
        with pytest.raises(DuplicateEventIdError, match=f"in stream {other!r}"):
            match_retry(part, stored_as(part, stream_id=other, versions=[5, 6]))

    @pytest.mark.parametrize("versions", [[5, 7], [6, 5]])
    def test_events_stored_apart_or_swapped_are_no_retry(self, versions: list[int]) -> None:
        """Stored with a gap between them (two appends), or in the other order."""
        (part,) = prepare_append("acc-1", [deposit(1), deposit(2)], ExpectedVersion.ANY, SERIALIZER)
        with pytest.raises(DuplicateEventIdError, match="another order"):
            match_retry(part, stored_as(part, stream_id="acc-1", versions=versions))

    @pytest.mark.parametrize("stored_amount", ["1", "3"])
    def test_other_content_under_the_same_ids_is_no_retry(self, stored_amount: str) -> None:
        """Whether the stored JSON sorts before or after the retry's, it is not the same."""
        event = deposit(2)
        (part,) = prepare_append("acc-1", [event], 0, SERIALIZER)
        (other,) = prepare_append(
            "acc-1", [attrs.evolve(event, amount=Decimal(stored_amount))], 0, SERIALIZER
        )
        with pytest.raises(DuplicateEventIdError, match="other content"):
            match_retry(part, stored_as(other, stream_id="acc-1", versions=[1]))


class TestDecodeRows:
    """`decode_rows`: a store's rows to `RecordedEvent`s, on the generated decoders."""

    @staticmethod
    def row(position: int, event: DomainEvent[Any], stream_id: str) -> tuple[Any, ...]:
        """The row a SQL store keeps for `event`, in `decode_rows`' column order."""
        record = SERIALIZER.encode(event)
        return (
            position,
            stream_id,
            event.version,
            record.event_id,
            record.type_name,
            record.schema_version,
            record.timestamp,
            record.data,
            record.metadata,
        )

    def rows(self) -> list[tuple[Any, ...]]:
        """Two UUID streams and a text stream, interleaved, as a log would hold them."""
        first, second = uuid4(), uuid4()
        # The last row: a stream whose id is a UUID's text may hold events of a
        # class with text ids too; the same stream id then stands for a str.
        order: list[tuple[UUID | str, int]] = [
            (first, 1), (first, 2), (second, 1), ("acc-1", 1), (first, 3), (second, 2),
            (str(second), 3),
        ]  # fmt: skip
        out = []
        for position, (stream, version) in enumerate(order, start=1):
            event: DomainEvent[Any]
            if isinstance(stream, UUID):
                event = OrderItemAdded(
                    product_id=uuid4(),
                    quantity=position,
                    unit_price=Decimal("1.50"),
                    aggregate_id=stream,
                    version=version,
                )
            else:
                event = attrs.evolve(deposit(position), aggregate_id=stream, version=version)
            out.append(self.row(position, event, str(stream)))
        return out

    def test_each_event_carries_its_own_streams_id(self) -> None:
        """Streams interleaved: every event gets its stream's id, typed as its class declares."""
        rows = self.rows()
        decoded = decode_rows(SERIALIZER, rows, event_id=lambda i: i, timestamp=lambda t: t)
        for recorded, row in zip(decoded, rows, strict=True):
            stream_id = row[1]
            assert recorded.stream_id == stream_id
            assert str(recorded.event.aggregate_id) == stream_id
            expected_type = str if isinstance(recorded.event, Deposited) else UUID
            assert type(recorded.event.aggregate_id) is expected_type
            assert recorded.position == row[0]
            assert recorded.event.version == row[2]

    def test_the_same_events_as_the_checked_decode(self) -> None:
        """Row by row, equal to what `EventSerializer.decode_fields` makes."""
        rows = self.rows()
        decoded = decode_rows(SERIALIZER, rows, event_id=lambda i: i, timestamp=lambda t: t)
        for recorded, row in zip(decoded, rows, strict=True):
            position, stream_id, version, event_id, type_name, schema, stamp, data, meta = row
            assert recorded.event == SERIALIZER.decode_fields(
                type_name=type_name, schema_version=schema, event_id=event_id, timestamp=stamp,
                data=data, metadata=meta, stream_id=stream_id, version=version,
                position=position,
            )  # fmt: skip

    def test_rows_a_store_wrote_take_the_generated_decoders(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No row of a current schema and plain fields falls back to the checked path."""
        rows = self.rows()

        def checked(*_: object, **__: object) -> DomainEvent[Any]:
            raise AssertionError("a row took the checked path")

        monkeypatch.setattr(EventSerializer, "decode_fields", checked)
        decoded = decode_rows(SERIALIZER, rows, event_id=lambda i: i, timestamp=lambda t: t)
        assert len(decoded) == len(rows)
