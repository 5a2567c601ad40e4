"""Keyset pagination: opaque, URL-safe cursors over sort keys, and `Page[T]`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic, TypeAlias, TypeVar, overload
from uuid import UUID

import attrs

from fabula._guards import is_int
from fabula.exceptions import InvalidCursorError, InvalidPageSizeError

__all__ = ["CursorCodec", "KeyPart", "Page", "check_page_size"]

T = TypeVar("T")

KeyPart: TypeAlias = datetime | UUID | int | str
"""One column of a sort key: an aware datetime, a UUID, an int or a str."""

K1 = TypeVar("K1", bound=KeyPart)
K2 = TypeVar("K2", bound=KeyPart)
K3 = TypeVar("K3", bound=KeyPart)
K4 = TypeVar("K4", bound=KeyPart)

_UNSCOPED = "1"  # the format's version without a scope
_SCOPED = "2"  # and with one
_SCOPE_BYTES = 12
_MAC_BYTES = 16
_TAGS: dict[type, str] = {datetime: "d", UUID: "u", int: "i", str: "s"}
_MAX_CURSOR = 4096


def _encode_part(part: KeyPart) -> list[str]:
    if isinstance(part, bool) or type(part) not in _TAGS:
        msg = f"a cursor key part must be an aware datetime, UUID, int or str, not {part!r}"
        raise TypeError(msg)
    if isinstance(part, datetime):
        if part.utcoffset() is None:
            msg = f"a cursor datetime must be timezone-aware, not {part.isoformat()}"
            raise ValueError(msg)
        return ["d", part.isoformat()]
    return [_TAGS[type(part)], str(part)]


def _decode_part(raw: object, expected: type) -> KeyPart:
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):  # noqa: PLR2004
        msg = "a key part is malformed"
        raise InvalidCursorError(msg)
    tag, text = str(raw[0]), str(raw[1])
    if tag != _TAGS.get(expected):
        msg = f"a key part has type tag {tag!r} where a {expected.__name__} is expected"
        raise InvalidCursorError(msg)
    try:
        if expected is datetime:
            value = datetime.fromisoformat(text)
            if value.utcoffset() is None:
                msg = "a key datetime has no timezone"
                raise InvalidCursorError(msg)
            return value
        if expected is UUID:
            return UUID(text)
        if expected is int:
            if not text.lstrip("-").isdigit() or not text.isascii():
                msg = "a key int is malformed"
                raise InvalidCursorError(msg)
            return int(text)
    except ValueError as exc:
        msg = f"a {expected.__name__} key part is malformed"
        raise InvalidCursorError(msg) from exc
    return text


@attrs.frozen
class CursorCodec:
    """Encodes sort keys into opaque cursors and decodes them back, strictly.

    A cursor is the sort key of the last row of a page, as URL-safe base64
    text, bound to the listing it was made for: its `scope`, a text naming
    the query and its filters (`f"orders-of:{customer_id}:{status}"`). A
    cursor is accepted only by `decode` with the same scope and the same key
    types; any other (another customer's listing, another filter, another
    query) raises `InvalidCursorError`. With a `secret`, cursors also carry
    an HMAC-SHA256 tag over key and scope, so clients cannot forge or alter
    them; without one they are opaque but not secret, and the scope check
    only catches mistakes.

    What a cursor guarantees: the next page starts strictly after the row it
    was taken at, in the listing's sort order, however many rows were added
    or removed since; rows added before that point are not shown by later
    pages. It does not expire; rows it points past may have changed.

    Example:
        >>> codec = CursorCodec(secret=b"server-side secret")
        >>> token = codec.encode((created_at, order_id), scope="orders-of:ada")
        >>> codec.decode(token, (datetime, UUID), scope="orders-of:ada") == (created_at, order_id)
        True

    Args:
        secret: Key for the HMAC tag; None for unsigned cursors.
    """

    secret: bytes | None = attrs.field(default=None, repr=False)

    def encode(self, key: Sequence[KeyPart], *, scope: str = "") -> str:
        """Return the cursor for sort key `key` in the listing `scope`.

        Raises:
            TypeError: A key part is not an aware datetime, UUID, int or str,
                or `scope` is not a str.
            ValueError: The key is empty or a datetime is naive.
        """
        if not key:
            msg = "a cursor needs at least one key part"
            raise ValueError(msg)
        parts = [_encode_part(part) for part in key]
        tag = _scope_tag(scope)
        # Unscoped cursors keep format 1, so that those handed out earlier still decode.
        body = [_UNSCOPED, parts] if scope == "" else [_SCOPED, parts, tag]
        raw = json.dumps(body, separators=(",", ":")).encode()
        if self.secret is not None:
            raw += self._mac(raw)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @overload
    def decode(self, cursor: str, types: tuple[type[K1]], *, scope: str = "") -> tuple[K1]: ...
    @overload
    def decode(
        self, cursor: str, types: tuple[type[K1], type[K2]], *, scope: str = ""
    ) -> tuple[K1, K2]: ...
    @overload
    def decode(
        self, cursor: str, types: tuple[type[K1], type[K2], type[K3]], *, scope: str = ""
    ) -> tuple[K1, K2, K3]: ...
    @overload
    def decode(
        self,
        cursor: str,
        types: tuple[type[K1], type[K2], type[K3], type[K4]],
        *,
        scope: str = "",
    ) -> tuple[K1, K2, K3, K4]: ...
    @overload
    def decode(
        self, cursor: str, types: Sequence[type[KeyPart]], *, scope: str = ""
    ) -> tuple[KeyPart, ...]: ...
    def decode(self, cursor: str, types: Sequence[type], *, scope: str = "") -> tuple[KeyPart, ...]:
        """Return the sort key in `cursor`, checked against the expected `types` and `scope`.

        Args:
            cursor: A cursor made by `encode` (with the same secret).
            types: The type of each key part, in order (datetime, UUID, int,
                str); with up to four, the result is typed part by part.
            scope: The listing the cursor must have been made for.

        Raises:
            InvalidCursorError: The cursor is malformed, altered, signed with
                another secret, made for another listing (scope), or holds a
                key of other types.
        """
        tag = _scope_tag(scope)
        raw = self._unwrap(cursor)
        try:
            body = json.loads(raw)
        except (ValueError, TypeError, RecursionError) as exc:
            msg = "the cursor is malformed"
            raise InvalidCursorError(msg) from exc
        # Version 1: [version, parts], made with no scope; version 2 adds the scope's tag.
        if isinstance(body, list) and body[:1] == [_UNSCOPED] and len(body) == 2:  # noqa: PLR2004
            _, parts = body
            made_for = _scope_tag("")
        elif isinstance(body, list) and body[:1] == [_SCOPED] and len(body) == 3:  # noqa: PLR2004
            _, parts, made_for = body
        else:
            msg = "the cursor is malformed or from an incompatible version"
            raise InvalidCursorError(msg)
        if not isinstance(parts, list):
            msg = "the cursor is malformed"
            raise InvalidCursorError(msg)
        if made_for != tag:
            msg = "the cursor belongs to another listing"
            raise InvalidCursorError(msg)
        if len(parts) != len(types):
            msg = f"the cursor holds {len(parts)} key parts, not {len(types)}"
            raise InvalidCursorError(msg)
        return tuple(_decode_part(part, kind) for part, kind in zip(parts, types, strict=True))

    def _unwrap(self, cursor: object) -> bytes:
        if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR:
            msg = "the cursor must be a non-empty string of at most 4096 characters"
            raise InvalidCursorError(msg)
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            msg = "the cursor is not URL-safe base64"
            raise InvalidCursorError(msg) from exc
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != cursor:
            msg = "the cursor is not in canonical form"
            raise InvalidCursorError(msg)
        if self.secret is None:
            return raw
        body, tag = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(tag, self._mac(body)):
            msg = "the cursor's signature does not match"
            raise InvalidCursorError(msg)
        return body

    def _mac(self, body: bytes) -> bytes:
        assert self.secret is not None  # noqa: S101 - only called with a secret
        return hmac.new(self.secret, body, hashlib.sha256).digest()[:_MAC_BYTES]


def _scope_tag(scope: object) -> str:
    """A short digest of `scope`, which a cursor carries instead of the text."""
    if not isinstance(scope, str):
        msg = f"a cursor scope must be a str, not {type(scope).__name__}"
        raise TypeError(msg)
    digest = hashlib.sha256(scope.encode("utf-8", "surrogatepass")).digest()[:_SCOPE_BYTES]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def check_page_size(size: object, *, maximum: int = 100, minimum: int = 1) -> int:
    """Return `size` if it is an int within [minimum, maximum].

    Raises:
        InvalidPageSizeError: It is not, naming the bounds.
    """
    if not is_int(size) or not minimum <= size <= maximum:
        raise InvalidPageSizeError(size, minimum, maximum)
    return size


@attrs.frozen
class Page(Generic[T]):
    """One page of a keyset-paginated query.

    Attributes:
        items: The rows of this page, in order.
        next_cursor: The cursor for the next page, or None on the last page.
    """

    items: tuple[T, ...]
    next_cursor: str | None = None

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[T],
        page_size: int,
        key: Callable[[T], Sequence[KeyPart]],
        codec: CursorCodec,
        *,
        scope: str = "",
    ) -> Page[T]:
        """Build a page from up to `page_size + 1` rows fetched after the cursor.

        Fetch one row more than the page holds: if it is there, there is a
        next page, whose cursor is the key of this page's last row, bound to
        the listing `scope` (see `CursorCodec`).
        """
        items = tuple(rows[:page_size])
        more = len(rows) > page_size
        cursor = codec.encode(key(items[-1]), scope=scope) if more and items else None
        return cls(items, cursor)
