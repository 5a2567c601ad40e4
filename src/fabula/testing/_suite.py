"""What every contract suite shares: tests that build their own store, and their events.

A suite's test is written `async def test_x(self, store)`; `store_test`
turns it into a synchronous pytest test that asks for the suite's factory
fixture, builds a fresh store, runs the body in its own event loop with a
time limit (a hang is a failure with a message, not a stuck run), and
closes the store whatever happens. Running their own loop, the suites
need no async pytest plugin and work beside any.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from fabula._events import default_registry
from fabula.testing._contract_events import Deposited, register_contract_events

__all__ = ["TIMEOUT", "deposit", "store_test"]

TIMEOUT = 60.0
"""Seconds one contract test may take before it fails as hung."""

Suite = TypeVar("Suite")
_Body = Callable[[Suite, Any], Coroutine[Any, Any, None]]


def store_test(factory: str) -> Callable[[_Body[Suite]], Callable[..., None]]:
    """Turn `async def test_x(self, store)` into a test using the fixture named `factory`.

    The fixture's value is an async callable that builds a fresh store.
    """

    def decorate(body: _Body[Suite]) -> Callable[..., None]:
        def test(self: Suite, **fixtures: Callable[[], Awaitable[Any]]) -> None:
            build = fixtures[factory]

            async def run() -> None:
                register_contract_events(default_registry)
                store = await build()
                try:
                    async with asyncio.timeout(TIMEOUT):
                        await body(self, store)
                finally:
                    await store.close()

            asyncio.run(run())

        test.__name__ = body.__name__
        test.__qualname__ = body.__qualname__
        test.__doc__ = body.__doc__
        # pytest reads the fixtures a test wants from its signature.
        test.__signature__ = inspect.Signature(  # type: ignore[attr-defined] # read by inspect
            [
                inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                inspect.Parameter(factory, inspect.Parameter.KEYWORD_ONLY),
            ]
        )
        return test

    return decorate


def deposit(amount: int | str = 1, note: str = "") -> Deposited:
    """Return a new contract-suite event (a `Deposited` of `amount`)."""
    return Deposited(amount=Decimal(amount), note=note)
