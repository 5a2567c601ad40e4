"""An in-memory store with projection leases, to test a projector's standby without a server.

One holder per projection name at a time, like PostgreSQL's advisory lock;
the test can take a holder's lease away (`lose`), as a dropped connection
would.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fabula.exceptions import StoreUnavailableError
from fabula.memory import InMemoryEventStore


class LeasingMemoryStore(InMemoryEventStore):
    """InMemoryEventStore plus `projection_lease` (a `fabula.storage.ProjectionLeases`)."""

    def __init__(self) -> None:
        super().__init__()
        self.locks: dict[str, asyncio.Lock] = {}
        self.held: dict[str, asyncio.Event] = {}
        self.refusals = 0  # how many lease requests fail, as if the server were away

    @contextlib.asynccontextmanager
    async def projection_lease(self, name: str) -> AsyncIterator[asyncio.Event]:
        """Hold projection `name`'s lease until the block ends; the event is set if it is lost."""
        self._check_open()
        if self.refusals:
            self.refusals -= 1
            msg = "the lease table cannot be reached"
            raise StoreUnavailableError(msg)
        lock = self.locks.setdefault(name, asyncio.Lock())
        async with lock:
            lost = asyncio.Event()
            self.held[name] = lost
            try:
                yield lost
            finally:
                del self.held[name]

    def lose(self, name: str) -> None:
        """Take the lease of `name` from its holder."""
        self.held[name].set()
