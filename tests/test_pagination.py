"""Keyset cursors and pages: exact round trips, and nothing but InvalidCursorError on garbage."""

import base64
import contextlib
import hashlib
import hmac
import inspect
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabula import (
    CursorCodec,
    InvalidCursorError,
    InvalidPageSizeError,
    KeyPart,
    Page,
    check_page_size,
)
from fabula._pagination import _scope_tag

SIGNED = CursorCodec(secret=b"server secret")
PLAIN = CursorCodec()

PARTS: dict[type, st.SearchStrategy[KeyPart]] = {
    datetime: st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])
    ),
    UUID: st.uuids(),
    int: st.integers(),
    str: st.text(),
}


@st.composite
def keys(draw: st.DrawFn) -> tuple[tuple[type, ...], tuple[KeyPart, ...]]:
    kinds = draw(st.lists(st.sampled_from(list(PARTS)), min_size=1, max_size=4))
    return tuple(kinds), tuple(draw(PARTS[kind]) for kind in kinds)


class TestRoundTrip:
    @given(keys(), st.sampled_from([SIGNED, PLAIN]))
    def test_any_key_round_trips(
        self, key: tuple[tuple[type, ...], tuple[KeyPart, ...]], codec: CursorCodec
    ) -> None:
        """Any tuple of datetimes, UUIDs, ints and strs decodes to an equal, same-typed key."""
        kinds, values = key
        token = codec.encode(values)
        decoded = codec.decode(token, kinds)
        assert decoded == values
        assert [type(v) for v in decoded] == [type(v) for v in values]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)

    def test_datetime_offsets_survive(self) -> None:
        """A datetime keeps its UTC offset through the cursor."""
        moment = datetime(2026, 11, 26, 12, 0, tzinfo=timezone(timedelta(hours=-3)))
        (back,) = PLAIN.decode(PLAIN.encode([moment]), [datetime])
        assert isinstance(back, datetime)
        assert back.utcoffset() == timedelta(hours=-3)


class TestRefusals:
    @given(st.text(max_size=200))
    def test_garbage_text_raises_only_invalid_cursor(self, garbage: str) -> None:
        """Arbitrary text never raises anything but InvalidCursorError."""
        for codec in (SIGNED, PLAIN):
            with contextlib.suppress(InvalidCursorError):
                codec.decode(garbage, [datetime, UUID])

    @given(st.binary(max_size=300), st.lists(st.sampled_from(list(PARTS)), max_size=3))
    def test_garbage_base64_raises_only_invalid_cursor(self, raw: bytes, kinds: list[type]) -> None:
        """Well-formed base64 of arbitrary bytes never raises anything but InvalidCursorError."""
        token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        with contextlib.suppress(InvalidCursorError):
            PLAIN.decode(token, kinds)

    @given(keys(), st.data())
    def test_tampering_is_detected(
        self, key: tuple[tuple[type, ...], tuple[KeyPart, ...]], data: st.DataObject
    ) -> None:
        """Changing any character of a signed cursor makes it invalid."""
        kinds, values = key
        token = SIGNED.encode(values)
        index = data.draw(st.integers(0, len(token) - 1))
        replacement = data.draw(st.sampled_from("AQgw_-z9").filter(lambda c: c != token[index]))
        tampered = token[:index] + replacement + token[index + 1 :]
        with pytest.raises(InvalidCursorError):
            SIGNED.decode(tampered, kinds)

    def test_cursors_are_bound_to_their_secret(self) -> None:
        """A cursor signed with one secret, or unsigned, is refused by another codec."""
        key = (datetime.now(UTC), uuid4())
        other = CursorCodec(secret=b"another secret")
        with pytest.raises(InvalidCursorError, match="signature"):
            other.decode(SIGNED.encode(key), [datetime, UUID])
        with pytest.raises(InvalidCursorError):
            SIGNED.decode(PLAIN.encode(key), [datetime, UUID])

    @pytest.mark.parametrize(
        ("types", "match"),
        [
            ([datetime], "2 key parts, not 1"),
            ([UUID, datetime], "type tag 'd' where a UUID"),
            ([datetime, int], "type tag 'u' where a int"),
        ],
    )
    def test_keys_of_other_types_are_refused(self, types: list[type], match: str) -> None:
        """A cursor of another query's key shape is refused with the reason."""
        token = PLAIN.encode((datetime.now(UTC), uuid4()))
        with pytest.raises(InvalidCursorError, match=match):
            PLAIN.decode(token, types)

    @pytest.mark.parametrize("cursor", ["", "a" * 5000, "not base64!", "WyIxIixbXV0", "=="])
    def test_malformed_cursors(self, cursor: str) -> None:
        """Empty, oversized, non-base64 and structurally wrong cursors are refused."""
        with pytest.raises(InvalidCursorError):
            PLAIN.decode(cursor, [int])

    def test_deeply_nested_json_is_refused(self) -> None:
        """A cursor of deeply nested arrays is refused, not a RecursionError."""
        token = base64.urlsafe_b64encode(b"[" * 3000).rstrip(b"=").decode()
        with pytest.raises(InvalidCursorError):
            PLAIN.decode(token, [int])

    @pytest.mark.parametrize(
        ("key", "error"),
        [
            ((), ValueError),
            ((1.5,), TypeError),
            ((True,), TypeError),
            ((datetime(2026, 1, 1),), ValueError),  # noqa: DTZ001 - naive on purpose
        ],
    )
    def test_unencodable_keys(self, key: tuple[object, ...], error: type[Exception]) -> None:
        """Only non-empty keys of aware datetimes, UUIDs, ints and strs encode."""
        with pytest.raises(error):
            PLAIN.encode(key)  # type: ignore[arg-type]


