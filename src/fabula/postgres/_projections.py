"""The projection half of `PostgresEventStore`: checkpoints, leases and rebuilds.

Projection handlers are synchronous: they run in a worker thread, on a
synchronous connection from a pool of their own, inside the transaction
that moves the checkpoint. Its `search_path` starts with the store's
schema, where read models go. `PostgresEventStore` holds one
`ProjectionSide` and forwards its projection calls to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from uuid import uuid4

import psycopg
import psycopg_pool

from fabula._projection import Projection
from fabula._projection_store import (
    LogReader,
    SkippedEvent,
    apply_events,
    build_from_log,
    require_checkpoint,
)
from fabula._store import RecordedEvent
from fabula.exceptions import StoreError
from fabula.postgres import _schema as sql
from fabula.postgres._connections import Connections, describe_pool, map_errors, storage_failure

__all__ = ["ProjectionSide", "Tx", "lease_key"]

logger = logging.getLogger("fabula.postgres")

T = TypeVar("T")

_SIDE_PREFIX = "fabula_rebuild_"
"""The start of a rebuild's side schema's name; the rest is random."""
Tx = psycopg.Connection[Any]
"""What projection handlers get: a synchronous connection, inside the batch's transaction."""


class ProjectionSide:
    """Checkpoints, projection transactions, leases and rebuilds over PostgreSQL.

    A collaborator of `PostgresEventStore`, which hands it what it needs and
    forwards the `ProjectionStore` and `ProjectionLeases` calls to it.

    Args:
        schema: The schema of the store's tables (and of read models).
        statements: The schema's statements.
        connections: The store's pool (for reads of checkpoints and skips).
        log: Where rebuilds read the log.
        ready: Opens the store if it is not open yet.
        poll_interval: Seconds between looks for a free lease.
        max_size: The store's pool size; projections use half of it.
    """

    def __init__(
        self,
        *,
        schema: str,
        statements: sql.Statements,
        connections: Connections,
        log: LogReader,
        ready: Callable[[], Awaitable[None]],
        poll_interval: float | None,
        max_size: int,
    ) -> None:
        self.schema = schema
        self._sql = statements
        self._db = connections
        self._log = log
        self._ready = ready
        self._poll_interval = poll_interval
        self._max_size = max_size
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()

    async def close(self) -> None:
        """Close the projection pool, if one was opened."""
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)

    async def in_transaction(self, job: Callable[[Tx], T]) -> T:
        """Run `job` in one transaction on the projections' pool (the read model's queries too)."""
        return await self._in_projection_transaction(job)

    async def _in_projection_transaction(self, job: Callable[[Tx], T]) -> T:
        await self._ready()
        projection_pool = self._pool or await self._open_pool()

        def run() -> T:
            try:
                with projection_pool.connection() as conn, conn.transaction():
                    return job(conn)
            except psycopg_pool.PoolTimeout as exc:  # say why, for whoever reads the log
                state = describe_pool(projection_pool, "the projections' pool")
                raise psycopg_pool.PoolTimeout(f"{exc} ({state})") from exc

        with map_errors(self._db.connect_timeout):
            return await asyncio.to_thread(run)

    async def _open_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        """Open the projections' pool once, however many callers ask at once."""
        async with self._opening:
            if self._pool is not None:
                return self._pool
            if self._db.conninfo is None:
                msg = "projections need a store built from a connection string"
                raise StoreError(msg)
            pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
                self._db.conninfo,
                min_size=1,
                max_size=max(2, self._max_size // 2),
                timeout=self._db.connect_timeout,
                open=False,
                name="fabula-projections",
                # Read models live beside the events: unqualified names in
                # handlers resolve to the store's schema first.
                kwargs={
                    # Quoted, or PostgreSQL folds a name such as Orders to orders.
                    "options": f'-c search_path="{self.schema}",public',
                    "application_name": f"fabula-projections:{self.schema}"[:63],
                },
            )
            await asyncio.to_thread(pool.open, True, self._db.connect_timeout)  # noqa: FBT003
            self._pool = pool
            return pool

    def lock_checkpoint(self, conn: Tx, name: str) -> int:
        """Read checkpoint `name` inside a transaction, locking its row (0 if it has none)."""
        conn.execute(self._sql.ensure_checkpoint, (name,))
        row = conn.execute(self._sql.lock_checkpoint, (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def save_checkpoint(self, conn: Tx, name: str, position: int) -> None:
        """Set checkpoint `name` inside the transaction that locked it."""
        conn.execute(self._sql.save_checkpoint, (position, name))

    @contextlib.asynccontextmanager
    async def projection_lease(self, name: str) -> AsyncIterator[asyncio.Event]:
        """Hold the right to run projection `name` among every process using this schema.

        Waits (polling every `poll_interval` seconds) until a session-level
        advisory lock is free, holds it on a connection of its own, and
        yields an event that is set if that connection is lost (the lock is
        then lost with it). A process that dies releases the lock with its
        connection, and a waiting one takes over. `Projector.run` uses this;
        the checkpoint's row lock keeps even an overlap exactly-once.
        """
        await self._ready()
        if self._db.conninfo is None:
            msg = "projection leases need a store built from a connection string"
            raise StoreError(msg)
        key = lease_key(self.schema, name)
        lost = asyncio.Event()
        conn = await self._lease_connection(key, name)
        watching = asyncio.create_task(self._watch_lease(conn, lost))
        try:
            yield lost
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # closing the session releases the lock

    async def _lease_connection(self, key: str, name: str) -> psycopg.AsyncConnection[Any]:
        """Return a connection holding the advisory lock `key`, once it is free."""
        assert self._db.conninfo is not None  # noqa: S101 - checked by the caller
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._db.conninfo,
                    autocommit=True,
                    application_name=f"fabula-lease:{self.schema}:{name}"[:63],
                )
            except psycopg.Error as exc:
                logger.warning("projection %s: cannot connect for its lease: %s", name, exc)
                await asyncio.sleep(self._poll_interval or 0.5)
                continue
            try:
                while True:
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        return conn
                    await asyncio.sleep(self._poll_interval or 0.5)
            except psycopg.Error as exc:
                logger.warning("projection %s: lease connection failed: %s", name, exc)
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
                raise

    async def _watch_lease(self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event) -> None:
        interval = max(0.2, min(self._poll_interval or 1.0, 1.0))
        try:
            while True:
                await asyncio.sleep(interval)
                await conn.execute("SELECT 1")
        except psycopg.Error:
            lost.set()

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint of projection `name` (0 if it has none)."""
        await self._ready()
        rows = await self._db.query(self._sql.load_checkpoint, (name,))
        return int(rows[0][0]) if rows else 0

    async def commit_projection(
        self, name: str, *, expected: int, position: int, work: Callable[[Tx], None]
    ) -> None:
        """Run `work` and move checkpoint `name` from `expected` to `position`, in one transaction.

        `work` gets a synchronous psycopg connection in the transaction; the
        checkpoint row is locked first, so a second projector running the
        same projection waits, then finds the checkpoint moved.

        Raises:
            CheckpointError: The checkpoint is not at `expected`.
            StoreUnavailableError: The server failed, in `work` too (a lost
                connection met by a handler is the store's failure, not the
                handler's).
        """

        def job(conn: Tx) -> None:
            stored = self.lock_checkpoint(conn, name)
            require_checkpoint(name, stored, expected=expected, moving_to=position)
            try:
                work(conn)
            except Exception as exc:
                failure = storage_failure(exc)
                if failure is None:
                    raise
                raise failure from exc
            conn.execute(self._sql.save_checkpoint, (position, name))

        await self._in_projection_transaction(job)

    async def skip_event(self, name: str, *, position: int, event_class: str, reason: str) -> None:
        """Move checkpoint `name` from `position - 1` past `position`, recording the skip.

        Raises:
            CheckpointError: The checkpoint is not at `position - 1`.
        """

        def job(conn: Tx) -> None:
            stored = self.lock_checkpoint(conn, name)
            require_checkpoint(name, stored, expected=position - 1, moving_to=position)
            conn.execute(self._sql.record_skip, (name, position, event_class, reason))
            conn.execute(self._sql.save_checkpoint, (position, name))

        await self._in_projection_transaction(job)

    async def load_skips(self, name: str) -> list[SkippedEvent]:
        """Return the events skipped in projection `name`, oldest first."""
        await self._ready()
        rows = await self._db.query(self._sql.load_skips, (name,))
        return [SkippedEvent(pos, event_class, why, at) for pos, event_class, why, at in rows]

    async def rebuild_projection(
        self,
        projection: Projection[Tx],
        *,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Build `projection` afresh in a side schema, then move its tables in, in one transaction.

        The handlers run with the side schema first on the `search_path`, so
        their unqualified table names write the new copy while the live
        tables keep serving. The switch drops the live tables, moves the new
        ones (with their indexes) into the live schema and sets the
        checkpoint, in one transaction: readers see the old read model, then
        the new one. Returns the new checkpoint.

        Raises:
            StoreError: The projection does not list its `tables`.
            ProjectionError: A handler failed; the live read model is untouched.
        """
        if not projection.tables:
            msg = f"projection {projection.name!r} must list its read-model tables to be rebuilt"
            raise StoreError(msg)
        side_name = f"{_SIDE_PREFIX}{uuid4().hex[:16]}"
        side = sql.quote_identifier(side_name)

        def prepare(conn: Tx) -> None:
            conn.execute(f"CREATE SCHEMA {side}")
            _use_side(conn, side)
            projection.setup(conn)

        async with self._side_claim(side_name):
            await self._in_projection_transaction(prepare)
            try:
                position = await self._build_beside(projection, side, batch_size, progress)
            finally:
                await self._in_projection_transaction(
                    lambda conn: conn.execute(f"DROP SCHEMA IF EXISTS {side} CASCADE")
                )
        return position

    async def _build_beside(
        self,
        projection: Projection[Tx],
        side: str,
        batch_size: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        """Replay the log into side schema `side`, then swap its tables in."""

        async def apply_batch(events: list[RecordedEvent]) -> None:
            def apply(conn: Tx) -> None:
                _use_side(conn, side)
                apply_events(projection, events, conn)

            await self._in_projection_transaction(apply)

        position = await build_from_log(
            self._log, projection, apply_batch, batch_size=batch_size, progress=progress
        )
        await self._in_projection_transaction(
            lambda conn: self._swap_in(conn, projection, side, position)
        )
        return position

    @contextlib.asynccontextmanager
    async def _side_claim(self, side_name: str) -> AsyncIterator[None]:
        """Hold the claim on side schema `side_name` while the body runs, dropping abandoned ones.

        The claim is a session advisory lock on a connection of its own,
        taken before the side schema exists: a rebuild that dies (killed,
        its connection lost) lets it go with its session, so a later
        rebuild finds the claim free and drops what the dead one left.
        """
        await self._ready()
        if self._db.conninfo is None:
            msg = "projections need a store built from a connection string"
            raise StoreError(msg)
        with map_errors(self._db.connect_timeout):
            conn = await psycopg.AsyncConnection.connect(
                self._db.conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self._db.connect_timeout)),
                application_name=f"fabula-rebuild:{self.schema}"[:63],
            )
        try:
            with map_errors(self._db.connect_timeout):
                await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (side_name,))
                await _drop_abandoned_sides(conn, side_name)
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # closing the session lets the claim go

    def _swap_in(self, conn: Tx, projection: Projection[Tx], side: str, position: int) -> None:
        """Replace the live tables with the side schema's and set the checkpoint."""
        row = conn.execute("SELECT current_schema()").fetchone()
        live = sql.quote_identifier(row[0] if row and row[0] else "public")
        self.lock_checkpoint(conn, projection.name)
        for table in projection.tables:
            name = sql.quote_identifier(table)
            conn.execute(f"DROP TABLE IF EXISTS {live}.{name} CASCADE")
            conn.execute(f"ALTER TABLE {side}.{name} SET SCHEMA {live}")
        conn.execute(self._sql.save_checkpoint, (position, projection.name))


async def _drop_abandoned_sides(conn: psycopg.AsyncConnection[Any], own: str) -> None:
    """Drop the side schemas of rebuilds that died: those no session holds the claim of."""
    cursor = await conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) AND nspname <> %s",
        (_SIDE_PREFIX, own),
    )
    for (name,) in await cursor.fetchall():
        cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,))
        free = await cursor.fetchone()
        if not (free and free[0]):
            continue  # a live rebuild's
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {sql.quote_identifier(name)} CASCADE")
            logger.warning("dropped side schema %s, which a rebuild that stopped left", name)
        except psycopg.Error as exc:  # another user's, say: leave it
            logger.warning("cannot drop side schema %s, which a rebuild left: %s", name, exc)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))


def lease_key(schema: str, name: str) -> str:
    """The text whose `hashtext` is the advisory lock that leases projection `name`."""
    return f"fabula-projection:{schema}:{name}"


def _use_side(conn: Tx, side: str) -> None:
    """Put the side schema first on the transaction's search_path."""
    path = conn.execute("SHOW search_path").fetchone()
    conn.execute(f"SET LOCAL search_path TO {side}, {path[0] if path else 'public'}")
