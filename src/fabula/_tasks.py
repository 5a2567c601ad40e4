"""Ending tasks for sure: a cancellation asked again until the task has ended."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["cancel_and_wait", "finished"]

_RECANCEL_AFTER = 0.5  # seconds a cancelled task may take before it is asked again


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended.

    Asks again while it runs on: on Python 3.11 a cancellation can be lost
    inside the task (asyncio.wait_for, which connection pools use, drops
    one that lands as its future completes: python/cpython#86296).
    """
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=_RECANCEL_AFTER)
        if not task.done():
            task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def finished(call: Coroutine[Any, Any, T]) -> T:
    """Await a store call that a cancellation of its caller leaves to finish on its own.

    The caller is cancelled at once; the call runs to its end (its result
    or error dropped). A call cut off while its pool hands it a connection
    can hold the pool up (Python 3.11's asyncio.wait_for, cpython#86296).
    """
    task = asyncio.ensure_future(call)
    task.add_done_callback(_drop_outcome)
    return await asyncio.shield(task)


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a caller that left does not want it