class TestPages:
    @pytest.mark.parametrize(("size", "ok"), [(1, True), (100, True), (0, False), (101, False)])
    def test_page_size_bounds(self, size: int, ok: bool) -> None:  # noqa: FBT001
        """Page sizes must lie within the bounds; the error names them."""
        if ok:
            assert check_page_size(size) == size
        else:
            with pytest.raises(InvalidPageSizeError, match=rf"{size} is invalid.*1 to 100"):
                check_page_size(size)

    def test_the_bounds_are_keyword_only(self) -> None:
        """check_page_size(size, 10) is refused: a bare number could be either bound."""
        with pytest.raises(TypeError):
            check_page_size(5, 10)  # type: ignore[call-arg] # the point of the test
        assert check_page_size(5, maximum=10) == 5

    @pytest.mark.parametrize("size", ["20", 2.0, True, None])
    def test_page_size_must_be_an_int(self, size: object) -> None:
        """Strings, floats, bools and None are not page sizes."""
        with pytest.raises(InvalidPageSizeError):
            check_page_size(size)

    def test_pages_walk_a_sorted_list_exactly_once(self) -> None:
        """Fetching size+1 rows after each cursor visits every row once, in order."""
        rows = sorted(
            (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n % 7), uuid4())
            for n in range(53)
        )

        def fetch(after: tuple[KeyPart, ...] | None, limit: int) -> list[tuple[datetime, UUID]]:
            remaining = [r for r in rows if after is None or r > after]
            return remaining[:limit]

        seen: list[tuple[datetime, UUID]] = []
        cursor: str | None = None
        while True:
            after = None if cursor is None else PLAIN.decode(cursor, [datetime, UUID])
            page = Page.from_rows(fetch(after, 11), 10, lambda row: row, PLAIN)
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == rows

    def test_last_page_has_no_cursor(self) -> None:
        """A page with no further row has next_cursor None."""
        page = Page.from_rows([1, 2], 5, lambda n: (n,), PLAIN)
        assert page == Page((1, 2), None)


