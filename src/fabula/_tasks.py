"""Ending tasks for sure: a cancellation asked again until the task has ended."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]

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
