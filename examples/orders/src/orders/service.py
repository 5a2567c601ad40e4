"""The application's wiring: the store and database, the buses, the projector and the reactor.

The messages are in `orders.messages`, what they do in `orders.handlers`.
`OrdersService.open(database)` opens the event store, the catalogs and the
read model in one database (a SQLite file, or a PostgreSQL schema when given
a `postgresql://` URL), builds the command and query buses and starts the
projector. `execute` dispatches a command and returns once the read model
reflects it, so a query issued after a command returned sees its effect
(read-your-writes; see `OrdersService.execute` for why it waits rather than
projecting inline). The reactor runs what follows the events, without any
further request: the fulfilment of submitted orders and the expiry of
abandoned drafts (`orders.fulfilment`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import TypeAlias, TypeVar
from uuid import UUID

import attrs

import fabula
from fabula.sqlite import SQLiteEventStore

from .catalog import Catalog
from .domain import Order
from .fulfilment import DraftExpiry, Fulfilment
from .handlers import OrderHandlers
from .integration import relays as build_relays
from .messages import ForgetCustomer, GetCustomerOrders, GetOrderById
from .read_model import OrderSummaryProjection, ReadModel, StockLevelsProjection
from .stock import Stock

__all__ = [
    "DRAFT_TTL",
    "KEK_VARIABLE",
    "SNAPSHOT_EVERY",
    "OrdersService",
    "ReadModelUnavailableError",
    "is_postgres_url",
    "projector",
]

logger = logging.getLogger("orders")

R = TypeVar("R")

SNAPSHOT_EVERY = 100
"""How many events of an order (or of a product's stock) between two of its snapshots."""

DRAFT_TTL = timedelta(days=1)
"""How long a draft may sit unchanged before it is cancelled as abandoned (by default)."""

KEK_VARIABLE = "ORDERS_KEK"
"""The environment variable that holds the key-encryption key (base64 of 32 bytes)."""

_READY_TIMEOUT = 5.0  # seconds the readiness check waits for the database

_WAIT_SLICE = 0.1  # seconds between looks at the projector's health while waiting for it

OrdersProjector: TypeAlias = fabula.Projector[object]
"""The read model's projector: its projection takes either store's transaction."""


def projector(store: fabula.SqlStore) -> OrdersProjector:
    """The read models' projector over `store` (`fabula projections --app` uses it)."""
    return fabula.Projector(store, [OrderSummaryProjection(), StockLevelsProjection()])


@attrs.frozen
class _Nothing:
    """A row of no columns: for queries asked only whether they run."""


class ReadModelUnavailableError(Exception):
    """The read model is not following the events, so it cannot answer (HTTP 503).

    Its message is for clients: it says what is wrong in general terms; the
    details (which error, which event) are in the log.
    """


# What each unhealthy projector state means, in words fit for a client.
_TROUBLE = {
    fabula.ProjectionState.RETRYING: "its database is failing; it resumes when that is fixed",
    fabula.ProjectionState.FAILING: "it is stopped at an event it cannot apply",
}


def is_postgres_url(database: str) -> bool:
    """Whether `database` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


class OrdersService:
    """The orders application over one database: a SQLite file or a PostgreSQL schema.

    Build it with `OrdersService.open(database)`; the attributes are for
    operators and tests.

    Attributes:
        store: The event store; its `read_model()` holds the catalogs and the read model.
        catalog: The customers and products.
        read_model: The order read model's queries.
        projector: Keeps the read model up to date.
        reactor: Runs the fulfilment process, the drafts' expiry timers and the relays.
        monitor: Measures lag and parked events (for `/ready` and the metrics).
        relays: Publish the order events to brokers (none unless asked).
        handlers: What each command and query does.
        commands: The command bus (correlation, retry on conflict, idempotency).
        queries: The query bus.
        read_timeout: How long `execute` waits for the read model to catch up.
        key_retention: How long an idempotency key is remembered.
    """

    def __init__(
        self,
        store: fabula.SqlStore,
        projector: OrdersProjector,
        codec: fabula.CursorCodec,
        *,
        read_timeout: float = 10.0,
        key_retention: timedelta = timedelta(days=1),
        draft_ttl: timedelta = DRAFT_TTL,
        relays: Sequence[fabula.Relay] = (),
    ) -> None:
        self.store = store
        self.projector = projector
        self.catalog = Catalog(store.read_model())
        self.read_model = ReadModel(store.read_model(), codec)
        self.read_timeout = read_timeout
        # --8<-- [start:bus]
        # Orders are snapshotted every SNAPSHOT_EVERY events, so loading one
        # reads at most that many events (and an order holds at most
        # MAX_ORDER_EVENTS).
        self.repository = fabula.Repository(
            store, snapshot_every={Order: SNAPSHOT_EVERY, Stock: SNAPSHOT_EVERY}
        )
        self.commands = fabula.CommandBus()
        self.commands.use(fabula.Correlation())
        # Outside idempotency: an idempotent command's events are appended
        # when its handler returns, so its conflicts surface there. Many
        # attempts, because a popular order can have many writers at once.
        self.commands.use(fabula.RetryOnConflict(attempts=30, max_delay=0.05))
        # Keys are remembered for a day (as payment APIs do); a repeat after
        # that runs again.
        self.commands.use(fabula.Idempotency(store, retention=key_retention))
        # --8<-- [end:bus]
        self.queries = fabula.QueryBus()
        # Queries of the read model are refused while it is not following the
        # events, rather than answered stale (an order just created: 404).
        self.queries.use(self._read_model_ready, for_types=(GetOrderById, GetCustomerOrders))
        self.handlers = OrderHandlers(self.repository, self.catalog, self.read_model, store)
        self.handlers.register(self.commands, self.queries)
        # Commands the reactions send go through the same bus: their keys
        # make a redelivered event's commands commit nothing new.
        # Relays publish the order events to brokers from the log (its
        # checkpoint passes an event once the broker acknowledged it).
        reactions = [Fulfilment(self.repository), DraftExpiry(draft_ttl), *relays]
        self.relays = tuple(relays)
        self.reactor = fabula.Reactor(store, self.commands, reactions)
        # Lag in events and seconds, parked events and (on PostgreSQL) the
        # horizon, for /ready and, with an OpenTelemetry SDK, the metrics.
        self.monitor = fabula.Monitor(store, projector=projector, reactor=self.reactor)
        self._reacting: asyncio.Task[None] | None = None
        self._projecting: asyncio.Task[None] | None = None
        self._reported: str | None = None  # the trouble last logged, so it is logged once

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        database: str,
        *,
        schema: str = "public",
        read_timeout: float = 10.0,
        busy_timeout: float = 5.0,
        draft_ttl: timedelta = DRAFT_TTL,
        publish: Sequence[str] = (),
        key_encryption_key: fabula.KeyWrapper | None = None,
    ) -> AsyncIterator[OrdersService]:
        """Open the service on `database`, run it, and close it on exit.

        Args:
            database: A SQLite file path, or a `postgresql://` URL.
            schema: On PostgreSQL, the schema that holds the events and the
                tables beside them (created if missing).
            read_timeout: How long `execute` waits for the read model.
            busy_timeout: On SQLite, how long a write waits for another
                process's lock on the file before `StoreUnavailableError`
                (503); on PostgreSQL, how long to wait for a connection.
            draft_ttl: How long a draft may sit unchanged before it is
                cancelled as abandoned.
            publish: Broker URLs (`nats://`, `amqp://`) to publish the
                order events to, as `orders.v1.*` CloudEvents.
            key_encryption_key: Wraps the customers' keys, which seal their
                names and addresses in the events; by default the key in
                the environment variable `ORDERS_KEK` (base64 of 32 bytes).

        Raises:
            ValueError: A `publish` URL of another scheme, or one given twice.
            fabula.PersonalDataError: No key-encryption key is given, and
                `ORDERS_KEK` holds none.

        The read model is brought up to date before this yields; the
        projector then follows new events in the background, and so does
        the reactor (timers that fell due while the service was stopped
        fire as it starts). Several processes may serve one PostgreSQL
        schema: one of them runs each projection and each reaction, the
        others stand by and take over if it stops.
        """
        key = key_encryption_key or fabula.KeyEncryptionKey.from_env(KEK_VARIABLE)
        published = build_relays(publish)
        opening = _postgres if is_postgres_url(database) else _sqlite
        async with opening(database, schema, busy_timeout, key) as store:
            catalog = Catalog(store.read_model())
            await catalog.open()
            codec = fabula.CursorCodec(secret=await catalog.secret("cursor-secret"))
            service = cls(
                store,
                projector(store),
                codec,
                read_timeout=read_timeout,
                draft_ttl=draft_ttl,
                relays=published,
            )
            await service._upgrade_read_model()
            await service.projector.catch_up()  # creates the tables, applies the backlog
            service._start_projector()
            service._start_reactor()
            monitoring = asyncio.create_task(service.monitor.run(), name="orders-monitor")
            try:
                yield service
            finally:
                monitoring.cancel()
                await asyncio.gather(monitoring, return_exceptions=True)
                await service._stop_reactor()
                await service._stop_projector()
                for relay in published:
                    await relay.publisher.close()

    def read_model_trouble(self) -> str | None:
        """Why the read model is not following the events, or None if it is."""
        trouble: str | None = None
        if self._projecting is None or self._projecting.done():
            trouble = "the read model is not being updated: its projector has stopped"
        for state in self.projector.states().values():
            if trouble is None and state in _TROUBLE:
                trouble = f"the read model is not being updated: {_TROUBLE[state]}"
        if trouble != self._reported:  # one log line as it starts, one as it ends
            if trouble is None:
                logger.warning("the read model follows the events again")
            else:
                logger.warning("%s (the projector's own log lines say why)", trouble)
            self._reported = trouble
        return trouble

    async def readiness(self, max_lag: float) -> str | None:
        """Why the service should not be sent requests now, or None when it is ready.

        Ready: the database answers, the projector runs, and its oldest
        event not yet applied is at most `max_lag` seconds old.
        """
        trouble = self.read_model_trouble()
        if trouble is not None:
            return trouble
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                readings = await self.monitor.measure()
        except (fabula.StoreError, TimeoutError):
            logger.warning("the readiness check could not read the database", exc_info=True)
            return "the database does not answer"
        behind = max((r.age for r in readings if r.kind == "projection"), default=0.0)
        if behind > max_lag:
            return f"the read model is {behind:.0f} s behind the events (at most {max_lag:g} s)"
        return None

    async def _read_model_ready(self, query: fabula.Query[R], call_next: fabula.Next) -> object:
        trouble = self.read_model_trouble()
        if trouble is not None:
            raise ReadModelUnavailableError(trouble)
        return await call_next(query)

    def _start_projector(self) -> None:
        def report(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error("the projector stopped", exc_info=task.exception())

        self._projecting = asyncio.create_task(self.projector.run(), name="orders-projector")
        self._projecting.add_done_callback(report)

    def _start_reactor(self) -> None:
        def report(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error("the reactor stopped", exc_info=task.exception())

        self._reacting = asyncio.create_task(self.reactor.run(), name="orders-reactor")
        self._reacting.add_done_callback(report)

    async def _stop_reactor(self) -> None:
        if self._reacting is not None:
            self._reacting.cancel()
            await asyncio.gather(self._reacting, return_exceptions=True)

    async def _upgrade_read_model(self) -> None:
        """Rebuild an order read model made before cancellation reasons or forgotten customers.

        The rebuild is blue/green: the old tables answer until the new ones
        replace them.
        """
        tables = self.store.read_model()
        try:
            await tables.fetch_all("SELECT id FROM order_summary LIMIT 0", row=_Nothing)
        except fabula.StoreError:
            return  # no read model yet: the projector creates it
        try:
            await tables.fetch_all("SELECT cancel_reason FROM order_summary LIMIT 0", row=_Nothing)
        except fabula.StoreError:
            logger.warning("the order read model predates cancellation reasons: rebuilding it")
            await self.projector.rebuild(OrderSummaryProjection.name)
            return
        if await _name_required(tables):
            logger.warning("the order read model predates forgotten customers: rebuilding it")
            await self.projector.rebuild(OrderSummaryProjection.name)

    async def _stop_projector(self) -> None:
        if self._projecting is not None:
            self._projecting.cancel()
            # Its failure, if any, was logged when it happened.
            await asyncio.gather(self._projecting, return_exceptions=True)

    # --8<-- [start:execute]
    async def execute(self, command: fabula.Command[R]) -> R:
        """Dispatch `command`, then wait until the read model reflects it.

        Waiting for the projector (rather than updating the read model
        inside the command's transaction) keeps the write path the same for
        every read model, including ones in other databases, and costs one
        projector batch of latency. The wait is for the log's head after the
        command, which covers the command's own events. If the read model
        does not catch up in `read_timeout` seconds (a failing projection),
        the command's result is still returned: it was committed.
        """
        result = await self.commands.dispatch(command)
        if self.read_model_trouble() is not None:
            return result  # committed; reads say why they cannot answer
        head = await self.store.head_position()
        deadline = asyncio.get_running_loop().time() + self.read_timeout
        # In slices: a projector that gets into trouble meanwhile ends the wait.
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                await self.projector.wait_for(head, timeout=min(left, _WAIT_SLICE))
            except TimeoutError:
                if self.read_model_trouble() is not None:
                    return result
            else:
                return result
        logger.warning("the read model did not reach position %d in time", head)
        return result

    # --8<-- [end:execute]
    async def forget_customer(self, customer_id: UUID) -> None:
        """Forget a customer, wait for the read model to drop their name, and scrub SQLite's log.

        Raises:
            UnknownCustomerError: There is no such customer (or no longer).
        """
        await self.execute(ForgetCustomer(customer_id=customer_id))
        if isinstance(self.store, SQLiteEventStore):
            await self.store.scrub()  # the purged rows' old copies leave the log too

    async def ask(self, query: fabula.Query[R]) -> R:
        """Dispatch `query`."""
        return await self.queries.dispatch(query)

    async def rebuild_read_model(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild the read model from the whole log without downtime; return its position."""
        await self.projector.rebuild(OrderSummaryProjection.name, progress=progress)
        return await self.store.load_checkpoint(OrderSummaryProjection.name)


@attrs.frozen
class _Required:
    required: int


async def _name_required(tables: fabula.ReadModel) -> bool:
    """Whether `order_summary.customer_name` is NOT NULL (made before customers were forgotten)."""
    if tables.dialect.name == "sqlite":
        query = (
            "SELECT \"notnull\" <> 0 AS required FROM pragma_table_info('order_summary') "
            "WHERE name = 'customer_name'"
        )
    else:
        query = (
            "SELECT is_nullable = 'NO' AS required FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'order_summary' "
            "AND column_name = 'customer_name'"
        )
    found = await tables.fetch_one(query, row=_Required)
    return found is not None and bool(found.required)


@contextlib.asynccontextmanager
async def _sqlite(
    path: str, _: str, busy_timeout: float, key: fabula.KeyWrapper
) -> AsyncIterator[fabula.SqlStore]:
    async with SQLiteEventStore(path, busy_timeout=busy_timeout, key_encryption_key=key) as store:
        yield store


@contextlib.asynccontextmanager
async def _postgres(
    url: str, schema: str, busy_timeout: float, key: fabula.KeyWrapper
) -> AsyncIterator[fabula.SqlStore]:
    from fabula.postgres import PostgresEventStore  # noqa: PLC0415 - an optional driver

    async with PostgresEventStore(
        url, schema=schema, connect_timeout=busy_timeout, key_encryption_key=key
    ) as store:
        yield store