def plain_cursor(body: object) -> str:
    """An unsigned cursor around any JSON body, as a client could forge one."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


GOLDEN_KEY: tuple[KeyPart, ...] = (
    datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    UUID("12345678-1234-5678-1234-567812345678"),
    -42,
    "zoë",
)
GOLDEN_TYPES = [datetime, UUID, int, str]
GOLDEN_PLAIN = (
    "WyIxIixbWyJkIiwiMjAyNi0wMS0wMlQwMzowNDowNS42NzgwMDArMDU6MzAiXSxbInUiLCIxMjM0NTY3OC0xMjM0"
    "LTU2NzgtMTIzNC01Njc4MTIzNDU2NzgiXSxbImkiLCItNDIiXSxbInMiLCJ6b1x1MDBlYiJdXV0"
)
GOLDEN_SIGNED = GOLDEN_PLAIN + "KHic11b-z0R8u67Vd1Tzp"


class TestTheCursorFormat:
    """Cursors handed out before a deploy must still decode after it."""

    def test_a_known_key_encodes_to_the_known_cursor(self) -> None:
        """The format is pinned: version 1, tagged parts, JSON, URL-safe base64, 16-byte HMAC."""
        assert CursorCodec().encode(GOLDEN_KEY) == GOLDEN_PLAIN
        assert CursorCodec(secret=b"golden").encode(GOLDEN_KEY) == GOLDEN_SIGNED

    def test_known_cursors_decode_to_the_known_key(self) -> None:
        """Cursors of the pinned format decode exactly, offsets and all."""
        assert CursorCodec().decode(GOLDEN_PLAIN, GOLDEN_TYPES) == GOLDEN_KEY
        signed = CursorCodec(secret=b"golden").decode(GOLDEN_SIGNED, GOLDEN_TYPES)
        assert signed == GOLDEN_KEY
        assert signed[0].utcoffset() == timedelta(hours=5, minutes=30)  # type: ignore[union-attr]

    @pytest.mark.parametrize("version", ["2", "0", 1, None])
    def test_other_format_versions_are_refused(self, version: object) -> None:
        """A cursor of any other format version (or a number for it) is refused."""
        with pytest.raises(InvalidCursorError, match="version"):
            PLAIN.decode(plain_cursor([version, [["i", "1"]]]), [int])

    def test_a_signed_cursor_must_hold_more_than_its_tag(self) -> None:
        """A cursor of exactly one tag's bytes (even the right tag of nothing) is refused."""
        codec = CursorCodec(secret=b"golden")
        tag_of_nothing = hmac.new(b"golden", b"", hashlib.sha256).digest()[:16]
        cursor = base64.urlsafe_b64encode(tag_of_nothing).rstrip(b"=").decode()
        with pytest.raises(InvalidCursorError, match="signature"):
            codec.decode(cursor, [int])

    def test_the_secret_is_not_in_the_repr(self) -> None:
        """repr(codec) never shows the HMAC secret."""
        assert "golden" not in repr(CursorCodec(secret=b"golden"))


GOLDEN_SCOPED = (
    "WyIyIixbWyJkIiwiMjAyNi0wMS0wMlQwMzowNDowNS42NzgwMDArMDU6MzAiXSxbInUiLCIxMjM0NTY3OC0xMjM0"
    "LTU2NzgtMTIzNC01Njc4MTIzNDU2NzgiXSxbImkiLCItNDIiXSxbInMiLCJ6b1x1MDBlYiJdXSwiYXZyY29JSWhM"
    "bG5CMFAtLSJd"
)


