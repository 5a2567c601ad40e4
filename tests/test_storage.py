"""The decisions `fabula.storage` gives store authors: checked batches and duplicate ids."""

import attrs
import pytest

from fabula import EventSerializer, StreamAppend
from fabula.exceptions import DuplicateEventIdError
from fabula.storage import explain_duplicate, prepare_append, prepare_appends
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
                StreamAppend("acc-1", [deposit()], expected_version=0),
                StreamAppend("acc-2", [deposit()], expected_version=0),
            ],
            SERIALIZER,
        )
        first, second = parts[0].records[0].event_id, parts[1].records[0].event_id
        elsewhere = explain_duplicate(parts, {second: "acc-9"})
        assert (elsewhere.stream_id, elsewhere.event_id) == ("acc-2", second)
        assert "in stream 'acc-9', and this batch is not a retry" in str(elsewhere)
        here = explain_duplicate(parts, {first: "acc-1"})
        assert (here.stream_id, here.event_id) == ("acc-1", first)
        assert "in this stream" in str(here)
        racing = explain_duplicate(parts, {})
        assert (racing.stream_id, racing.event_id) == ("acc-1", first)
        assert str(racing).endswith("stored concurrently")
