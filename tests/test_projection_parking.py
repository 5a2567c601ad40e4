"""Projections that opt into parking: a poison event parks its stream, the others go on."""

import asyncio
from typing import Any, ClassVar

import attrs
import pytest

import fabula
from fabula.memory import InMemoryEventStore
from fabula.testing import Deposited, deposit

STORES = ["memory", "sqlite", "postgres"]


@attrs.frozen
class _Row:
    stream: str
    version: int


class Ledger(fabula.SqlProjection):
    """One row per deposit applied, in a table of the store's database; poison fails."""

    name = "ledger"
    park_after: ClassVar[int | None] = 2
    tables: ClassVar[tuple[str, ...]] = ("ledger",)
    definitions: ClassVar[tuple[str, ...]] = (
        (
            "CREATE TABLE IF NOT EXISTS ledger (stream {text} NOT NULL, "
            "version {bigint} NOT NULL, seq {bigint} NOT NULL, PRIMARY KEY (stream, version))"
        ),
    )

    def __init__(self) -> None:
        self.broken = True

    @fabula.handles
    def _deposited(self, event: Deposited, sql: fabula.Sql) -> None:
        if event.note == "poison" and self.broken:
            msg = f"cannot apply {event.aggregate_id} v{event.version}"
            raise RuntimeError(msg)
        sql.execute(
            "INSERT INTO ledger SELECT :stream, :version, count(*) + 1 FROM ledger",
            {"stream": event.aggregate_id, "version": event.version},
        )


class MemoryLedger(fabula.Projection[None]):
    """The same, in a list, for the in-memory store."""

    name = "ledger"
    park_after: ClassVar[int | None] = 2

    def __init__(self) -> None:
        self.broken = True
        self.rows: list[tuple[str, int]] = []

    @fabula.handles
    def _deposited(self, event: Deposited, tx: None) -> None:
        del tx
        if event.note == "poison" and self.broken:
            msg = f"cannot apply {event.aggregate_id} v{event.version}"
            raise RuntimeError(msg)
        self.rows.append((event.aggregate_id, event.version))


@pytest.fixture
def store(each_store: fabula.Store) -> fabula.Store:
    """A fresh store of each kind, closed at teardown."""
    return each_store


def ledger_for(store: fabula.Store) -> Any:
    return MemoryLedger() if isinstance(store, InMemoryEventStore) else Ledger()


def projector(store: fabula.Store, ledger: Any) -> fabula.Projector[Any]:
    return fabula.Projector(store, [ledger], retry_delay=0.001, idle_wait=0.05)


async def applied(store: fabula.Store, ledger: Any) -> list[tuple[str, int]]:
    """The (stream, version) pairs applied, in the order they were."""
    if isinstance(ledger, MemoryLedger):
        return list(ledger.rows)
    assert isinstance(store, fabula.SqlStore)
    rows = await store.read_model().fetch_all(
        "SELECT stream, version FROM ledger ORDER BY seq", row=_Row
    )
    return [(row.stream, row.version) for row in rows]


async def fill(store: fabula.Store) -> None:
    """Three accounts of three deposits; acc-1's second is poison."""
    for n in range(3):
        for s in range(3):
            note = "poison" if (s, n) == (1, 1) else ""
            await store.append(f"acc-{s}", [deposit(1, note=note)], expected_version=n)


async def caught_up(running: fabula.Projector[Any]) -> None:
    """Catch up, whatever a handler does (parking lets it return)."""
    await running.catch_up()


