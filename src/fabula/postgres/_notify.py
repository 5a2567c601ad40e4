"""Telling processes of each other's commits: a coalesced NOTIFY out, a LISTEN in.

Appends do not NOTIFY inside their transaction: a notifying commit takes a
database-wide lock and holds it through its disk flush. Each process
announces its commits afterwards instead, at most once every
`ANNOUNCE_EVERY` seconds. A lost announcement costs latency, never
events: subscribers also poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from fabula._store_base import Wakeup
from fabula.exceptions import StoreError
from fabula.postgres._connections import Connections

__all__ = ["ANNOUNCE_EVERY", "Announcer", "listen"]

logger = logging.getLogger("fabula.postgres")

ANNOUNCE_EVERY = 0.01
"""Seconds: the most often a process tells the others of its commits."""


class Announcer:
    """Sends one NOTIFY for any number of commits made while one is on its way.

    Args:
        connections: Where to send it.
        statement: The NOTIFY statement.
    """

    def __init__(self, connections: Connections, statement: str) -> None:
        self._connections = connections
        self._statement = statement
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False

    def commit_made(self) -> None:
        """Have the other processes told of a commit: now, or after the one on its way."""
        if self._stopped:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._announce(), name="fabula-postgres-announce"
            )
        else:
            self._again = True

    async def stop(self) -> None:
        """Cancel a pending announcement (subscribers elsewhere poll anyway)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _announce(self) -> None:
        while not self._stopped:
            self._again = False
            try:
                await self._connections.query(self._statement)
            except StoreError as exc:
                logger.debug("could not notify other processes of commits: %s", exc)
            await asyncio.sleep(ANNOUNCE_EVERY)
            if not self._again:
                return


async def listen(conninfo: str, channel: str, wakeup: Wakeup) -> None:
    """Wake `wakeup` on other processes' commits until cancelled; reconnect when dropped."""
    delay = 0.1
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with conn:
                await conn.execute(f'LISTEN "{channel}"')
                delay = 0.1
                wakeup.notify()  # anything missed while disconnected
                async for _ in conn.notifies():
                    wakeup.notify()
        except psycopg.Error as exc:
            logger.warning("listening for commits failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            wakeup.notify()
