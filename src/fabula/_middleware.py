"""Built-in middleware: retry on conflict, correlation, and a log record per dispatch."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from uuid import uuid4

import attrs

from fabula._commands import Message, Next
from fabula._events import EventMetadata, _current_metadata
from fabula._guards import positive_int, positive_number
from fabula.exceptions import (
    AggregateNotFoundError,
    ConcurrencyError,
    DomainError,
    IdempotencyConflictError,
    InvalidCursorError,
    InvalidPageSizeError,
)

__all__ = ["Correlation", "LogDispatch", "RetryOnConflict"]


@attrs.define
class RetryOnConflict:
    """Run a handler again when it loses an optimistic-concurrency race.

    On `ConcurrencyError` the rest of the chain runs again (the handler
    reloads its aggregates, so it decides against fresh state) after a
    jittered, exponentially growing pause; after `attempts` tries the error
    propagates.

    Args:
        attempts: How many times to run the handler in all.
        base_delay: The first pause's upper bound, in seconds.
        max_delay: The longest pause, in seconds.
        rng: Where the jitter comes from (seed it in tests).
    """

    attempts: int = attrs.field(default=5, validator=positive_int)
    base_delay: float = attrs.field(default=0.002, validator=positive_number)
    max_delay: float = attrs.field(default=0.1, validator=positive_number)
    rng: random.Random = attrs.field(factory=random.Random, repr=False)

    async def __call__(self, message: Message, call_next: Next) -> object:
        """Call the rest of the chain, retrying on `ConcurrencyError`."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await call_next(message)
            except ConcurrencyError:
                if attempt == self.attempts:
                    raise
                ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                await asyncio.sleep(self.rng.uniform(0, ceiling))
        msg = "unreachable: the loop returns or raises"  # pragma: no cover
        raise AssertionError(msg)  # pragma: no cover


@attrs.define
class Correlation:
    """Stamp the events a message causes with correlation and causation ids.

    While the rest of the chain runs, events recorded by aggregates get
    `causation_id` = the message's id and `correlation_id` = the message's
    correlation id, else that of the message being handled around it (a
    command dispatched from a handler), else a new one.
    """

    async def __call__(self, message: Message, call_next: Next) -> object:
        """Call the rest of the chain with the message's metadata in context."""
        outer = _current_metadata.get()
        correlation = message.correlation_id
        if correlation is None:
            correlation = outer.correlation_id if outer is not None else None
        metadata = EventMetadata(
            correlation_id=correlation or uuid4(), causation_id=message.message_id
        )
        token = _current_metadata.set(metadata)
        try:
            return await call_next(message)
        finally:
            _current_metadata.reset(token)


_EXPECTED: tuple[type[Exception], ...] = (
    DomainError,
    ConcurrencyError,
    AggregateNotFoundError,
    IdempotencyConflictError,
    InvalidCursorError,
    InvalidPageSizeError,
)


@attrs.define
class LogDispatch:
    """Write one log record per dispatch: type, id, outcome and duration.

    The record's message reads like `PlaceOrder 1b2c... ok in 3.1 ms`; the
    same facts are attached as `extra` fields (`message_type`, `message_id`,
    `correlation_id`, `outcome`, `duration_ms`) for structured handlers.

    A dispatch that fails with an *expected* error (by default a
    `DomainError`, a `ConcurrencyError`, an `AggregateNotFoundError`, an
    `IdempotencyConflictError`, or a bad cursor or page size: the answers a
    caller is told, not bugs) is one line at `expected_level`, with the
    error's message, `PlaceOrder 1b2c... OrderError (no such product) in
    0.4 ms`. Any other error is logged at ERROR with its traceback.

    Args:
        logger: Where to log; `logging.getLogger("fabula.dispatch")` if omitted.
        level: The level of records for successful dispatches.
        expected: The exception classes logged as one line, without a traceback.
        expected_level: The level of those lines.
    """

    logger: logging.Logger = attrs.field(factory=lambda: logging.getLogger("fabula.dispatch"))
    level: int = logging.INFO
    expected: tuple[type[Exception], ...] = attrs.field(default=_EXPECTED, kw_only=True)
    expected_level: int = attrs.field(default=logging.INFO, kw_only=True)

    async def __call__(self, message: Message, call_next: Next) -> object:
        """Call the rest of the chain and log how it went."""
        started = time.perf_counter()
        try:
            result = await call_next(message)
        except self.expected as exc:
            outcome = f"{type(exc).__name__} ({_first_line(exc)})"
            self._log(message, outcome, started, self.expected_level, None)
            raise
        except Exception as exc:
            self._log(message, type(exc).__name__, started, logging.ERROR, exc)
            raise
        self._log(message, "ok", started, self.level, None)
        return result

    def _log(
        self,
        message: Message,
        outcome: str,
        started: float,
        level: int,
        error: BaseException | None,
    ) -> None:
        duration = (time.perf_counter() - started) * 1000
        name = type(message).__qualname__
        self.logger.log(
            level,
            "%s %s %s in %.1f ms",
            name,
            message.message_id,
            outcome,
            duration,
            exc_info=error,
            extra={
                "message_type": name,
                "message_id": str(message.message_id),
                "correlation_id": None
                if message.correlation_id is None
                else str(message.correlation_id),
                "outcome": outcome,
                "duration_ms": round(duration, 3),
            },
        )


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, cut to `limit` characters."""
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return first if len(first) <= limit else first[: limit - 1] + "…"