class TestParking:
    async def test_a_poison_event_parks_its_stream_only(self, store: fabula.Store) -> None:
        """After park_after failures, its stream waits; the other streams are applied to the end."""
        await fill(store)
        ledger = ledger_for(store)
        running = projector(store, ledger)
        await running.catch_up()
        rows = await applied(store, ledger)
        expected = [(f"acc-{s}", v) for s in (0, 2) for v in (1, 2, 3)]
        assert sorted(rows) == sorted([*expected, ("acc-1", 1)])
        parked = await running.parked("ledger")
        assert [(p.stream_id, p.version, p.attempts) for p in parked] == [
            ("acc-1", 2, 2),
            ("acc-1", 3, 0),
        ]
        assert parked[0].error is not None
        assert "cannot apply acc-1 v2" in parked[0].error
        assert await store.load_checkpoint("ledger") == await store.head_position()
        (status,) = await running.status()
        assert (status.parked_streams, status.parked_events, status.last_error) == (1, 2, None)

    async def test_later_events_wait_across_a_restart(self, store: fabula.Store) -> None:
        """A new projector knows the parked stream: its new events are parked too."""
        await fill(store)
        ledger = ledger_for(store)
        await projector(store, ledger).catch_up()
        await store.append("acc-1", [deposit(9)], expected_version=3)
        await store.append("acc-0", [deposit(9)], expected_version=3)
        again = projector(store, ledger)
        await again.catch_up()
        assert [p.version for p in await again.parked("ledger")] == [2, 3, 4]
        assert ("acc-0", 4) in await applied(store, ledger)

    async def test_a_retry_applies_the_parked_events_once_in_order(
        self, store: fabula.Store
    ) -> None:
        """Fixed and retried: the stream's events are applied in order, each once."""
        await fill(store)
        ledger = ledger_for(store)
        running = projector(store, ledger)
        await running.catch_up()
        ledger.broken = False
        await running.retry_parked("ledger", "acc-1")
        await running.catch_up()
        rows = await applied(store, ledger)
        assert [v for s, v in rows if s == "acc-1"] == [1, 2, 3]
        assert len(rows) == len(set(rows)) == 9
        assert await running.parked("ledger") == []
        await store.append("acc-1", [deposit(9)], expected_version=3)
        await running.catch_up()
        assert (await applied(store, ledger))[-1] == ("acc-1", 4)

    async def test_a_skip_passes_one_event_with_its_reason(self, store: fabula.Store) -> None:
        """Skip records the reason and applies the rest of the stream."""
        await fill(store)
        ledger = ledger_for(store)
        running = projector(store, ledger)
        await running.catch_up()
        with pytest.raises(ValueError, match="say why"):
            await running.skip_parked("ledger", "acc-1", reason="")
        await running.skip_parked("ledger", "acc-1", reason="a bad note")
        await running.catch_up()
        assert [v for s, v in await applied(store, ledger) if s == "acc-1"] == [1, 3]
        (skip,) = await store.load_skips("ledger")  # beside the projection's other skips
        assert skip.reason == "a bad note"

    async def test_a_retry_that_fails_again_stays_parked(self, store: fabula.Store) -> None:
        """Still broken: the stream stays parked, with one more attempt on its first event."""
        await fill(store)
        ledger = ledger_for(store)
        running = projector(store, ledger)
        await running.catch_up()
        await running.retry_parked("ledger", "acc-1")
        await running.catch_up()
        parked = await running.parked("ledger")
        assert [(p.version, p.attempts, p.request) for p in parked] == [
            (2, 3, None),
            (3, 0, fabula.ParkRequest.RETRY),  # still marked, behind the one that failed
        ]
        assert ("acc-1", 3) not in await applied(store, ledger)

    async def test_a_running_projector_takes_requests(self, store: fabula.Store) -> None:
        """`run` carries out a retry recorded in the store within `idle_wait`."""
        await fill(store)
        ledger = ledger_for(store)
        running = projector(store, ledger)
        task = asyncio.create_task(running.run())
        try:
            await running.wait_for(await store.head_position(), 10)
            async with asyncio.timeout(10):
                while not await running.parked("ledger"):  # noqa: ASYNC110 - polling the store
                    await asyncio.sleep(0.02)
            ledger.broken = False
            await running.retry_parked("ledger", "acc-1")
            async with asyncio.timeout(10):
                while await running.parked("ledger"):  # noqa: ASYNC110 - polling the store
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert len(await applied(store, ledger)) == 9


class Flaky(MemoryLedger):
    """acc-0's first deposit fails twice, acc-1's once: neither reaches park_after (3)."""

    park_after: ClassVar[int | None] = 3

    def __init__(self) -> None:
        super().__init__()
        self.failures = {("acc-0", 1): 2, ("acc-1", 1): 1}

    @fabula.handles
    def _deposited(self, event: Deposited, tx: None) -> None:
        del tx
        key = (event.aggregate_id, event.version)
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            msg = f"not yet: {key}"
            raise RuntimeError(msg)
        self.rows.append(key)


class TestRecovery:
    async def test_attempts_are_counted_per_event(self) -> None:
        """Failures of one event do not count towards another's parking."""
        store = InMemoryEventStore()
        for s in range(2):
            await store.append(f"acc-{s}", [deposit()], expected_version=0)
        ledger = Flaky()
        running = projector(store, ledger)
        await running.catch_up()
        assert await running.parked("ledger") == []
        assert sorted(ledger.rows) == [("acc-0", 1), ("acc-1", 1)]

    async def test_a_drain_cut_short_resumes_from_the_store(self) -> None:
        """A retry whose commit fails after applying (the answer lost) is not lost: the next look
        at the requests takes the store's rows, and the stream drains."""
        store = InMemoryEventStore()
        await fill(store)
        ledger = MemoryLedger()
        running = projector(store, ledger)
        await running.catch_up()
        ledger.broken = False
        real = store.commit_projection_parked
        calls = 0

        async def answer_lost(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            calls += 1
            await real(*args, **kwargs)
            if calls == 1:
                raise fabula.StoreUnavailableError("the connection dropped before the reply")

        store.commit_projection_parked = answer_lost  # type: ignore[method-assign] # one lost reply
        await running.retry_parked("ledger", "acc-1")
        with pytest.raises(fabula.StoreUnavailableError):
            await running.catch_up()
        await running.catch_up()
        assert await running.parked("ledger") == []
        assert [v for s, v in ledger.rows if s == "acc-1"] == [1, 2, 3]


class TestSettings:
    @pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
    def test_park_after_is_checked(self, bad: object) -> None:
        """park_after is None or a whole number of at least 1."""

        class Bad(MemoryLedger):
            park_after = bad  # type: ignore[assignment] # the value refused

        with pytest.raises(ValueError, match="park_after"):
            fabula.Projector(InMemoryEventStore(), [Bad()])

    async def test_a_projection_that_does_not_park_has_no_parked_events(self) -> None:
        """parked/retry_parked on a projection without park_after is a TypeError."""

        class Stopping(MemoryLedger):
            park_after = None

        running = fabula.Projector(InMemoryEventStore(), [Stopping()])
        with pytest.raises(TypeError, match="does not park"):
            await running.parked("ledger")
