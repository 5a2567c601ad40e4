"""What the broker clients share: backoff, credentials kept out of logs, the receive loop's step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from fabula._inbox import Inbox
from fabula._store import EventStore
from fabula.exceptions import StoreClosedError, StoreError

__all__ = ["Backoff", "cancellable", "check_positive", "receive_until_kept", "shown_url"]

T = TypeVar("T")

logger = logging.getLogger("fabula.inbox")


def shown_url(url: str) -> str:
    """`url` without its password, to be logged or shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


async def cancellable(work: Awaitable[T]) -> T:
    """Await `work` in a task of its own, so that cancelling the caller ends the wait at once.

    A broker client's call can lose a cancellation on Python 3.11 (its
    `asyncio.wait_for` returns a result that arrives with the cancellation,
    python/cpython#86296), and a relay or consumer that is stopped would
    then wait for it for ever. The call is asked to cancel too; if it does
    not, it ends by its own timeout, and its outcome is dropped.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_drop_outcome)
        raise
    return task.result()


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: not logged as "never retrieved"


def check_positive(**values: float) -> None:
    """Check that each keyword's value is a number above zero (not a bool).

    Raises:
        ValueError: One is not.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            msg = f"{name} must be a positive number, not {value!r}"
            raise ValueError(msg)


class Backoff:
    """Capped exponential pauses: `first`, doubling up to `most`; `reset` after a success."""

    def __init__(self, first: float = 0.1, most: float = 10.0) -> None:
        self.first = first
        self.most = most
        self.failures = 0

    def reset(self) -> None:
        """Start again from the first pause."""
        self.failures = 0

    async def pause(self) -> None:
        """Sleep for the next pause."""
        self.failures += 1
        await asyncio.sleep(min(self.most, self.first * 2.0 ** (self.failures - 1)))


async def receive_until_kept(inbox: Inbox, store: EventStore, bodies: Sequence[bytes]) -> int:
    """Append `bodies` through `inbox`, retrying a failing store until it keeps them.

    The broker's messages stay unacknowledged meanwhile (a redelivery of
    one already kept appends nothing).

    Raises:
        StoreClosedError: The store was closed.
    """
    backoff = Backoff()
    while True:
        try:
            return await inbox.receive(store, bodies)
        except StoreClosedError:
            raise
        except StoreError as exc:
            if backoff.failures == 0:
                logger.warning("inbox %s: the store failed (%s); retrying", inbox.name, exc)
            await backoff.pause()
