"""The decisions `fabula.storage` gives store authors: checked batches and duplicate ids."""

from decimal import Decimal
from uuid import UUID

import attrs
import pytest

from fabula import EventSerializer, ExpectedVersion, StreamAppend
from fabula.exceptions import DuplicateEventIdError
from fabula.storage import (
    PendingAppend,
    StoredEvent,
    explain_duplicate,
    match_retry,
    prepare_append,
    prepare_appends,
)
from fabula.testing import Deposited, deposit

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