class TestScopes:
    """A cursor is accepted only by the listing (scope) it was made for."""

    def test_the_scoped_format_is_pinned(self) -> None:
        """Version 2: the parts, then the first 12 bytes of the scope's SHA-256, base64."""
        tag = base64.urlsafe_b64encode(hashlib.sha256(b"orders-of:ada").digest()[:12]).decode()
        parts = json.loads(base64.urlsafe_b64decode(GOLDEN_PLAIN + "=="))[1]
        assert plain_cursor(["2", parts, tag]) == GOLDEN_SCOPED
        assert PLAIN.encode(GOLDEN_KEY, scope="orders-of:ada") == GOLDEN_SCOPED
        assert PLAIN.decode(GOLDEN_SCOPED, GOLDEN_TYPES, scope="orders-of:ada") == GOLDEN_KEY

    @pytest.mark.parametrize("codec", [SIGNED, PLAIN], ids=["signed", "plain"])
    @pytest.mark.parametrize(
        ("made_for", "used_for"),
        [
            ("orders-of:ada", "orders-of:bob"),
            ("orders-of:ada", "orders-of:ada:submitted"),
            ("orders-of:ada", ""),
            ("", "orders-of:ada"),
            ("products", "Products"),
        ],
    )
    def test_another_listing_refuses_the_cursor(
        self, codec: CursorCodec, made_for: str, used_for: str
    ) -> None:
        """Another customer, another filter, no scope where one was used, or the reverse."""
        cursor = codec.encode((7, "x"), scope=made_for)
        assert codec.decode(cursor, (int, str), scope=made_for) == (7, "x")
        with pytest.raises(InvalidCursorError, match="another listing"):
            codec.decode(cursor, (int, str), scope=used_for)

    def test_a_signed_cursor_s_scope_cannot_be_swapped(self) -> None:
        """Replacing the scope tag of a signed cursor breaks its signature."""
        cursor = SIGNED.encode((7,), scope="orders-of:ada")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body, mac = raw[:-16], raw[-16:]
        version, parts, _ = json.loads(body)
        bob = base64.urlsafe_b64encode(hashlib.sha256(b"orders-of:bob").digest()[:12]).decode()
        forged = json.dumps([version, parts, bob], separators=(",", ":")).encode() + mac
        token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
        with pytest.raises(InvalidCursorError, match="signature"):
            SIGNED.decode(token, (int,), scope="orders-of:bob")

    def test_pages_bind_their_cursor_to_the_scope(self) -> None:
        """Page.from_rows makes the next cursor for its scope."""
        page = Page.from_rows([1, 2, 3], 2, lambda n: (n,), SIGNED, scope="numbers")
        assert page.next_cursor is not None
        assert SIGNED.decode(page.next_cursor, (int,), scope="numbers") == (2,)
        with pytest.raises(InvalidCursorError, match="another listing"):
            SIGNED.decode(page.next_cursor, (int,))

    def test_a_scope_is_text(self) -> None:
        """A scope of another type is a TypeError, when encoding and when decoding."""
        with pytest.raises(TypeError, match="scope must be a str"):
            PLAIN.encode((1,), scope=b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="scope must be a str"):
            PLAIN.decode(PLAIN.encode((1,)), (int,), scope=1)  # type: ignore[call-overload]

    @pytest.mark.parametrize("tag", [None, 1, ["x"], ""])
    def test_a_forged_scope_tag_is_refused(self, tag: object) -> None:
        """A version-2 body whose tag is not the scope's is refused, whatever it holds."""
        with pytest.raises(InvalidCursorError, match="another listing"):
            PLAIN.decode(plain_cursor(["2", [["i", "1"]], tag]), [int], scope="s")

    @pytest.mark.parametrize(
        "body",
        [
            ["1"],
            ["1", [["i", "1"]], "x"],
            ["2", [["i", "1"]], _scope_tag(""), "x"],
            ["3", [["i", "1"]], _scope_tag("")],
            ["1", [["i", "1"]], _scope_tag("")],
        ],
        ids=["too-short", "v1-with-a-tag", "v2-too-long", "unknown-version", "v1-as-v2"],
    )
    def test_bodies_of_another_shape_or_version_are_refused(self, body: list[object]) -> None:
        """Only [1, parts] and [2, parts, tag] decode; anything else is an InvalidCursorError."""
        with pytest.raises(InvalidCursorError, match="version"):
            PLAIN.decode(plain_cursor(body), [int])

    def test_the_scope_is_given_by_name(self) -> None:
        """`scope` is keyword-only everywhere, so it is never mistaken for another argument."""
        for function in (CursorCodec.encode, CursorCodec.decode, Page.from_rows):
            kind = inspect.signature(function).parameters["scope"].kind
            assert kind is inspect.Parameter.KEYWORD_ONLY, function

    def test_typed_parts(self) -> None:
        """With up to four types given as a tuple, each part has its own static type."""
        moment, ident = datetime(2026, 1, 1, tzinfo=UTC), uuid4()
        when, which = SIGNED.decode(SIGNED.encode((moment, ident)), (datetime, UUID))
        assert when.utcoffset() == timedelta(0)  # a datetime to mypy: no narrowing needed
        assert which.version == 4  # a UUID to mypy


