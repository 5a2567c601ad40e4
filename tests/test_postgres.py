"""PostgresEventStore against a real server: the contract, and readers that never skip."""

import asyncio
import json
import random
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import attrs
import psycopg
import psycopg_pool
import pytest

import fabula
from fabula import ExpectedVersion, RecordedEvent
from fabula.postgres import PostgresEventStore
from fabula.postgres import _schema as sql
from fabula.testing import (
    Deposited,
    EventStoreContract,
    IdempotencyStoreContract,
    ProjectionStoreContract,
    ReactionStoreContract,
    SnapshotStoreContract,
    StoreFactory,
    TimerStoreContract,
    deposit,
)

from .support.postgres import (
    Balances,
    HeldWriter,
    drop_schemas,
    horizon_holders,
    new_schema,
    require_postgres,
)


@pytest.fixture
def schemas() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    drop_schemas(made)


@pytest.fixture
async def store(schemas: list[str]) -> AsyncIterator[PostgresEventStore]:
    url = require_postgres()
    schemas.append(new_schema())
    async with PostgresEventStore(url, schema=schemas[-1], poll_interval=0.2) as opened:
        yield opened


@pytest.fixture
async def holds(schemas: list[str]) -> AsyncIterator[list["HeldWriter"]]:
    """Held writers, rolled back at the end if a failing test left them open.

    (An open transaction would block dropping the test's schema for ever.)
    """
    del schemas  # requested so that this tears down before the schemas are dropped
    writers: list[HeldWriter] = []
    yield writers
    for writer in writers:
        if writer.conn is not None and not writer.conn.closed:
            await writer.conn.close()


class TestPostgresContract(
    EventStoreContract,
    ProjectionStoreContract,
    SnapshotStoreContract,
    IdempotencyStoreContract,
    ReactionStoreContract,
    TimerStoreContract,
):
    """PostgresEventStore passes every capability's contract unchanged."""

    @pytest.fixture
    def event_store_factory(self, schemas: list[str]) -> StoreFactory:
        url = require_postgres()

        async def build() -> PostgresEventStore:
            schemas.append(new_schema())
            store = PostgresEventStore(url, schema=schemas[-1], poll_interval=0.1)
            await store.open()
            return store

        return build


async def migrations(store: PostgresEventStore) -> list[tuple[Any, ...]]:
    table = f"{store._sql.schema}.fabula_migrations"
    return await store._db.query(f"SELECT version, applied_at FROM {table} ORDER BY 1")  # noqa: S608


class TestSchema:
    async def test_a_new_store_records_each_migration(self, store: PostgresEventStore) -> None:
        """Opening a fresh schema applies every migration and records when."""
        rows = await migrations(store)
        assert [version for version, _ in rows] == list(range(1, sql.SCHEMA_VERSION + 1))
        assert all(applied_at is not None for _, applied_at in rows)

    async def test_a_schema_older_than_the_record_is_backfilled(
        self, store: PostgresEventStore
    ) -> None:
        """A schema made before fabula_migrations opens, keeps its events, and is recorded."""
        await store.append("acc-1", [deposit(1)], expected_version=0)
        await store._db.query(f"DROP TABLE {store._sql.schema}.fabula_migrations")
        url = require_postgres()
        async with PostgresEventStore(url, schema=store.schema) as again:
            assert len(await again.read_stream("acc-1")) == 1
            rows = await migrations(again)
        assert rows == [(version, None) for version in range(1, sql.SCHEMA_VERSION + 1)]

    async def test_a_schema_from_a_newer_fabula_is_refused(self, store: PostgresEventStore) -> None:
        """A schema version above this fabula's raises SchemaVersionError, naming both."""
        newer = str(sql.SCHEMA_VERSION + 1)
        await store._db.query(store._sql.set_schema_version, (newer,))
        url = require_postgres()
        with pytest.raises(fabula.exceptions.SchemaVersionError) as caught:
            await PostgresEventStore(url, schema=store.schema).open()
        assert (caught.value.found, caught.value.supported) == (
            sql.SCHEMA_VERSION + 1,
            sql.SCHEMA_VERSION,
        )


