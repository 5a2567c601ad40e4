"""The SQLite store: the contract suite on a file and in memory, plus what only it can show."""

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import fabula
from fabula import (
    AppendResult,
    ConcurrencyError,
    ExpectedVersion,
    RecordedEvent,
    StoreError,
    StoreUnavailableError,
)
from fabula import _stored as stored_module
from fabula.exceptions import (
    DuplicateEventIdError,
    InvalidAppendError,
    InvalidReadError,
    SchemaVersionError,
    SerializationError,
    StoreClosedError,
)
from fabula.memory import InMemoryEventStore
from fabula.sqlite import SQLiteEventStore, Synchronous
from fabula.sqlite import _checkpoints as checkpoints
from fabula.sqlite import _schema as sql
from fabula.sqlite import _writer as writer_module
from fabula.sqlite._schema import SCHEMA_VERSION
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

from .support.stores import OpenSQLite


class TestSQLiteFileContract(
    EventStoreContract,
    ProjectionStoreContract,
    SnapshotStoreContract,
    IdempotencyStoreContract,
    ReactionStoreContract,
    TimerStoreContract,
):
    """A file-backed SQLiteEventStore passes every capability's contract."""

    @pytest.fixture
    def event_store_factory(self, tmp_path: Path) -> StoreFactory:
        count = 0

        async def build() -> SQLiteEventStore:
            nonlocal count
            count += 1
            return SQLiteEventStore(tmp_path / f"events-{count}.db")

        return build


class TestSQLiteMemoryContract(
    EventStoreContract,
    ProjectionStoreContract,
    SnapshotStoreContract,
    IdempotencyStoreContract,
    ReactionStoreContract,
    TimerStoreContract,
):
    """An in-memory SQLiteEventStore passes every capability's contract."""

    @pytest.fixture
    def event_store_factory(self) -> StoreFactory:
        async def build() -> SQLiteEventStore:
            return SQLiteEventStore(":memory:")

        return build


CHILD = Path(__file__).parent / "support" / "sqlite_child.py"


async def read_everything(store: SQLiteEventStore) -> list[RecordedEvent]:
    events: list[RecordedEvent] = []
    while page := await store.read_all(after=events[-1].position if events else 0, limit=500):
        events.extend(page)
    return events


