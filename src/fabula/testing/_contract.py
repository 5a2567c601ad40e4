"""The EventStore contract: one test suite every store must pass unchanged.

Subclass `EventStoreContract` in your own tests and provide one fixture,
`event_store_factory`, that returns an async callable building a fresh, empty
store; the suite closes each store it builds:

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        def event_store_factory(self, tmp_path):
            async def build():
                return MyStore(tmp_path / "events.db")
            return build

The tests run their own event loop (`asyncio.run`), so the suite needs no
async pytest plugin and works beside any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, settings

from fabula._store import EventStore
from fabula.testing._contract_appends import AppendContract, AtomicityContract, BadInputContract
from fabula.testing._contract_log import ConcurrencyContract, LogContract
from fabula.testing._model import check_against_model

__all__ = ["EventStoreContract", "StoreFactory"]

StoreFactory: TypeAlias = Callable[[], Awaitable[EventStore]]
"""What the `event_store_factory` fixture returns: builds a fresh, empty store."""


class EventStoreContract(
    AppendContract, AtomicityContract, LogContract, ConcurrencyContract, BadInputContract
):
    """The event store contract suite (see the module docstring for use)."""

    @pytest.fixture
    def event_store_factory(self) -> StoreFactory:
        """Override in a subclass: return an async callable building a fresh store."""
        pytest.fail("EventStoreContract subclasses must provide the event_store_factory fixture")

    # -- the model ---------------------------------------------------------------------

    def test_behaves_like_a_model(self, event_store_factory: StoreFactory) -> None:
        """Random appends and reads give the same answers as a plain in-memory model."""
        check_against_model(
            event_store_factory,
            settings(
                max_examples=40,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
