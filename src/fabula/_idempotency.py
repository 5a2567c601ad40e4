"""Idempotent commands: a command with an idempotency key runs at most once per key.

The middleware runs the handler in a unit of work: `Repository.save` calls
inside it are collected, not appended. When the handler returns, its events
and the idempotency record (key, payload fingerprint, encoded result) are
written in one store transaction, so a crash leaves both or neither, and a
handler that fails leaves nothing. Two concurrent dispatches with one key
both run their handler, but the store admits only the first record: the
second's events are discarded and it returns the first one's result.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, get_args, get_origin, runtime_checkable

import attrs
import cattrs

from fabula._aggregate import Aggregate
from fabula._commands import Command, Next
from fabula._converter import decode_json, encode_json, make_converter
from fabula._guards import text_problem, utcnow
from fabula._store import AppendResult, StreamAppend
from fabula.exceptions import (
    IdempotencyConflictError,
    IdempotencyKeyTakenError,
    InvalidIdempotencyKeyError,
    SerializationError,
)

__all__ = [
    "Idempotency",
    "IdempotencyRecord",
    "IdempotencyStore",
    "UnitOfWork",
    "current_unit_of_work",
]


@attrs.frozen
class IdempotencyRecord:
    """What was remembered of a command that ran under an idempotency key.

    Attributes:
        key: The idempotency key.
        fingerprint: A hash of the command's type and payload.
        result: The handler's result, as JSON.
        created_at: When the command ran.
        expires_at: When the key may be used afresh (None: never).
    """

    key: str
    fingerprint: str
    result: str
    created_at: datetime
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """Return whether the record no longer counts at `now`."""
        return self.expires_at is not None and self.expires_at <= now


@runtime_checkable
class IdempotencyStore(Protocol):
    """A store that can keep idempotency records in the same transaction as events."""

    async def append_with_record(
        self, appends: Sequence[StreamAppend], record: IdempotencyRecord
    ) -> list[AppendResult]:
        """Append (possibly no) events and store `record`, atomically.

        Raises:
            IdempotencyKeyTakenError: An unexpired record for the key exists;
                nothing is written.
            ConcurrencyError: An append's expected version does not hold.
        """
        ...

    async def load_record(self, key: str) -> IdempotencyRecord | None:
        """Return the record for `key`, expired or not, or None."""
        ...


@attrs.define
class UnitOfWork:
    """The saves made while an idempotent command's handler runs, not yet appended."""

    appends: list[StreamAppend] = attrs.Factory(list)

    def add(self, aggregate: Aggregate[Any]) -> None:
        """Take `aggregate`'s pending events into this unit of work."""
        append = aggregate.pending_append()
        if append is not None:
            self.appends.append(append)
            aggregate.mark_saved(append.events)


_unit_of_work: contextvars.ContextVar[UnitOfWork | None] = contextvars.ContextVar(
    "fabula_unit_of_work", default=None
)


def current_unit_of_work() -> UnitOfWork | None:
    """Return the unit of work of the idempotent command being handled, if any."""
    return _unit_of_work.get()


def _result_type(command: Command[Any]) -> object:
    for klass in type(command).__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Command):
                (result,) = get_args(base)
                return result
    return Any


def _check_retention(_: object, __: object, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        msg = f"retention must be a positive timedelta or None, not {value!r}"
        raise ValueError(msg)


_NOT_PAYLOAD = frozenset({"message_id", "correlation_id", "idempotency_key"})


@attrs.define
class Idempotency:
    """Middleware: run a command with an `idempotency_key` at most once per key.

    A repeat with the same key and an equal payload returns the first
    call's result and records no events; the same key with another payload
    raises `IdempotencyConflictError`. Commands without a key pass through.
    A key must be a non-empty str of at most 256 characters, without NUL
    and valid as UTF-8; any other raises `InvalidIdempotencyKeyError`.

    Add `RetryOnConflict` before (outside) this middleware: the handler's
    saves are appended when it returns, so a conflict surfaces here, after
    any retry middleware inside has finished.

    Args:
        store: Where records are kept, with the events (the event store).
        retention: How long a key is remembered; None for ever.
        converter: Encodes payloads and results; `make_converter()` if omitted.
        clock: Returns the current time (for tests).
    """

    store: IdempotencyStore
    retention: timedelta | None = attrs.field(default=timedelta(days=1), validator=_check_retention)
    converter: cattrs.Converter = attrs.field(factory=make_converter)
    clock: Callable[[], datetime] = attrs.field(default=utcnow)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.store, IdempotencyStore):
            msg = f"{self.store!r} cannot keep idempotency records with its events"
            raise TypeError(msg)

    async def __call__(self, message: Command[Any], call_next: Next) -> object:
        """Run the command once per key; replay the first result for repeats."""
        key = getattr(message, "idempotency_key", None)
        if key is None:
            return await call_next(message)
        problem = text_problem(key)
        if problem is not None:
            raise InvalidIdempotencyKeyError(key, problem)
        fingerprint = self.fingerprint(message)
        now = self.clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            msg = f"the idempotency clock must return an aware datetime, not {now!r}"
            raise ValueError(msg)
        existing = await self.store.load_record(key)
        if existing is not None and not existing.expired(now):
            return self._replay(existing, fingerprint, message)
        unit = UnitOfWork()
        token = _unit_of_work.set(unit)
        try:
            result = await call_next(message)
        finally:
            _unit_of_work.reset(token)
        record = IdempotencyRecord(
            key=key,
            fingerprint=fingerprint,
            result=self._encode_result(result),
            created_at=now,
            expires_at=None if self.retention is None else now + self.retention,
        )
        try:
            await self.store.append_with_record(unit.appends, record)
        except IdempotencyKeyTakenError as taken:
            return self._replay(taken.record, fingerprint, message)
        return result

    def fingerprint(self, command: Command[Any]) -> str:
        """Return a hash of the command's type and payload (ids and key excluded)."""
        payload = self.converter.unstructure(command)
        own = {k: v for k, v in payload.items() if k not in _NOT_PAYLOAD}
        kind = f"{type(command).__module__}.{type(command).__qualname__}"
        text = encode_json([kind, sorted(own.items())])
        return hashlib.sha256(text.encode()).hexdigest()

    def _replay(self, record: IdempotencyRecord, fingerprint: str, command: Command[Any]) -> object:
        if record.fingerprint != fingerprint:
            raise IdempotencyConflictError(record.key)
        raw = decode_json(record.result)
        kind = _result_type(command)
        if kind is Any:
            return raw
        if kind is None or kind is type(None):  # Command[None]
            return None
        try:
            return self.converter.structure(raw, kind)  # type: ignore[arg-type] # a type form
        except Exception as exc:
            msg = f"the stored result of idempotency key {record.key!r} does not decode: {exc}"
            raise SerializationError(msg) from exc

    def _encode_result(self, result: object) -> str:
        try:
            return encode_json(self.converter.unstructure(result))
        except Exception as exc:
            msg = f"the result {result!r} cannot be stored for replay: {exc}"
            raise SerializationError(msg) from exc
