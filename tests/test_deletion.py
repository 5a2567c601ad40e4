"""Deleting a stream (a tombstone), then purging its events, on every store."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import fabula
from fabula import ExpectedVersion, StreamAppend
from fabula.exceptions import StreamDeletedError, StreamNotDeletedError
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore

from .support.postgres import new_schema, require_postgres


@fabula.event("tests.deletion.Noted")
@attrs.frozen(kw_only=True)
class Noted(fabula.DomainEvent[str]):
    """A line of text in a notebook stream."""

    text: str


@attrs.define
class Notebook(fabula.Aggregate[str]):
    """The lines noted so far."""

    lines: list[str] = attrs.Factory(list)

    @fabula.apply
    def _noted(self, event: Noted) -> None:
        self.lines.append(event.text)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, schemas: list[str]
) -> AsyncIterator[Any]:
    if request.param == "memory":
        opened: Any = InMemoryEventStore()
    elif request.param == "sqlite":
        opened = SQLiteEventStore(tmp_path / "e.db")
    else:
        schemas.append(new_schema())
        opened = PostgresEventStore(require_postgres(), schema=schemas[-1], poll_interval=0.05)
        await opened.open()
    yield opened
    await opened.close()


def noted(stream: str, *texts: str) -> list[Noted]:
    return [Noted(aggregate_id=stream, text=text) for text in texts]


async def everything(store: Any) -> list[fabula.RecordedEvent]:
    found: list[fabula.RecordedEvent] = []
    after = 0
    while page := await store.read_all(after=after, limit=100):
        found.extend(page)
        after = page[-1].position
    return found


class TestTombstone:
    async def test_a_deleted_stream_takes_no_events_and_does_not_load(self, store: Any) -> None:
        await store.append("nb-1", noted("nb-1", "a", "b"), expected_version=0)
        await store.append("nb-2", noted("nb-2", "kept"), expected_version=0)
        deleted = await store.delete_stream("nb-1")
        assert deleted.version == 3
        for expected in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS, 3, 2):
            with pytest.raises(StreamDeletedError) as refused:
                await store.append("nb-1", noted("nb-1", "late"), expected_version=expected)
            assert refused.value.stream_id == "nb-1"
        with pytest.raises(StreamDeletedError):
            await store.append_many([StreamAppend("nb-1", noted("nb-1", "x"), expected_version=3)])
        with pytest.raises(StreamDeletedError):
            await store.read_stream("nb-1")
        with pytest.raises(StreamDeletedError):
            await fabula.Repository(store).get(Notebook, "nb-1")
        assert (await fabula.Repository(store).get(Notebook, "nb-2")).lines == ["kept"]
        assert len(await store.read_stream("nb-1", limit=2)) == 2  # short of the tombstone
        with pytest.raises(StreamDeletedError):
            await store.delete_stream("nb-1")
        log = await everything(store)
        assert isinstance(log[-1].event, fabula.StreamDeleted)
        assert log[-1].stream_id == "nb-1"

    async def test_a_stream_id_that_is_not_one_is_refused(self, store: Any) -> None:
        for bad in ("", 12, None):
            with pytest.raises(fabula.exceptions.InvalidReadError):
                await store.purge_stream(bad)
            with pytest.raises(fabula.exceptions.InvalidAppendError):
                await store.delete_stream(bad)

    async def test_only_an_existing_stream_is_deleted(self, store: Any) -> None:
        with pytest.raises(fabula.ConcurrencyError):
            await store.delete_stream("nowhere")
        await store.append("nb-1", noted("nb-1", "a"), expected_version=0)
        with pytest.raises(fabula.ConcurrencyError):
            await store.delete_stream("nb-1", expected_version=5)
        assert (await store.delete_stream("nb-1", expected_version=1)).version == 2

    async def test_a_projection_learns_of_the_deletion(self, store: Any) -> None:
        """The tombstone is in the log: a projection drops what it kept of the stream."""

        class Lines(fabula.Projection[Any]):
            name = "lines"

            def __init__(self) -> None:
                self.by_stream: dict[str, int] = {}

            @fabula.handles
            def _noted(self, event: Noted, tx: Any) -> None:
                del tx
                self.by_stream[event.aggregate_id] = self.by_stream.get(event.aggregate_id, 0) + 1

            @fabula.handles
            def _deleted(self, event: fabula.StreamDeleted, tx: Any) -> None:
                del tx
                self.by_stream.pop(event.aggregate_id, None)

        lines = Lines()
        projector = fabula.Projector(store, [lines])
        await store.append("nb-1", noted("nb-1", "a", "b"), expected_version=0)
        await store.append("nb-2", noted("nb-2", "c"), expected_version=0)
        await projector.catch_up()
        assert lines.by_stream == {"nb-1": 2, "nb-2": 1}
        await store.delete_stream("nb-1")
        await projector.catch_up()
        assert lines.by_stream == {"nb-2": 1}

    async def test_appends_racing_a_delete_all_land_before_the_tombstone(self, store: Any) -> None:
        """Writers append to a stream while it is deleted: each lands before it, or is refused."""
        await store.append("nb-1", noted("nb-1", "first"), expected_version=0)
        landed: list[int] = []
        refused: list[int] = []

        async def writer(n: int) -> None:
            for k in range(10):
                try:
                    result = await store.append(
                        "nb-1", noted("nb-1", f"{n}-{k}"), expected_version=ExpectedVersion.ANY
                    )
                except StreamDeletedError:
                    refused.append(n)
                    return
                landed.append(result.version)
                await asyncio.sleep(0)

        async def delete() -> None:
            while len(landed) < 6:  # noqa: ASYNC110 - until some have landed
                await asyncio.sleep(0.001)
            await store.delete_stream("nb-1")

        await asyncio.gather(*(writer(n) for n in range(5)), delete())
        assert refused
        # In version order: on PostgreSQL two appends to one stream that race for
        # it may take log positions in the other order (positions follow
        # transaction ids, taken before the stream's lock is).
        stream = sorted(
            (r for r in await everything(store) if r.stream_id == "nb-1"),
            key=lambda r: r.event.version,
        )
        tombstone = stream[-1]
        assert isinstance(tombstone.event, fabula.StreamDeleted)
        assert tombstone.event.version == len(stream)
        assert max(landed) < tombstone.event.version
        assert sorted(r.event.version for r in stream) == list(range(1, len(stream) + 1))


class TestPurge:
    async def test_purging_removes_the_events_keeps_the_tombstone_and_every_position(
        self, store: Any
    ) -> None:
        with pytest.raises(StreamNotDeletedError):
            await store.purge_stream("nb-1")
        await store.append("nb-1", noted("nb-1", "secret-a", "secret-b"), expected_version=0)
        await store.append("nb-2", noted("nb-2", "kept"), expected_version=0)
        repo = fabula.Repository(store, snapshot_every=1)
        notebook = Notebook(id="nb-3")
        notebook.record(Noted(text="snap"))
        await repo.save(notebook)
        await store.delete_stream("nb-3")
        with pytest.raises(StreamNotDeletedError):
            await store.purge_stream("nb-1")
        await store.delete_stream("nb-1")
        before = {r.position: r for r in await everything(store)}
        assert await store.purge_stream("nb-1") == 2
        assert await store.purge_stream("nb-1") == 0  # nothing left but the tombstone
        assert await store.purge_stream("nb-3") == 1
        assert await store.load_snapshot("nb-3") is None
        after = await everything(store)
        kept = {r.position: r.stream_id for r in after}
        assert kept == {
            p: r.stream_id
            for p, r in before.items()
            if r.stream_id not in {"nb-1", "nb-3"} or isinstance(r.event, fabula.StreamDeleted)
        }
        assert all("secret" not in getattr(r.event, "text", "") for r in after)
        with pytest.raises(StreamDeletedError):
            await store.read_stream("nb-1")
        with pytest.raises(StreamDeletedError):
            await store.append("nb-1", noted("nb-1", "again"), expected_version=ExpectedVersion.ANY)
        head = await store.head_position()
        later = await store.append("nb-4", noted("nb-4", "later"), expected_version=0)
        assert later.position > head  # no position is given twice

    async def test_a_purged_sqlite_stream_is_in_no_file(self, tmp_path: Path) -> None:
        path = tmp_path / "e.db"
        async with SQLiteEventStore(path) as store:
            await store.append("nb-1", noted("nb-1", "very-secret-text"), expected_version=0)
            await store.append("nb-2", noted("nb-2", "ordinary"), expected_version=0)
            assert await store.scrub()
            assert b"very-secret-text" in path.read_bytes()
            await store.delete_stream("nb-1")
            await store.purge_stream("nb-1")
            content = _contents(tmp_path)
            assert b"very-secret-text" not in content
            assert b"ordinary" in content
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM fabula_events").fetchone()
        assert count == 2  # nb-2's event and nb-1's tombstone


def _contents(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()))


async def test_a_reader_with_its_own_registry_reads_a_tombstone(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "e.db") as store:
        await store.append("s", [Noted(aggregate_id="s", text="x")], expected_version=0)
        await store.delete_stream("s")
    registry = fabula.EventRegistry()
    registry.register(Noted, "tests.deletion.Noted")
    async with SQLiteEventStore(
        tmp_path / "e.db", serializer=fabula.EventSerializer(registry)
    ) as store:
        assert isinstance((await store.read_all())[-1].event, fabula.StreamDeleted)


def test_the_sqlite_statements_name_the_tombstone_as_fabula_does() -> None:
    """The tombstone index and the stream-state query spell the stored name in SQL."""
    from fabula._deletion import TOMBSTONE  # noqa: PLC0415
    from fabula.sqlite import _schema as sql  # noqa: PLC0415

    spelled = f"type = '{TOMBSTONE}'"
    assert spelled in sql.STREAM_STATE
    assert any(spelled in statement for statement in sql.MIGRATIONS[3])