async def collect(
    store: PostgresEventStore, expected: int, seen: list[RecordedEvent]
) -> list[RecordedEvent]:
    async for recorded in store.subscribe():
        seen.append(recorded)
        if len(seen) == expected:
            break
    return seen


class TestNoSkippedEvents:
    async def test_a_held_transaction_is_delivered_when_it_commits(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """Later positions commit first; the subscriber still sees the held event, once."""
        held = HeldWriter(store, "held", holds)
        await held.begin([deposit(1)])
        held_position = held.results[0].position
        later = [await store.append(f"s-{n}", [deposit(n)], expected_version=0) for n in range(5)]
        assert all(result.position > held_position for result in later)  # the trap is set

        seen: list[RecordedEvent] = []
        reader = asyncio.create_task(collect(store, 6, seen))
        await asyncio.sleep(0.3)
        assert seen == []  # nothing is readable past the open transaction

        page = await store.read_log(after=0)
        assert page.events == []
        assert page.position < held_position

        await held.commit()
        delivered = await asyncio.wait_for(reader, timeout=10)
        positions = [r.position for r in delivered]
        assert positions == sorted(positions)
        assert positions[0] == held_position
        assert sorted(positions) == sorted({held_position, *(r.position for r in later)})

    async def test_random_interleavings_deliver_everything_once_in_order(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """Writers held open and committed in random order; a reader paging by position."""
        rng = random.Random(7)
        committed: set[int] = set()  # filled in once every writer has committed
        seen: list[RecordedEvent] = []
        stop = asyncio.Event()

        async def read() -> None:
            after = 0
            while not stop.is_set() or len(seen) < len(committed):
                page = await store.read_log(after=after, limit=rng.randint(1, 7))
                seen.extend(page.events)
                after = page.position
                await asyncio.sleep(rng.uniform(0, 0.003))

        reader = asyncio.create_task(read())
        traps = 0
        for round_number in range(15):
            held = [
                HeldWriter(store, f"h-{round_number}-{n}", holds) for n in range(rng.randint(1, 3))
            ]
            for writer in held:
                await writer.begin([deposit(n) for n in range(rng.randint(1, 3))])
            later = [
                await store.append(f"w-{round_number}-{n}", [deposit(n)], expected_version=0)
                for n in range(rng.randint(0, 4))
            ]
            traps += sum(
                1
                for writer in held
                for result in later
                if result.position > writer.results[0].position
            )
            rng.shuffle(held)
            for writer in held:
                await asyncio.sleep(rng.uniform(0, 0.01))
                await writer.commit()
        assert traps > 0  # later positions did commit before earlier, held ones
        committed = {r.position for r in await store.read_all(limit=10_000)}
        stop.set()
        await asyncio.wait_for(reader, timeout=20)
        positions = [r.position for r in seen]
        assert positions == sorted(positions), "delivered out of order"
        assert len(positions) == len(set(positions)), "delivered twice"
        assert set(positions) == committed, "skipped events"


def balances(store: PostgresEventStore) -> dict[str, Decimal]:
    with psycopg.connect(require_postgres()) as conn:
        query = f'SELECT account, total FROM "{store.schema}".balances'  # noqa: S608
        return dict(conn.execute(query).fetchall())


async def fill(store: PostgresEventStore, accounts: int, deposits: int) -> dict[str, Decimal]:
    expected: dict[str, Decimal] = {}
    for n in range(deposits):
        account = f"acc-{n % accounts}"
        await store.append(account, [deposit(n + 1)], expected_version=ExpectedVersion.ANY)
        expected[account] = expected.get(account, Decimal(0)) + n + 1
    return expected


class TestProjections:
    async def test_catch_up_builds_the_read_model(self, store: PostgresEventStore) -> None:
        expected = await fill(store, 3, 30)
        projector = fabula.Projector(store, [Balances()], batch_size=7)
        await projector.catch_up()
        assert balances(store) == expected
        assert await store.load_checkpoint("balances") >= await store.head_position()

    async def test_two_projectors_apply_each_event_once(self, store: PostgresEventStore) -> None:
        expected = await fill(store, 4, 60)
        projectors = [fabula.Projector(store, [Balances()], batch_size=5) for _ in range(3)]
        runs = [asyncio.create_task(p.run()) for p in projectors]
        more = await fill(store, 4, 20)
        head = await store.head_position()
        try:
            await asyncio.gather(*(p.wait_for(head, timeout=20) for p in projectors))
        except TimeoutError:
            states = [await p.status() for p in projectors]
            stored = await store.load_checkpoint("balances")
            pytest.fail(
                f"head {head}, stored checkpoint {stored}, projectors {states}, runs {runs}, "
                f"horizon held by {horizon_holders()}"
            )
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        assert balances(store) == {k: expected[k] + more.get(k, Decimal(0)) for k in expected}

    async def test_catch_up_waits_for_events_committed_before_it_behind_an_open_one(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """An event saved before catch_up is in the read model after it, whatever else is open.

        A writer that drew an earlier position and has not committed holds
        readers below the later, committed event: catch_up waits for it
        rather than return without the event that was saved first.
        """
        expected = await fill(store, 2, 4)
        held = HeldWriter(store, "held", holds)
        await held.begin([deposit(100)])
        await store.append("acc-0", [deposit(7)], expected_version=ExpectedVersion.ANY)
        projector = fabula.Projector(store, [Balances()], idle_wait=0.05)
        catching_up = asyncio.create_task(projector.catch_up())
        await asyncio.sleep(0.5)
        assert not catching_up.done()  # it waits for the open writer
        await held.commit()
        await asyncio.wait_for(catching_up, timeout=20)
        expected["acc-0"] += 7
        expected["held"] = Decimal(100)
        assert balances(store) == expected

    async def test_lag_counts_events_not_positions(self, store: PostgresEventStore) -> None:
        """One event behind is a lag of 1, though positions leave gaps of 2**20 between appends."""
        await fill(store, 2, 3)
        projector = fabula.Projector(store, [Balances()])
        await projector.catch_up()
        await store.append("acc-0", [deposit(5)], expected_version=ExpectedVersion.ANY)
        (status,) = await projector.status()
        assert await store.head_position() - status.checkpoint >= 2**20
        assert status.lag == 1

    async def test_callers_at_once_open_one_projection_pool(
        self, schemas: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ten first uses of a new store's read model at once open one pool, not ten."""
        schemas.append(new_schema())
        made: list[object] = []
        init = psycopg_pool.ConnectionPool.__init__

        def counting(pool: Any, *args: Any, **kwargs: Any) -> None:
            made.append(pool)
            init(pool, *args, **kwargs)

        monkeypatch.setattr(psycopg_pool.ConnectionPool, "__init__", counting)

        @attrs.frozen
        class One:
            n: int

        async with PostgresEventStore(require_postgres(), schema=schemas[-1]) as fresh:
            tables = fresh.read_model()
            found = await asyncio.gather(
                *(tables.fetch_all("SELECT 1 AS n", row=One) for _ in range(10))
            )
        assert found == [[One(1)]] * 10
        assert len(made) == 1

    async def test_a_pool_that_gives_no_connection_says_how_it_stood(
        self, schemas: list[str]
    ) -> None:
        """A projections' pool exhausted past the timeout: the 503's cause names its state."""
        schemas.append(new_schema())

        @attrs.frozen
        class One:
            n: int

        url = require_postgres()
        async with PostgresEventStore(
            url, schema=schemas[-1], max_size=4, connect_timeout=0.5
        ) as small:
            release = threading.Event()

            def hold(conn: Any) -> None:
                del conn
                release.wait(10)

            holders = [
                asyncio.create_task(small._projections.in_transaction(hold)) for _ in range(2)
            ]
            await asyncio.sleep(0.2)
            try:
                with pytest.raises(fabula.StoreUnavailableError) as caught:
                    await small.read_model().fetch_all("SELECT 1 AS n", row=One)
            finally:
                release.set()
                await asyncio.gather(*holders)
        message = str(caught.value)
        assert "no PostgreSQL connection within 0.5 s" in message
        assert "the projections' pool had 2 of 2 connections, 0 free" in message

    async def test_concurrent_catch_ups_apply_each_event_once(
        self, store: PostgresEventStore
    ) -> None:
        """Processes starting at once each catch up; the one that loses a batch carries on."""
        expected = await fill(store, 4, 200)
        projectors = [fabula.Projector(store, [Balances()], batch_size=5) for _ in range(3)]
        await asyncio.gather(*(p.catch_up() for p in projectors))
        assert balances(store) == expected
        head = await store.head_position()
        for projector in projectors:
            (status,) = await projector.status()
            assert status.checkpoint >= head

    async def test_a_schema_name_with_capitals_keeps_its_read_models(
        self, schemas: list[str]
    ) -> None:
        """A schema such as Orders_X is not folded to orders_x: read models go beside the events."""
        schemas.append(f"Mixed_{new_schema()}")
        async with PostgresEventStore(require_postgres(), schema=schemas[-1]) as store:
            expected = await fill(store, 2, 6)
            await fabula.Projector(store, [Balances()]).catch_up()
            assert balances(store) == expected
            with psycopg.connect(require_postgres()) as conn:
                found = conn.execute("SELECT to_regclass(%s)", (f'"{store.schema}".balances',))
                assert found.fetchone() != (None,)

    async def test_a_failing_handler_keeps_the_events_before_it(
        self, store: PostgresEventStore
    ) -> None:
        await fill(store, 2, 10)  # deposits 1..10
        projector = fabula.Projector(store, [Balances(fail_on=Decimal(7))], batch_size=100)
        with pytest.raises(fabula.exceptions.ProjectionError):
            await projector.catch_up()
        assert balances(store) == {"acc-0": Decimal(1 + 3 + 5), "acc-1": Decimal(2 + 4 + 6)}
        (status,) = await projector.status()
        assert status.last_error is not None
        await projector.skip("balances", status.last_error.position, reason="test")
        await projector.catch_up()
        assert balances(store) == {"acc-0": Decimal(1 + 3 + 5 + 9), "acc-1": Decimal(30)}
        (skipped,) = await store.load_skips("balances")
        assert skipped.reason == "test"

    async def test_a_connection_killed_under_a_handler_is_waited_out(
        self, store: PostgresEventStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A handler's statement meeting a killed connection is the server's failure: retried."""
        expected = await fill(store, 2, 10)  # deposits 1..10
        balances_model = Balances(kill_on=Decimal(7))
        projector = fabula.Projector(store, [balances_model], batch_size=100, retry_delay=0.01)
        running = asyncio.create_task(projector.run())
        try:
            await projector.wait_for(await store.head_position(), timeout=20)
            (status,) = await projector.status()
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert balances_model.kill_on is None  # it was killed once
        assert (status.state, status.last_error, status.store_error) == ("running", None, None)
        assert balances(store) == expected
        outages = [r.getMessage() for r in caplog.records if "the store" in r.getMessage()]
        assert len(outages) == 2
        assert "the store failed" in outages[0]
        assert "PostgreSQL is unavailable" in outages[0]
        assert "the store is back after 1 failed attempts" in outages[1]

    async def test_rebuild_swaps_in_a_fresh_read_model(self, store: PostgresEventStore) -> None:
        expected = await fill(store, 3, 40)
        projector = fabula.Projector(store, [Balances()], batch_size=9)
        await projector.catch_up()
        with psycopg.connect(require_postgres()) as conn:  # a bug wrote nonsense
            conn.execute(f'UPDATE "{store.schema}".balances SET total = -1')  # noqa: S608
        progress: list[tuple[int, int]] = []
        await projector.rebuild("balances", progress=lambda d, t: progress.append((d, t)))
        assert balances(store) == expected
        assert progress
        assert progress[-1][0] == await store.load_checkpoint("balances")
        with psycopg.connect(require_postgres()) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'fabula_rebuild_%%'"
            ).fetchone()
        assert left == (0,)

    async def test_a_rebuild_drops_what_killed_rebuilds_left_and_only_that(
        self, store: PostgresEventStore
    ) -> None:
        """A rebuild killed with -9 leaves its side schema; the next rebuild drops it.

        A side schema whose claim a live session holds is a rebuild still
        running, and stays.
        """
        url = require_postgres()
        expected = await fill(store, 2, 6)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SLOW_REBUILD,
            url,
            store.schema,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[1],
        )
        live = f"fabula_rebuild_{uuid4().hex[:16]}"
        with psycopg.connect(url, autocommit=True) as claim:
            try:
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
                assert line == b"rebuilding\n"
            finally:
                child.kill()
                await child.wait()
            gone = f"fabula-rebuild:{store.schema}"[:63]
            for _ in range(100):  # the server notices the dead client's closed sockets
                rows = claim.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (gone,)
                ).fetchall()
                if not rows:
                    break
                await asyncio.sleep(0.1)
            left = side_schemas(claim) - {live}
            assert len(left) == 1  # the killed rebuild's
            claim.execute("SELECT pg_advisory_lock(hashtext(%s))", (live,))
            claim.execute(f'CREATE SCHEMA "{live}"')
            try:
                await fabula.Projector(store, [Balances()]).rebuild("balances")
                assert balances(store) == expected
                assert side_schemas(claim) == {live}
            finally:
                for name in {live, *left}:  # whatever a failure left
                    claim.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


SLOW_REBUILD = """
import asyncio, sys, time
import fabula
from fabula.postgres import PostgresEventStore
from fabula.testing import Deposited, register_contract_events

register_contract_events(fabula.default_registry)


class Slow(fabula.Projection):
    name = "balances"
    tables = ("balances",)

    def setup(self, tx):
        tx.execute("CREATE TABLE balances (account text PRIMARY KEY, total numeric NOT NULL)")

    @fabula.handles
    def _deposited(self, event: Deposited, tx):
        print("rebuilding", flush=True)
        time.sleep(120)

async def main():
    async with PostgresEventStore(sys.argv[1], schema=sys.argv[2]) as store:
        await fabula.Projector(store, [Slow()]).rebuild("balances")

asyncio.run(main())
"""
"""A rebuild that stops in its first handler, for a test to kill."""


def side_schemas(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, 'fabula_rebuild_')"
    ).fetchall()
    return {str(name) for (name,) in rows}


WRITER = Path(__file__).parent / "support" / "postgres_child.py"


class TestManyWriters:
    def test_eight_processes_while_two_subscribers_tail(self, schemas: list[str]) -> None:
        """8 writer processes x 2,000 events, some streams contended, 2 subscribers tailing.

        Nothing lost or duplicated, delivered in position order, stream
        versions contiguous, and every conflict a real one (none on streams
        only one writer uses).
        """
        url = require_postgres()
        schemas.append(new_schema())
        writers, per_writer = 8, 2000
        total = writers * per_writer

        async def scenario() -> tuple[list[list[RecordedEvent]], list[dict[str, Any]], int]:
            async with PostgresEventStore(url, schema=schemas[-1], poll_interval=0.2) as store:
                seen: list[list[RecordedEvent]] = [[], []]
                tails = [asyncio.create_task(collect(store, total, s)) for s in seen]
                children = [
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        str(WRITER),
                        url,
                        schemas[-1],
                        str(n),
                        str(per_writer),
                        str(n + 1),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    for n in range(writers)
                ]
                outputs = [await child.communicate() for child in children]
                assert [child.returncode for child in children] == [0] * writers
                await asyncio.wait_for(asyncio.gather(*tails), timeout=120)
                reports = [json.loads(out) for out, _ in outputs]
                streams = {stream for r in reports for _, _, stream in r["stored"]}
                gaps = 0
                for stream in streams:
                    versions = [e.event.version for e in await store.read_stream(stream)]
                    gaps += versions != list(range(1, len(versions) + 1))
                return seen, reports, gaps

        seen, reports, gaps = asyncio.run(scenario())
        stored = {event_id: position for r in reports for event_id, position, _ in r["stored"]}
        assert len(stored) == total
        for delivered in seen:
            positions = [r.position for r in delivered]
            assert positions == sorted(positions), "out of order"
            assert len(set(positions)) == total, "duplicated"
            assert {str(r.event.event_id): r.position for r in delivered} == stored, "lost"
        assert gaps == 0, "a stream's versions are not contiguous"
        conflicts = [c for r in reports for c in r["conflicts"]]
        assert conflicts, "the shared streams were never contended"
        for stream, expected, actual in conflicts:
            assert stream.startswith("shared-"), f"a false conflict on {stream}"
            assert actual > expected, (stream, expected, actual)


class TestCancellation:
    async def test_a_cancel_while_waiting_for_a_connection_is_not_lost(
        self, schemas: list[str]
    ) -> None:
        """A query cancelled just as the pool hands it a connection still ends cancelled.

        On Python 3.11 the pool's wait (asyncio.wait_for) can return the
        connection and drop the cancellation (python/cpython#86296); a
        projector's standby loop then never stopped.
        """
        schemas.append(new_schema())
        async with PostgresEventStore(require_postgres(), schema=schemas[-1], max_size=1) as store:
            for _ in range(5):
                held = await store._db.pool.getconn()
                waiting = asyncio.create_task(store.load_checkpoint("p"))
                await asyncio.sleep(0.05)  # it waits for the pool's only connection
                await store._db.pool.putconn(held)
                waiting.cancel()  # in the same tick as the hand-over
                with pytest.raises(asyncio.CancelledError):
                    await waiting
                assert await store.load_checkpoint("p") == 0  # the connection went back


class TestServerErrors:
    async def test_a_lock_timeout_is_an_answer_not_an_unknown_outcome(
        self, schemas: list[str]
    ) -> None:
        """A statement the server refused on a live connection was rolled back: say so at once.

        It must not be taken for a lost connection: no probing for its
        outcome, no ending its server process, no retry.
        """
        schemas.append(new_schema())
        url = require_postgres()
        timed = f"{url}?options=-c%20lock_timeout%3D200"
        async with PostgresEventStore(timed, schema=schemas[-1], connect_timeout=4) as store:
            await store.append("locked", [deposit(1)], expected_version=0)
            table = f'"{store.schema}".fabula_streams'
            lock = f"SELECT 1 FROM {table} WHERE stream_id = %s FOR UPDATE"  # noqa: S608
            with psycopg.connect(url) as holder:
                holder.execute(lock, ("locked",))
                for expected in (1, fabula.ExpectedVersion.ANY):
                    with pytest.raises(fabula.StoreUnavailableError) as caught:
                        await store.append("locked", [deposit(2)], expected_version=expected)
                    assert "lock timeout" in str(caught.value)
                    assert "unknown" not in str(caught.value)
                holder.rollback()
            assert [r.event.version for r in await store.read_stream("locked")] == [1]
            await store.append("locked", [deposit(3)], expected_version=1)


class TestConnectionLoss:
    async def test_every_pooled_connection_dead_after_a_restart(self, schemas: list[str]) -> None:
        """After the server ended every pooled connection, the next calls simply work.

        One dead connection found means the rest are likely dead too (a
        restart): the pool is checked before the retry, not retried into
        the next dead one.
        """
        schemas.append(new_schema())
        url = require_postgres()
        async with PostgresEventStore(url, schema=schemas[-1], min_size=4, max_size=4) as store:
            await asyncio.gather(*(store.read_stream(f"s{n}") for n in range(8)))
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (f"fabula:{store.schema}",),
                )
            await asyncio.sleep(0.2)
            assert await store.read_stream("s1") == []
            await store.append("s1", [deposit(1)], expected_version=0)

    async def test_a_killed_connection_fails_or_succeeds_as_it_says(
        self, store: PostgresEventStore
    ) -> None:
        """Backends terminated at random during appends: each caller is told the truth.

        Success means the events are stored (with the positions returned);
        StoreUnavailableError means they are not.
        """
        url = require_postgres()
        rng = random.Random(3)
        outcomes: list[tuple[list[Deposited], fabula.AppendResult | None]] = []
        done = asyncio.Event()

        async def append(n: int) -> None:
            events = [deposit(k) for k in range(rng.randint(1, 5))]
            try:
                result = await store.append(f"c-{n}", events, expected_version=0)
            except fabula.StoreUnavailableError:
                outcomes.append((events, None))
            else:
                outcomes.append((events, result))

        async def kill() -> int:
            killed = 0
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                while not done.is_set():
                    await asyncio.sleep(rng.uniform(0, 0.01))
                    cursor = await conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND state <> 'idle'",
                        (f"fabula:{store.schema}",),
                    )
                    killed += sum(1 for (ok,) in await cursor.fetchall() if ok)
            return killed

        killer = asyncio.create_task(kill())
        for start in range(0, 300, 10):
            await asyncio.gather(*(append(n) for n in range(start, start + 10)))
        done.set()
        killed = await killer

        failed = [events for events, result in outcomes if result is None]
        # Per stream, not through the global log: read_all stops below any
        # transaction open elsewhere on the server, which is not what this checks.
        stored = {
            r.event.event_id: r.position
            for n in range(300)
            for r in await store.read_stream(f"c-{n}")
        }
        assert killed > 0
        for events, result in outcomes:
            ids = [e.event_id for e in events]
            if result is None:
                assert not any(i in stored for i in ids), "told it failed, but it was stored"
            else:
                assert all(i in stored for i in ids), "told it succeeded, but it was lost"
                assert stored[ids[-1]] == result.position
        assert failed, "no append was interrupted; the test proved nothing"

    async def test_an_unanswered_commit_is_resolved_by_looking(
        self, store: PostgresEventStore, holds: list[HeldWriter]
    ) -> None:
        """The resolver waits for the old server process to end, then looks for the events."""
        url = require_postgres()
        error = fabula.StoreUnavailableError("connection lost during COMMIT")
        stored = [deposit(1), deposit(2)]
        await store.append("done", stored, expected_version=0)
        async with await psycopg.AsyncConnection.connect(url) as gone:
            dead = gone.info.backend_pid
        ids = [e.event_id for e in stored]
        assert await store._appender._outcome_of_lost_commit(error, dead, ids, None) is True
        assert (
            await store._appender._outcome_of_lost_commit(error, dead, [deposit(3).event_id], None)
            is False
        )

        # A server process still holding the uncommitted transaction is ended
        # (after a grace period), so it can no longer commit; then: not stored.
        store._db.connect_timeout = 1.0
        held = HeldWriter(store, "held", holds)
        pending = deposit(4)
        await held.begin([pending])
        assert held.conn is not None
        pid = held.conn.info.backend_pid
        assert (
            await store._appender._outcome_of_lost_commit(error, pid, [pending.event_id], None)
            is False
        )
        with pytest.raises(psycopg.OperationalError):
            await held.commit()
        assert await store.read_stream("held") == []


PROJECTOR = Path(__file__).parent / "support" / "postgres_projector_child.py"


class TestStandbyProjectors:
    def test_the_standby_takes_over_from_a_killed_projector(self, schemas: list[str]) -> None:
        """Two projector processes: one active, one standing by. SIGKILL the active one
        mid-stream; the other takes over from the checkpoint and the read model ends
        equal to the events."""
        url = require_postgres()
        schemas.append(new_schema())

        async def scenario() -> tuple[dict[str, Decimal], dict[str, Decimal], int]:
            async with PostgresEventStore(url, schema=schemas[-1]) as store:
                expected = await fill(store, 5, 200)
                children = [
                    await asyncio.create_subprocess_exec(
                        sys.executable, str(PROJECTOR), url, schemas[-1],
                        stdout=asyncio.subprocess.PIPE,
                    )
                    for _ in range(2)
                ]  # fmt: skip
                lines = [child.stdout for child in children]
                assert all(line is not None for line in lines)

                async def active() -> int:
                    waits = {
                        asyncio.create_task(line.readline()): n  # type: ignore[union-attr]
                        for n, line in enumerate(lines)
                    }
                    while True:
                        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                        for task in done:
                            n = waits.pop(task)
                            if task.result() == b"running\n":
                                for other in waits:
                                    other.cancel()
                                return n
                            waits[asyncio.create_task(lines[n].readline())] = n  # type: ignore[union-attr]

                first = await asyncio.wait_for(active(), timeout=30)
                more = await fill(store, 5, 200)  # while the first one works
                children[first].kill()
                await children[first].wait()
                survivor = children[1 - first]
                while (await survivor.stdout.readline()) != b"running\n":  # type: ignore[union-attr]
                    pass
                head = await store.head_position()
                for _ in range(300):
                    if await store.load_checkpoint("balances") >= head:
                        break
                    await asyncio.sleep(0.1)
                survivor.kill()
                await survivor.wait()
                total = {k: expected[k] + more[k] for k in expected}
                return balances(store), total, await store.load_checkpoint("balances") - head

        found, total, behind = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
        assert behind >= 0, "the standby did not catch up"
        assert found == total


class TestSchemaNames:
    @pytest.mark.parametrize("schema", ["information_schema", "pg_catalog", "PG_temp_1", "pg_x"])
    def test_postgresqls_own_schemas_are_refused(self, schema: str) -> None:
        with pytest.raises(ValueError, match="belongs to PostgreSQL itself"):
            PostgresEventStore(require_postgres(), schema=schema)

    @pytest.mark.parametrize("schema", ["", "a-b", "x" * 42, "1abc", 'a"b'])
    def test_only_plain_identifiers(self, schema: str) -> None:
        with pytest.raises(ValueError, match="plain identifier"):
            PostgresEventStore(require_postgres(), schema=schema)


class TestConnectionStrings:
    def test_a_malformed_url_is_refused_at_once_without_its_password(self) -> None:
        """The driver's message quotes the whole string: the password is masked, no cause kept."""
        with pytest.raises(ValueError, match="not a PostgreSQL connection string") as info:
            PostgresEventStore("postgresql://app:s3cret@[::1/x")
        assert "s3cret" not in str(info.value)
        assert info.value.__cause__ is None
        assert info.value.__suppress_context__

    async def test_a_bad_option_is_reported_as_the_server_would(self) -> None:
        """sslmode=bogus fails the first connection with the driver's reason, not a pool timeout."""
        url = require_postgres()
        url += ("&" if "?" in url else "?") + "password=s3cret&sslmode=bogus"
        store = PostgresEventStore(url, connect_timeout=30)
        with pytest.raises(
            fabula.StoreUnavailableError, match='invalid sslmode value: "bogus"'
        ) as info:
            await store.open()
        assert "s3cret" not in str(info.value)
        await store.close()
