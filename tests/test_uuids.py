"""Event ids of version 7 and the fast UUID constructor of the SQLite read path."""

import itertools
import threading
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabula._uuids import new_event_id, uuid_from_bytes

from .test_events import Renamed


class TestNewEventId:
    def test_is_a_version_7_uuid_of_the_current_millisecond(self) -> None:
        """RFC 9562: version 7, the RFC variant, Unix milliseconds in the first 48 bits."""
        before = time.time_ns() // 1_000_000
        made = new_event_id()
        after = time.time_ns() // 1_000_000
        assert (made.version, made.variant) == (7, uuid.RFC_4122)
        assert before <= made.int >> 80 <= after

    def test_behaves_as_any_uuid(self) -> None:
        """Equal to, and hashed as, the UUID its text or bytes make."""
        made = new_event_id()
        for again in (uuid.UUID(str(made)), uuid.UUID(bytes=made.bytes)):
            assert again == made
            assert hash(again) == hash(made)
        assert made.is_safe is uuid.SafeUUID.unknown

    def test_ids_made_one_after_another_sort_in_that_order(self) -> None:
        """Far enough apart (1 ms), later ids sort after earlier ones; all are distinct."""
        spaced = []
        for _ in range(5):
            spaced.append(new_event_id())
            time.sleep(0.001)
        assert spaced == sorted(spaced)
        burst = [new_event_id() for _ in range(10_000)]
        assert len(set(burst)) == len(burst)
        # Within a quarter of a microsecond two ids may fall either way; almost all are in order.
        in_order = sum(a < b for a, b in itertools.pairwise(burst))
        assert in_order >= 0.99 * (len(burst) - 1)

    def test_threads_make_distinct_ids(self) -> None:
        """62 random bits per id: threads making ids at once never collide."""
        made: list[list[uuid.UUID]] = [[] for _ in range(4)]

        def make(into: list[uuid.UUID]) -> None:
            into.extend(new_event_id() for _ in range(5_000))

        threads = [threading.Thread(target=make, args=(into,)) for into in made]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [one for part in made for one in part]
        assert len(set(every)) == 20_000

    def test_is_the_default_event_id(self) -> None:
        """A new event gets a version 7 id of its own."""
        first, second = Renamed(name="a"), Renamed(name="b")
        assert first.event_id.version == 7
        assert first.event_id != second.event_id


class TestUuidFromBytes:
    @given(st.binary(min_size=16, max_size=16))
    def test_equals_the_stdlib_constructor(self, raw: bytes) -> None:
        """The same value, text, hash and fields as `UUID(bytes=raw)`."""
        fast, slow = uuid_from_bytes(raw), uuid.UUID(bytes=raw)
        assert fast == slow
        assert (str(fast), hash(fast), fast.bytes, fast.version) == (
            str(slow),
            hash(slow),
            slow.bytes,
            slow.version,
        )

    @pytest.mark.parametrize("raw", [b"", b"short", bytes(17)])
    def test_refuses_other_lengths_as_the_stdlib_does(self, raw: bytes) -> None:
        """Not 16 bytes: the stdlib's own error (a corrupt stored id is reported, not misread)."""
        with pytest.raises(ValueError, match="bytes is not a 16-char string"):
            uuid.UUID(bytes=raw)
        with pytest.raises(ValueError, match="bytes is not a 16-char string"):
            uuid_from_bytes(raw)