class TestCanonicalForm:
    @pytest.mark.parametrize("raw", [b"A", b"\xff", b'["1",[["i","1"]]]', b'["1",[]]'])
    def test_every_other_spelling_of_the_same_bytes_is_refused(self, raw: bytes) -> None:
        """Base64 text whose unused bits are set decodes to the same bytes, but is refused."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        unused = {1: 0b1111, 2: 0b11}[len(raw) % 3]  # bits of the last character not used
        last = alphabet.index(canonical[-1])
        spellings = [canonical[:-1] + alphabet[last | bits] for bits in range(1, unused + 1)]
        assert len(spellings) == unused
        for spelling in spellings:
            assert base64.urlsafe_b64decode(spelling + "=" * (-len(spelling) % 4)) == raw
            with pytest.raises(InvalidCursorError, match="canonical"):
                PLAIN.decode(spelling, [int])


class TestCursorText:
    @pytest.mark.parametrize("cursor", ["", None, 12345, b"WyIxIixbXV0", ["WyIxIixbXV0"]])
    def test_a_cursor_must_be_non_empty_text(self, cursor: object) -> None:
        """Empty text and values that are not str are refused before any decoding."""
        with pytest.raises(InvalidCursorError, match="non-empty string"):
            PLAIN.decode(cursor, [int])  # type: ignore[call-overload]

    def test_the_length_limit_is_4096_characters(self) -> None:
        """4,096 characters pass the length check (and fail later); 4,097 do not."""
        with pytest.raises(InvalidCursorError) as at_limit:
            PLAIN.decode("A" * 4096, [int])
        assert "4096" not in str(at_limit.value)
        with pytest.raises(InvalidCursorError, match="at most 4096"):
            PLAIN.decode("A" * 4097, [int])


class TestMalformedKeyParts:
    """Each key part is checked: a forged cursor never yields a raw str or a TypeError."""

    @pytest.mark.parametrize(
        ("part", "kind"),
        [
            (["u", "not-a-uuid"], UUID),
            (["d", "yesterday"], datetime),
            (["d", "2026-01-02T03:04:05"], datetime),  # naive
            (["i", "12a"], int),
            (["i", "-"], int),
            (["i", ""], int),
            (["i", "\u0663"], int),  # an Arabic-Indic digit: isdigit() but not ASCII
            (["i", "1.5"], int),
        ],
    )
    def test_bad_values_are_refused(self, part: list[str], kind: type) -> None:
        """A tagged part whose text is not a value of its type is an InvalidCursorError."""
        with pytest.raises(InvalidCursorError, match=r"malformed|timezone"):
            PLAIN.decode(plain_cursor(["1", [part]]), [kind])

    @pytest.mark.parametrize(
        "part",
        [["u"], ["u", "x", "y"], [1, "x"], ["u", 7], "u", None, {"u": "x"}, []],
    )
    def test_malformed_parts_are_refused(self, part: object) -> None:
        """A part that is not a [tag, text] pair of strings is an InvalidCursorError."""
        with pytest.raises(InvalidCursorError, match="malformed"):
            PLAIN.decode(plain_cursor(["1", [part]]), [UUID])

    def test_a_part_with_more_than_a_tag_and_a_text_is_refused(self) -> None:
        """A good tag and value followed by anything more is still malformed."""
        cursor = plain_cursor(["1", [["u", str(uuid4()), "more"]]])
        with pytest.raises(InvalidCursorError, match="malformed"):
            PLAIN.decode(cursor, [UUID])

    def test_parts_must_be_a_list(self) -> None:
        """A body whose parts are not a list is refused."""
        with pytest.raises(InvalidCursorError, match="malformed"):
            PLAIN.decode(plain_cursor(["1", {"u": "x"}]), [UUID])

    def test_good_parts_decode_to_their_types(self) -> None:
        """The same forged shape with good values decodes to real UUID, datetime and int."""
        uuid = uuid4()
        cursor = plain_cursor(
            ["1", [["u", str(uuid)], ["d", "2026-01-02T03:04:05+00:00"], ["i", "-7"]]]
        )
        assert PLAIN.decode(cursor, [UUID, datetime, int]) == (
            uuid,
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            -7,
        )


class TestPageBoundaries:
    def test_an_exactly_full_last_page_has_no_cursor(self) -> None:
        """page_size rows and nothing after them: the last page, with no cursor to an empty one."""
        page = Page.from_rows([1, 2, 3], 3, lambda n: (n,), PLAIN)
        assert page == Page((1, 2, 3), None)

    def test_one_row_more_than_the_page_means_a_next_page(self) -> None:
        """page_size + 1 rows: the page holds page_size, and the cursor is its last row's key."""
        page = Page.from_rows([1, 2, 3, 4], 3, lambda n: (n,), PLAIN)
        assert page.items == (1, 2, 3)
        assert page.next_cursor is not None
        assert PLAIN.decode(page.next_cursor, [int]) == (3,)