class TestOpening:
    async def test_events_survive_reopening(self, tmp_path: Path) -> None:
        """Events written by one store are read by the next one opened on the file."""
        path = tmp_path / "events.db"
        async with SQLiteEventStore(path) as store:
            await store.append("acc-1", [deposit(1), deposit(2)], expected_version=0)
        async with SQLiteEventStore(path) as store:
            assert [r.event.version for r in await store.read_stream("acc-1")] == [1, 2]
            assert await store.head_position() == 2

    def test_schema_version_is_stored_and_wal_is_on(self, tmp_path: Path) -> None:
        """A new file records its schema version and is in WAL mode."""
        path = tmp_path / "events.db"
        asyncio.run(SQLiteEventStore(path).close())
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute(
                "SELECT value FROM fabula_meta WHERE key = 'schema_version'"
            ).fetchone() == (str(SCHEMA_VERSION),)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"fabula_events", "fabula_snapshots", "fabula_checkpoints"} <= tables
        assert "fabula_idempotency" in tables

    def test_opening_again_keeps_everything(self, tmp_path: Path) -> None:
        """Opening an existing fabula file again changes neither its schema nor its events."""
        path = tmp_path / "events.db"

        async def write() -> None:
            async with SQLiteEventStore(path) as store:
                await store.append("acc-1", [deposit()], expected_version=ExpectedVersion.ANY)

        def schema() -> list[tuple[str, str]]:
            with closing(sqlite3.connect(path)) as conn:
                return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()

        asyncio.run(write())
        before = schema()
        for _ in range(2):
            asyncio.run(write())
        assert schema() == before
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT count(*) FROM fabula_events").fetchone() == (3,)

    def test_a_version_1_file_is_migrated(self, tmp_path: Path) -> None:
        """A file of schema version 1 gains the version 2 tables when opened."""
        path = tmp_path / "events.db"
        asyncio.run(SQLiteEventStore(path).close())
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("DROP TABLE fabula_skips")
            conn.execute("UPDATE fabula_meta SET value = '1' WHERE key = 'schema_version'")
        asyncio.run(SQLiteEventStore(path).close())
        with closing(sqlite3.connect(path)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            version = conn.execute("SELECT value FROM fabula_meta").fetchone()
        assert "fabula_skips" in tables
        assert version == (str(SCHEMA_VERSION),)

    def test_a_version_2_file_gains_the_reaction_tables(self, tmp_path: Path) -> None:
        """A file of schema version 2 gains parked events and timers, keeping its events."""
        path = tmp_path / "events.db"

        async def append() -> None:
            async with SQLiteEventStore(path) as store:
                await store.append("acc-1", [deposit()], expected_version=0)

        asyncio.run(append())
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("DROP TABLE fabula_parked")
            conn.execute("DROP TABLE fabula_timers")
            conn.execute("UPDATE fabula_meta SET value = '2' WHERE key = 'schema_version'")

        async def reopen() -> tuple[int, list[fabula.ParkedEvent], list[fabula.Timer]]:
            async with SQLiteEventStore(path) as store:
                events = await store.read_stream("acc-1")
                return len(events), await store.load_parked(), await store.load_timers()

        assert asyncio.run(reopen()) == (1, [], [])
        with closing(sqlite3.connect(path)) as conn:
            version = conn.execute("SELECT value FROM fabula_meta").fetchone()
        assert version == (str(SCHEMA_VERSION),)

    def test_an_unreadable_schema_version_is_a_store_error(self, tmp_path: Path) -> None:
        """A garbled schema version raises StoreError, not ValueError."""
        path = tmp_path / "events.db"
        asyncio.run(SQLiteEventStore(path).close())
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE fabula_meta SET value = 'v1' WHERE key = 'schema_version'")
        with pytest.raises(StoreError, match="unreadable fabula schema version 'v1'"):
            SQLiteEventStore(path)

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file written by a newer fabula fails with SchemaVersionError."""
        path = tmp_path / "events.db"
        asyncio.run(SQLiteEventStore(path).close())
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE fabula_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(SchemaVersionError, match="schema version 99") as info:
            SQLiteEventStore(path)
        assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)

    def test_a_file_that_is_not_a_database_is_refused(self, tmp_path: Path) -> None:
        """Opening a non-SQLite file raises StoreError naming the file."""
        path = tmp_path / "notes.txt"
        path.write_text("hello " * 1000)
        with pytest.raises(StoreError, match=r"notes\.txt"):
            SQLiteEventStore(path)

    def test_an_unreachable_path_is_unavailable(self, tmp_path: Path) -> None:
        """A path in a missing directory raises StoreUnavailableError."""
        with pytest.raises(StoreUnavailableError, match="missing"):
            SQLiteEventStore(tmp_path / "missing" / "events.db")

    def test_bad_synchronous_is_refused(self, tmp_path: Path) -> None:
        """Only FULL and NORMAL are accepted."""
        with pytest.raises(ValueError, match="OFF"):
            SQLiteEventStore(tmp_path / "e.db", synchronous="OFF")  # type: ignore[arg-type]


class TestWriting:
    async def test_commits_that_others_wait_for_run_off_the_event_loop(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """At FULL, appends that meet in the queue share one COMMIT, made in another thread.

        Only a lone append commits on the loop (see TestFailures); a commit
        that several appends wait for never stalls the loop for the sync.
        """
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        threads: dict[str, list[int]] = {}
        store._writer.connection.set_trace_callback(
            lambda statement: threads.setdefault(statement.split()[0], []).append(
                threading.get_ident()
            )
        )
        await asyncio.gather(
            *(store.append(f"acc-{n}", [deposit(n)], expected_version=0) for n in range(8))
        )
        await store.close()
        loop_thread = threading.get_ident()
        assert set(threads["BEGIN"]) == {loop_thread}
        assert 1 <= len(threads["COMMIT"]) < 8
        assert loop_thread not in threads["COMMIT"]

    async def test_failures_in_a_group_do_not_undo_others(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Concurrent appends committed together each get their own result or error."""
        store = open_sqlite(tmp_path / "e.db")
        await store.append("shared", [deposit()], expected_version=0)
        calls = [store.append("shared", [deposit(n)], expected_version=1) for n in range(10)] + [
            store.append(f"own-{n}", [deposit(n)], expected_version=0) for n in range(10)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        conflicts = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        assert len(conflicts) == 9
        assert sum(isinstance(o, AppendResult) for o in outcomes) == 11
        assert len(await store.read_stream("shared")) == 2
        for n in range(10):
            assert len(await store.read_stream(f"own-{n}")) == 1

    async def test_a_batch_failing_mid_insert_in_a_group_is_undone_alone(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """A batch whose second event hits a stored id leaves nothing; its group-mates land."""
        store = open_sqlite(tmp_path / "e.db")
        taken = deposit(99)
        await store.append("elsewhere", [taken], expected_version=0)
        first = deposit(1)
        outcomes = await asyncio.gather(
            store.append("acc-1", [first, taken], expected_version=0),
            store.append("acc-2", [deposit(2)], expected_version=0),
            store.append("acc-3", [deposit(3), deposit(4)], expected_version=0),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], DuplicateEventIdError)
        assert "elsewhere" in str(outcomes[0])
        assert [type(o) for o in outcomes[1:]] == [AppendResult, AppendResult]
        assert await store.read_stream("acc-1") == []
        stored = {r.event.event_id for r in await store.read_all()}
        assert first.event_id not in stored
        assert len(stored) == 4
        await store.close()

    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    async def test_a_locked_file_fails_with_store_unavailable(
        self, tmp_path: Path, synchronous: Synchronous, open_sqlite: OpenSQLite
    ) -> None:
        """While another process holds the write lock, an append waits, then fails cleanly."""
        path = tmp_path / "e.db"
        store = open_sqlite(path, busy_timeout=0.2, synchronous=synchronous)
        await store.append("acc-1", [deposit()], expected_version=0)
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError, match="locked"):
                await store.append("acc-1", [deposit()], expected_version=1)
            other.execute("ROLLBACK")
        assert (await store.append("acc-1", [deposit()], expected_version=1)).version == 2

    async def test_undecodable_rows_name_position_stream_and_type(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """A stored payload that does not decode raises SerializationError with its context."""
        path = tmp_path / "e.db"
        store = open_sqlite(path)
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE fabula_events SET data = '{\"amount\": 1.5}' WHERE position = 2")
        with pytest.raises(SerializationError) as info:
            await store.read_all()
        assert (info.value.position, info.value.stream_id, info.value.type_name) == (
            2,
            "acc-1",
            "fabula.testing.Deposited",
        )
        await store.close()


class TestLargeAppends:
    @pytest.mark.parametrize("kind", ["memory", "FULL", "NORMAL"])
    async def test_a_large_append_leaves_the_event_loop_running(
        self, tmp_path: Path, kind: str, open_sqlite: OpenSQLite, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """5,000 events are encoded (and, on SQLite, written) in a thread: other tasks go on.

        Where the encoding ran is what is checked: how many turns the loop
        gets meanwhile depends on the GIL's switch interval, not on fabula.
        """
        store: fabula.EventStore = (
            InMemoryEventStore()
            if kind == "memory"
            else open_sqlite(tmp_path / "e.db", synchronous=kind)
        )
        encoders: set[int] = set()
        prepare = stored_module.prepare_append

        def recording(*args: Any, **kwargs: Any) -> Any:
            encoders.add(threading.get_ident())
            return prepare(*args, **kwargs)

        monkeypatch.setattr(stored_module, "prepare_append", recording)
        batch = [deposit(note="x" * 100) for _ in range(5000)]
        appending = asyncio.create_task(store.append("big", batch, expected_version=0))
        await asyncio.sleep(0)  # the append starts, and hands the batch to a thread
        assert not appending.done(), "the append kept the loop to itself"
        result = await appending
        assert encoders
        assert threading.get_ident() not in encoders
        assert (result.version, len(await store.read_stream("big"))) == (5000, 5000)


class TestWriteAheadLog:
    LIMIT = 1 << 20  # 1 MiB

    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    async def test_the_wal_stays_bounded_under_sustained_writers_and_readers(
        self, tmp_path: Path, synchronous: Synchronous, open_sqlite: OpenSQLite
    ) -> None:
        """8 writers and a reader taking snapshots: the WAL stays within a few times its limit."""
        path = tmp_path / "e.db"
        store = open_sqlite(path, synchronous=synchronous, wal_limit=self.LIMIT)
        wal = Path(f"{path}-wal")
        sizes: list[int] = []
        writing = True

        def hold_snapshots() -> int:
            """Another process's reader: short transactions, one after another."""
            held = 0
            with closing(sqlite3.connect(path, isolation_level=None)) as reader:
                while writing:
                    reader.execute("BEGIN")
                    reader.execute("SELECT count(*) FROM fabula_events").fetchone()
                    time.sleep(0.01)
                    reader.execute("COMMIT")
                    held += 1
            return held

        async def write(n: int) -> None:
            for version in range(0, 1500, 5):
                batch = [deposit(note="x" * 300) for _ in range(5)]
                await store.append(f"acc-{n}", batch, expected_version=version)
                sizes.append(wal.stat().st_size)  # noqa: ASYNC240 - one stat, on purpose

        reading = asyncio.create_task(asyncio.to_thread(hold_snapshots))
        try:
            await asyncio.gather(*(write(n) for n in range(8)))
        finally:
            writing = False
            snapshots = await reading
        written = await store.head_position()
        assert written == 8 * 1500
        assert snapshots > 10
        # Far more went through the WAL than the bound: without restarts it would hold it all.
        assert path.stat().st_size > 4 * self.LIMIT
        assert max(sizes) <= 3 * self.LIMIT, f"the WAL reached {max(sizes)} bytes"
        assert len(await store.read_all(limit=20_000)) == written

    async def test_one_writer_writes_the_wal_over_from_its_start(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Small commits, one after another: the WAL file stays a few MiB, far under its limit.

        Each commit writes a few pages (~20 KiB); 2,500 of them are ~50 MiB
        of log. The writer checkpoints every few hundred commits, so SQLite
        writes the log from its start again, over pages the file has already
        (a cheaper disk sync than growing it), instead of growing it to the
        64 MiB limit. (At NORMAL no commit syncs: the writer leaves the log
        to the side checkpoints and to its limit.)
        """
        path = tmp_path / "e.db"
        store = open_sqlite(path, synchronous="FULL")
        wal = Path(f"{path}-wal")
        largest = 0
        for version in range(2500):
            await store.append(
                f"acc-{version % 50}", [deposit(note="x" * 300)], expected_version=version // 50
            )
            largest = max(largest, wal.stat().st_size)  # noqa: ASYNC240 - one stat, on purpose
        assert await store.head_position() == 2500
        assert largest < 12 << 20, f"the WAL grew to {largest} bytes"
        assert path.stat().st_size > 1 << 20  # the events did reach the database file

    async def test_a_cancelled_writer_lets_its_checkpoint_end_before_the_next_write(
        self, tmp_path: Path, open_sqlite: OpenSQLite, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The writer task cancelled (say, at loop teardown) mid-checkpoint: no write overlaps it.

        The checkpoint runs on the writer connection in the writer's thread;
        the task waits for it to end before it stops, so the next append's
        BEGIN on the loop never meets a checkpoint still running.
        """
        monkeypatch.setattr(checkpoints, "_REUSE_COMMITS", 1)  # a checkpoint after every commit
        in_checkpoint = threading.Event()
        passive = checkpoints.Checkpoints._passive

        def slow_passive(self: checkpoints.Checkpoints) -> bool:
            in_checkpoint.set()
            time.sleep(0.2)
            try:
                return passive(self)
            finally:
                in_checkpoint.clear()

        monkeypatch.setattr(checkpoints.Checkpoints, "_passive", slow_passive)
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        await store.append("a", [deposit(0)], expected_version=0)  # a checkpoint is now due
        first = asyncio.create_task(store.append("a", [deposit(1)], expected_version=1))
        while not in_checkpoint.is_set():  # noqa: ASYNC110 - a thread's event, not the loop's
            await asyncio.sleep(0.001)
        writer_task = store._writer._writer_task
        assert writer_task is not None
        writer_task.cancel()
        overlapping: list[str] = []  # run on the loop's thread while the checkpoint runs
        loop_thread = threading.get_ident()

        def trace(statement: str) -> None:
            if in_checkpoint.is_set() and threading.get_ident() == loop_thread:
                overlapping.append(statement)

        store._writer.connection.set_trace_callback(trace)
        second = asyncio.create_task(store.append("b", [deposit(2)], expected_version=0))
        outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        assert overlapping == []
        # Queued behind the cancelled writer: each is stored, or cancelled and not stored.
        for stream, outcome in zip(("a", "b"), outcomes, strict=True):
            assert isinstance(outcome, AppendResult | asyncio.CancelledError), outcome
            stored = len(await store.read_stream(stream))
            assert stored == {"a": 1, "b": 0}[stream] + isinstance(outcome, AppendResult)
        stored = len(await store.read_stream("b"))
        await store.append("b", [deposit(3)], expected_version=stored)  # a new writer task
        assert len(await store.read_stream("b")) == stored + 1

    def test_the_limit_must_be_a_sane_size(self, tmp_path: Path) -> None:
        for bad in (0, 1000, True, 2.5e6, "64MB"):
            with pytest.raises(ValueError, match="wal_limit"):
                SQLiteEventStore(tmp_path / "e.db", wal_limit=bad)  # type: ignore[arg-type]


class TestFailures:
    """What happens when the disk, the file or the caller misbehaves."""

    async def test_group_commit_shares_disk_syncs(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Concurrent appends at FULL commit together: fewer COMMITs than appends."""
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        commits = 0

        def trace(statement: str) -> None:
            nonlocal commits
            commits += statement == "COMMIT"

        await store.append("warm-up", [deposit()], expected_version=0)
        store._writer.connection.set_trace_callback(trace)
        await asyncio.gather(
            *(store.append(f"acc-{n}", [deposit(n)], expected_version=0) for n in range(32))
        )
        await store.close()
        assert 1 <= commits <= 8

    async def test_one_caller_commits_on_the_loop_at_full(
        self, tmp_path: Path, open_sqlite: OpenSQLite, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Appends one after another, nobody else waiting: each commit is made on the loop's thread.

        It saves the writer thread's two wake-ups per commit; concurrent
        appends still share a commit (the test above). The disk is taken
        to be fast whatever it is: on a loaded machine syncs can average
        over the limit, which sends commits to the thread (the next test).
        """
        monkeypatch.setattr(writer_module, "_SLOW_SYNC", float("inf"))
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        threads: list[int] = []
        store._writer.connection.set_trace_callback(
            lambda statement: (
                threads.append(threading.get_ident()) if statement == "COMMIT" else None
            )
        )
        for version in range(20):
            await store.append("acc", [deposit(version)], expected_version=version)
        assert threads == [threading.get_ident()] * 20
        assert len(await store.read_stream("acc")) == 20

    async def test_a_slow_disk_keeps_full_commits_off_the_loop(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """While commits take long on average, they wait for the disk in the writer's thread."""
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        threads: list[int] = []
        store._writer.connection.set_trace_callback(
            lambda statement: (
                threads.append(threading.get_ident()) if statement == "COMMIT" else None
            )
        )
        store._writer._sync_time = 10.0  # as if every sync had taken seconds
        for version in range(5):
            await store.append("acc", [deposit(version)], expected_version=version)
        assert len(threads) == 5
        assert threading.get_ident() not in threads

    async def test_an_append_cancelled_before_its_commit_stores_nothing(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Cancelled during its turn of the loop (FULL, alone): nothing is written."""
        store = open_sqlite(tmp_path / "e.db", synchronous="FULL")
        appending = asyncio.create_task(store.append("acc", [deposit()], expected_version=0))
        await asyncio.sleep(0)  # the append is queued and gives the loop its turn
        appending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await appending
        assert await store.read_stream("acc") == []
        await store.append("acc", [deposit()], expected_version=0)
        assert len(await store.read_stream("acc")) == 1

    async def test_close_during_an_appends_turn_commits_it(self, tmp_path: Path) -> None:
        """close() while a lone FULL append gives the loop its turn: it is committed first."""
        path = tmp_path / "e.db"
        store = SQLiteEventStore(path, synchronous="FULL")
        appending = asyncio.create_task(store.append("acc", [deposit()], expected_version=0))
        await asyncio.sleep(0)  # the append is queued and gives the loop its turn
        await store.close()
        assert appending.done(), "close() returned before the append it found was committed"
        assert appending.result().version == 1
        async with SQLiteEventStore(path) as again:
            assert len(await again.read_stream("acc")) == 1

    async def test_cancelling_close_still_settles_and_closes(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """A cancelled close() finishes the shutdown: every caller gets an answer."""
        path = tmp_path / "e.db"
        store = open_sqlite(path, synchronous="FULL")
        tasks = [
            asyncio.create_task(store.append(f"acc-{n}", [deposit(n)], expected_version=0))
            for n in range(200)
        ]
        await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(store.close(), 0.0005)
        await asyncio.wait_for(store.close(), 30)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        stored = [o for o in outcomes if isinstance(o, AppendResult)]
        assert all(isinstance(o, AppendResult | StoreClosedError) for o in outcomes)
        async with SQLiteEventStore(path) as again:
            assert len(await again.read_all(limit=1000)) == len(stored)

    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    async def test_a_corrupted_file_fails_appends_instead_of_hanging(
        self, tmp_path: Path, synchronous: Synchronous
    ) -> None:
        """If the file is clobbered under the store, appends raise StoreError."""
        path = tmp_path / "e.db"
        store = SQLiteEventStore(path, synchronous=synchronous)  # its close fails: not a fixture
        await store.append("acc-1", [deposit()], expected_version=0)
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("INSERT INTO fabula_meta VALUES ('x', 'y')")  # a change to notice
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with path.open("r+b") as file:
            file.write(b"\xde\xad\xbe\xef" * 25)  # clobber the 100-byte header
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.append("acc-1", [deposit()], expected_version=1), 10)
        with contextlib.suppress(StoreError):
            await store.close()

    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    async def test_disk_full_fails_whole_appends_only(
        self, tmp_path: Path, synchronous: Synchronous, open_sqlite: OpenSQLite
    ) -> None:
        """When the database fills up, each append is stored whole or reported failed."""
        store = open_sqlite(tmp_path / "e.db", synchronous=synchronous)
        await store.append("warm-up", [deposit()], expected_version=0)
        pages = store._writer.connection.execute("PRAGMA page_count").fetchone()[0]
        store._writer.connection.execute(f"PRAGMA max_page_count = {pages + 3}")
        batches = [[Deposited(amount=Decimal(n), note="x" * 400)] * 1 for n in range(80)]
        outcomes = await asyncio.gather(
            *(
                store.append(f"acc-{n}", batch, expected_version=0)
                for n, batch in enumerate(batches)
            ),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if not isinstance(o, AppendResult)]
        assert failed, "the database never filled up"
        assert all(isinstance(o, StoreError) for o in failed)
        stored = {r.event.event_id for r in await store.read_all(limit=1000)}
        for batch, outcome in zip(batches, outcomes, strict=True):
            assert (batch[0].event_id in stored) == isinstance(outcome, AppendResult)
        await store.close()


class TestBadInput:
    async def test_out_of_range_numbers_are_invalid_reads(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Positions and limits beyond 64 bits raise InvalidReadError, as in every store."""
        store = open_sqlite(tmp_path / "e.db")
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.read_all(after=2**63),
            lambda: store.read_all(limit=2**63),
            lambda: store.read_stream("acc-1", from_version=2**63),
        ]
        for call in calls:
            with pytest.raises(InvalidReadError, match="2\\*\\*63"):
                await call()
        with pytest.raises(InvalidReadError):
            store.subscribe(after=2**63)

    async def test_unencodable_text_is_refused(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Stream ids and type names that are not valid UTF-8 are refused, not crashed on."""
        store = open_sqlite(tmp_path / "e.db")
        with pytest.raises(InvalidAppendError):
            await store.append("bad\udc80", [deposit()], expected_version=0)
        with pytest.raises(InvalidReadError):
            await store.read_stream("bad\udc80")
        with pytest.raises(InvalidReadError):
            await store.read_all(event_types=["bad\udc80"])

    async def test_corrupt_ids_and_timestamps_name_the_row(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """A stored event id or timestamp that does not parse raises SerializationError."""
        path = tmp_path / "e.db"
        store = open_sqlite(path)
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        for column, value in (("timestamp", "yesterday"), ("event_id", b"short")):
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(f"UPDATE fabula_events SET {column} = ? WHERE position = 2", (value,))  # noqa: S608
            with pytest.raises(SerializationError, match="corrupt") as info:
                await store.read_stream("acc-1")
            assert (info.value.position, info.value.stream_id) == (2, "acc-1")
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute("DELETE FROM fabula_events WHERE position = 2")
            await store.append("acc-1", [deposit()], expected_version=1)
        await store.close()


class TestSubscribing:
    async def test_filtered_reads_never_skip_a_commit_between_their_queries(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """A filtered subscription reads its head and rows in one snapshot: nothing twice."""
        path = tmp_path / "e.db"
        store = open_sqlite(path, poll_interval=0.01)
        await store.append("acc-1", [deposit(1)], expected_version=0)
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        open_sqlite(path)  # a second store on the file, open throughout
        pending = [deposit(n) for n in range(2, 6)]
        injected = 0

        def inject(statement: str) -> None:
            nonlocal injected
            if statement.lstrip().startswith("SELECT position") and injected < len(pending):
                # Commit a matching event from another connection between the
                # head query and the rows query of a filtered scan.
                event = pending[injected]
                injected += 1
                row = (
                    f"acc-x{injected}",
                    1,
                    event.event_id.bytes,
                    "fabula.testing.Deposited",
                    1,
                    event.timestamp.isoformat(),
                    '{"amount":"1","note":""}',
                    "{}",
                )
                other.execute(sql.INSERT_EVENT, row)

        store._reader.set_trace_callback(inject)
        seen: list[RecordedEvent] = []

        async def consume() -> None:
            async for recorded in store.subscribe(event_types=[Deposited]):
                seen.append(recorded)
                if len(seen) == 5:
                    return

        await asyncio.wait_for(consume(), 10)
        store._reader.set_trace_callback(None)
        positions = [r.position for r in seen]
        assert positions == sorted(set(positions)) == [1, 2, 3, 4, 5]
        other.close()

    async def test_subscription_sees_other_writers_by_polling(
        self, tmp_path: Path, open_sqlite: OpenSQLite
    ) -> None:
        """Events appended through another store on the same file arrive within the poll."""
        path = tmp_path / "e.db"
        reader = open_sqlite(path, poll_interval=0.02)
        writer = open_sqlite(path)
        received: list[RecordedEvent] = []
        done = asyncio.Event()

        async def consume() -> None:
            async for recorded in reader.subscribe(event_types=[Deposited]):
                received.append(recorded)
                if len(received) == 3:
                    done.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        for n in range(3):
            await writer.append(f"acc-{n}", [deposit(n)], expected_version=0)
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        assert [r.position for r in received] == [1, 2, 3]
        await reader.close()
        await writer.close()


def read_acks(lines: list[str]) -> list[tuple[str, int, int, list[str]]]:
    acks = []
    for line in lines:
        if line.startswith("ack "):
            _, stream_id, version, position, ids = line.split()
            acks.append((stream_id, int(version), int(position), ids.split(",")))
    return acks


def check_log(events: list[RecordedEvent], acknowledged: set[str]) -> None:
    """Every acknowledged event is there, no batch is partial, positions and versions run on."""
    positions = [r.position for r in events]
    assert positions == sorted(set(positions))
    assert acknowledged <= {str(r.event.event_id) for r in events}
    versions: dict[str, list[int]] = {}
    batches: dict[str, list[tuple[int, int, RecordedEvent]]] = {}
    for recorded in events:
        versions.setdefault(recorded.stream_id, []).append(recorded.event.version)
        assert isinstance(recorded.event, Deposited)
        if recorded.stream_id == "after-crash":
            continue
        tag, part = recorded.event.note.split(":")
        index, size = (int(x) for x in part.split("/"))
        batches.setdefault(tag, []).append((index, size, recorded))
    for numbers in versions.values():
        assert numbers == list(range(1, len(numbers) + 1))
    for members in batches.values():
        size = members[0][1]
        assert [index for index, _, _ in members] == list(range(size)), "a partial batch"
        assert len({r.stream_id for _, _, r in members}) == 1


class TestCrashSafety:
    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    def test_sigkill_never_loses_acknowledged_or_splits_batches(
        self, tmp_path: Path, synchronous: str
    ) -> None:
        """A writer killed with SIGKILL at random moments loses nothing it acknowledged."""
        path = tmp_path / "e.db"
        rng = random.Random(synchronous)
        acknowledged: set[str] = set()
        for round_number in range(10):
            child = subprocess.Popen(  # noqa: S603 - our own test helper
                [sys.executable, str(CHILD), "crash", str(path), synchronous, str(round_number)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            seen = [child.stdout.readline() for _ in range(rng.randint(1, 60))]
            time.sleep(rng.random() / 200)
            child.send_signal(signal.SIGKILL)
            child.wait()
            seen += child.stdout.readlines()
            child.stdout.close()
            acks = read_acks(seen)
            assert acks, "the child acknowledged nothing before it was killed"
            acknowledged |= {event_id for *_, ids in acks for event_id in ids}

            async def verify(acknowledged: set[str]) -> None:
                async with SQLiteEventStore(path) as store:
                    check_log(await read_everything(store), acknowledged)
                    await store.append(
                        "after-crash", [deposit()], expected_version=ExpectedVersion.ANY
                    )

            asyncio.run(verify(acknowledged))

    @pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
    def test_two_processes_writing_lose_and_duplicate_nothing(
        self, tmp_path: Path, synchronous: str
    ) -> None:
        """Two processes appending to the same streams keep optimistic concurrency."""
        path = tmp_path / "e.db"
        asyncio.run(SQLiteEventStore(path).close())
        children = [
            subprocess.Popen(  # noqa: S603 - our own test helper
                [sys.executable, str(CHILD), "contend", str(path), name, "150", synchronous],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in ("left", "right")
        ]
        outputs = [child.communicate(timeout=300)[0] for child in children]
        assert [child.returncode for child in children] == [0, 0]
        acks = read_acks("\n".join(outputs).splitlines())
        assert len(acks) == 300

        async def verify() -> None:
            async with SQLiteEventStore(path) as store:
                events = await read_everything(store)
                assert sorted(str(r.event.event_id) for r in events) == sorted(
                    ids[0] for *_, ids in acks
                )
                for stream_id in {r.stream_id for r in events}:
                    stream = await store.read_stream(stream_id)
                    assert [r.event.version for r in stream] == list(range(1, len(stream) + 1))
                by_stream_version = {(s, v) for s, v, _, _ in acks}
                assert len(by_stream_version) == 300

        asyncio.run(verify())
