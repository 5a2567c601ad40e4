"""Reactions, process managers and timers: effects once, streams in order, poison events parked."""

import asyncio
import logging
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import fabula
from fabula import ParkRequest, ProcessStepped, Reactor, Timers
from fabula.exceptions import EventTypeError
from fabula.memory import InMemoryEventStore
from fabula.postgres import PostgresEventStore
from fabula.sqlite import SQLiteEventStore
from fabula.storage import checkpoint_name
from fabula.testing import Deposited, deposit

from .support.postgres import new_schema, require_postgres
from .support.reactions import Mirror, Note, Noted, Pairing, Pairs, make_bus, noted

STORES = ["memory", "sqlite", "postgres"]


@pytest.fixture
def store(each_store: fabula.Store) -> fabula.Store:
    """A fresh store of each kind, closed at teardown."""
    return each_store


async def deposits(store: fabula.Store, streams: int, each: int) -> list[int]:
    """Append `each` deposits to each of `streams` accounts, interleaved; return their positions."""
    positions = []
    for n in range(each):
        for s in range(streams):
            done = await store.append(f"acc-{s}", [deposit(1, note=str(n))], expected_version=n)
            positions.append(done.position)
    return positions


def reactor(store: fabula.Store, *reactions: fabula.Reaction, **options: Any) -> Reactor:
    options.setdefault("retry_delay", 0.001)
    options.setdefault("idle_wait", 0.05)
    return Reactor(store, make_bus(store), reactions, **options)


class TestReactions:
    async def test_every_event_is_handled_with_one_effect(self, store: fabula.Store) -> None:
        """catch_up sends one command per event, each committed once, and checkpoints the lot."""
        positions = await deposits(store, streams=3, each=4)
        await reactor(store, Mirror()).catch_up()
        assert await noted(store) == dict.fromkeys(positions, 1)
        head = await store.head_position()
        assert await store.load_checkpoint(checkpoint_name("mirror")) >= positions[-1]
        assert head >= positions[-1]

    async def test_streams_run_side_by_side_each_in_order(self, store: fabula.Store) -> None:
        """Events of one stream are handled in order; different streams overlap."""
        await deposits(store, streams=4, each=5)
        mirror = Mirror(pause=0.01)
        await reactor(store, mirror, concurrency=4).catch_up()
        by_stream: dict[str, list[int]] = {}
        for stream, position in mirror.handled:
            by_stream.setdefault(stream, []).append(position)
        assert all(p == sorted(p) for p in by_stream.values())
        assert sorted(len(p) for p in by_stream.values()) == [5, 5, 5, 5]
        assert mirror.most_in_flight > 1

    async def test_concurrency_one_handles_one_event_at_a_time(self, store: fabula.Store) -> None:
        """With concurrency=1 no two handlers overlap."""
        await deposits(store, streams=3, each=2)
        mirror = Mirror(pause=0.005)
        await reactor(store, mirror, concurrency=1).catch_up()
        assert mirror.most_in_flight == 1
        assert len(mirror.handled) == 6

    async def test_a_redelivery_commits_nothing_new(self, store: fabula.Store) -> None:
        """Events handled but not checkpointed (a crash) are handled again: no effect twice."""
        positions = await deposits(store, streams=2, each=3)
        first = reactor(store, Mirror())
        hold = asyncio.Event()

        async def never(*_: object, **__: object) -> None:
            await hold.wait()

        real = store.commit_reaction
        store.commit_reaction = never  # type: ignore[method-assign] # the crash: no checkpoint
        running = asyncio.create_task(first.catch_up())
        try:
            async with asyncio.timeout(60):  # every effect committed, the checkpoint never
                while await noted(store) != dict.fromkeys(positions, 1):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            store.commit_reaction = real  # type: ignore[method-assign] # back to the store's own
        assert await store.load_checkpoint(checkpoint_name("mirror")) == 0
        again = Mirror()
        await reactor(store, again).catch_up()
        assert len(again.handled) == len(positions)
        assert await noted(store) == dict.fromkeys(positions, 1)

    async def test_wait_for_returns_once_handled(self, store: fabula.Store) -> None:
        """wait_for returns when the running reaction has passed a position."""
        running = reactor(store, Mirror())
        task = asyncio.create_task(running.run())
        try:
            positions = await deposits(store, streams=2, each=2)
            await running.wait_for(positions[-1], 10)
            assert await noted(store) == dict.fromkeys(positions, 1)
            (status,) = await running.status()
            assert (status.name, status.state, status.lag) == ("mirror", "running", 0)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


def poison(stream: str, position_of: dict[str, int]) -> Any:
    """A `fails` that refuses `stream`'s event at `position_of[stream]` while it is there."""
    return lambda r: r.stream_id == stream and r.position == position_of.get(stream)


class TestParking:
    async def test_a_failing_event_parks_its_stream_only(
        self, store: fabula.Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After `attempts` failures that stream waits; every other stream is handled to the end."""
        positions = await deposits(store, streams=3, each=3)
        acc1 = [r.position for r in await store.read_stream("acc-1")]
        bad = {"acc-1": acc1[1]}
        mirror = Mirror(fails=poison("acc-1", bad))
        with caplog.at_level(logging.ERROR, "fabula.reactions"):
            await reactor(store, mirror, attempts=3).catch_up()
        assert await store.load_checkpoint(checkpoint_name("mirror")) >= positions[-1]
        parked = await store.load_parked("mirror")
        assert [(p.position, p.stream_id, p.attempts) for p in parked] == [
            (acc1[1], "acc-1", 3),
            (acc1[2], "acc-1", 0),
        ]
        assert parked[0].error == f"RuntimeError('cannot handle {acc1[1]}')"
        assert parked[1].error is None
        done = await noted(store)
        assert set(done) == set(positions) - {acc1[1], acc1[2]}
        assert "parked stream acc-1" in caplog.text

    async def test_later_events_of_a_parked_stream_wait_behind_it(
        self, store: fabula.Store
    ) -> None:
        """A new event of a parked stream is parked too, across a restart of the reactor."""
        await deposits(store, streams=2, each=1)
        first = (await store.read_stream("acc-0"))[0].position
        await reactor(store, Mirror(fails=poison("acc-0", {"acc-0": first})), attempts=1).catch_up()
        await store.append("acc-0", [deposit(5)], expected_version=1)
        await store.append("acc-1", [deposit(5)], expected_version=1)
        await reactor(store, Mirror(), attempts=1).catch_up()
        parked = await store.load_parked("mirror")
        assert [p.stream_id for p in parked] == ["acc-0", "acc-0"]
        assert sorted(await noted(store)) == [r.position for r in await store.read_stream("acc-1")]

    async def test_a_retry_drains_the_stream_in_order(self, store: fabula.Store) -> None:
        """Once fixed, retry handles the parked events in order and the stream runs again."""
        await deposits(store, streams=2, each=3)
        acc0 = [r.position for r in await store.read_stream("acc-0")]
        bad = {"acc-0": acc0[0]}
        mirror = Mirror(fails=poison("acc-0", bad))
        running = reactor(store, mirror, attempts=2)
        task = asyncio.create_task(running.run())
        try:
            await running.wait_for(await store.head_position(), 10)
            assert len(await running.parked("mirror")) == 3
            bad.clear()  # the handler is fixed
            await running.retry("mirror", "acc-0")
            async with asyncio.timeout(10):
                while await running.parked():  # noqa: ASYNC110 - polling the store is the point
                    await asyncio.sleep(0.02)
            handled = [p for s, p in mirror.handled if s == "acc-0"]
            assert handled == acc0
            later = await store.append("acc-0", [deposit(9)], expected_version=3)
            await running.wait_for(later.position, 10)
            assert (await noted(store))[later.position] == 1
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert set(await noted(store)) == {
            r.position for r in await store.read_all(event_types=[Deposited])
        }

    async def test_a_skip_passes_one_event_with_its_reason(self, store: fabula.Store) -> None:
        """Skip records the reason, passes the failing event and handles the rest in order."""
        await deposits(store, streams=1, each=3)
        acc0 = [r.position for r in await store.read_stream("acc-0")]
        mirror = Mirror(fails=poison("acc-0", {"acc-0": acc0[0]}))
        running = reactor(store, mirror, attempts=1)
        await running.catch_up()
        with pytest.raises(ValueError, match="say why"):
            await running.skip("mirror", "acc-0", reason=" ")
        await running.skip("mirror", "acc-0", reason="bad test data")
        await running.catch_up()
        assert await store.load_parked() == []
        (skip,) = await store.load_skips(checkpoint_name("mirror"))
        assert (skip.position, skip.reason) == (acc0[0], "bad test data")
        assert sorted(await noted(store)) == acc0[1:]

    async def test_a_retry_that_fails_again_stays_parked(self, store: fabula.Store) -> None:
        """A retry whose first event fails again keeps the stream parked, with the new attempts."""
        await deposits(store, streams=1, each=2)
        acc0 = [r.position for r in await store.read_stream("acc-0")]
        running = reactor(store, Mirror(fails=poison("acc-0", {"acc-0": acc0[0]})), attempts=2)
        await running.catch_up()
        await running.retry("mirror", "acc-0")
        await running.catch_up()
        parked = await store.load_parked("mirror")
        assert [(p.position, p.attempts, p.request) for p in parked] == [
            (acc0[0], 4, None),
            (acc0[1], 0, ParkRequest.RETRY),  # still marked: the next retry drains it
        ]

    async def test_requests_name_a_parked_stream(self, store: fabula.Store) -> None:
        """Retry or skip of a stream not parked, or of no such reaction, is a LookupError."""
        running = reactor(store, Mirror())
        with pytest.raises(LookupError, match="not parked"):
            await running.retry("mirror", "acc-9")
        with pytest.raises(LookupError, match="no reaction"):
            await running.skip("nope", "acc-9", reason="x")


class Replaying(Pairs):
    """The same processes under another checkpoint: the whole log is delivered again."""

    name = "pairs-replay"

    def stream_of(self, process_id: str) -> str:
        return f"process:pairs:{process_id}"


class Refusing(Pairs):
    """Pairs whose pair note the tally refuses."""

    name = "pairs-refused"

    @fabula.reacts
    async def _deposited(self, event: Deposited, process: fabula.Process[Pairing]) -> None:
        seen = (*process.state.seen, event.version)
        process.state = Pairing(seen)
        if len(seen) == 2:
            process.send(Note(tally=f"pair-{process.id}", source=2, amount="refuse"))
            process.finish()


class Idle(Pairs):
    """Routes every deposit to a process, and decides nothing."""

    name = "idle"

    def process_id(self, recorded: fabula.RecordedEvent) -> str | None:
        return recorded.stream_id

    @fabula.reacts
    async def _deposited(self, _: Deposited, process: fabula.Process[Pairing]) -> None:
        process.state = Pairing()


class Picky(Pairs):
    """Cannot route acc-1's first deposit."""

    name = "picky"

    def process_id(self, recorded: fabula.RecordedEvent) -> str | None:
        if (recorded.stream_id, recorded.event.version) == ("acc-1", 1):
            raise KeyError(recorded.stream_id)
        return super().process_id(recorded)


class TestProcessManagers:
    async def test_a_process_keeps_its_state_as_steps(self, store: fabula.Store) -> None:
        """Each decision is a ProcessStepped in the process's stream; finishing ignores the rest."""
        await deposits(store, streams=2, each=3)
        pairs = Pairs()
        await reactor(store, pairs).catch_up()
        steps = [r.event for r in await store.read_stream("process:pairs:acc-0")]
        assert all(isinstance(s, ProcessStepped) for s in steps)
        assert [(s.finished, len(s.commands)) for s in steps] == [(False, 0), (True, 1)]  # type: ignore[attr-defined]
        assert pairs.decided == 4  # the third deposit of each account found the process over
        pair_notes = [
            r.event
            for r in await store.read_all(event_types=[Noted])
            if r.stream_id.startswith("pair-")
        ]
        assert sorted((n.aggregate_id, n.source) for n in pair_notes) == [
            ("pair-acc-0", 2),
            ("pair-acc-1", 2),
        ]

    async def test_a_step_saved_before_a_crash_is_carried_out_not_decided_again(
        self, store: fabula.Store
    ) -> None:
        """A failure after its step is saved retries the saved effects once each, not re-decided."""
        await deposits(store, streams=1, each=2)
        pairs = Pairs()
        running = reactor(store, pairs, attempts=3)
        real = running.bus.dispatch
        failures = [1]

        async def flaky(command: fabula.Command[Any]) -> Any:
            if failures:
                failures.pop()
                msg = "the broker hiccuped"
                raise OSError(msg)
            return await real(command)

        running.bus.dispatch = flaky  # type: ignore[method-assign] # one failing send
        await running.catch_up()
        assert pairs.decided == 2
        assert len(await store.read_stream("process:pairs:acc-0")) == 2
        assert len(await store.read_stream("pair-acc-0")) == 1

    async def test_a_replayed_log_decides_nothing_new(self, store: fabula.Store) -> None:
        """Handling the whole log again (checkpoint lost) re-sends saved steps: no new effects."""
        await deposits(store, streams=2, each=2)
        await reactor(store, Pairs()).catch_up()
        head, effects = await store.head_position(), await noted(store)
        replay = Replaying()
        await reactor(store, replay).catch_up()
        assert replay.decided == 0
        assert (await store.head_position(), await noted(store)) == (head, effects)

    async def test_an_event_that_decides_nothing_saves_no_step(self, store: fabula.Store) -> None:
        """A new process whose first event leaves its state as it was and decides nothing is not
        started: its stream stays empty."""
        await store.append("other-1", [deposit()], expected_version=0)
        await reactor(store, Idle()).catch_up()
        assert await store.read_stream("process:idle:other-1") == []

    async def test_a_refused_command_is_passed_over(self, store: fabula.Store) -> None:
        """A DomainError from a process's command neither parks it nor undoes its step."""
        await deposits(store, streams=1, each=2)
        refusing = Refusing()
        running = reactor(store, refusing, attempts=1)
        await running.catch_up()
        assert await store.load_parked() == []
        steps = await store.read_stream("process:pairs-refused:acc-0")
        assert [s.event.finished for s in steps] == [False, True]  # type: ignore[attr-defined]
        assert await store.read_stream("pair-acc-0") == []

    async def test_a_replay_does_not_bring_back_a_cancelled_timer(
        self, store: fabula.Store
    ) -> None:
        """Redelivered from the start, a process carries out only its last step: the reminder
        its second step cancelled is not scheduled again by the first."""
        await deposits(store, streams=1, each=2)
        past = datetime(2026, 1, 1, tzinfo=UTC)
        await reactor(store, Pairs(remind_at=past)).catch_up()
        assert await store.load_timers() == []
        replay = Replaying(remind_at=past)
        await reactor(store, replay).catch_up()
        assert (replay.decided, await store.load_timers()) == (0, [])

    async def test_an_event_whose_process_cannot_be_told_is_parked(
        self, store: fabula.Store
    ) -> None:
        """A process_id that raises parks that event under its stream; the rest go on."""
        await deposits(store, streams=2, each=2)
        picky = Picky()
        await reactor(store, picky).catch_up()
        (parked,) = await store.load_parked("picky")
        assert (parked.stream_id, parked.version, parked.attempts) == ("acc-1", 1, 1)
        assert parked.error is not None
        assert "cannot tell its lane" in parked.error
        assert len(await store.read_stream("process:picky:acc-0")) == 2

    async def test_timers_a_process_schedules_fire_and_cancel(self, store: fabula.Store) -> None:
        """A reminder scheduled on the first deposit is cancelled by the second, else fires."""
        await store.append("acc-0", [deposit()], expected_version=0)
        await store.append("acc-1", [deposit()], expected_version=0)
        await store.append("acc-1", [deposit()], expected_version=1)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        running = reactor(store, Pairs(remind_at=at))
        await running.catch_up()
        assert [t.name for t in await store.load_timers()] == ["remind-acc-0"]
        assert running.timers is not None
        assert await running.timers.fire_due() == 1
        assert await store.load_timers() == []
        reminders = await store.read_stream("reminder-acc-0")
        assert len(reminders) == 1


class TestTimers:
    def timers(self, store: fabula.Store, now: list[datetime]) -> Timers:
        return Timers(store, make_bus(store), clock=lambda: now[0], retry_delay=1)

    async def test_a_timer_fires_once_when_due(self, store: fabula.Store) -> None:
        """A timer does nothing before its time and fires its command once after it."""
        now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
        timers = self.timers(store, now)
        command = Note(tally="t-1", source=7)
        await timers.schedule("t", at=now[0] + timedelta(minutes=5), command=command)
        assert await timers.fire_due() == 0
        now[0] += timedelta(minutes=5)
        assert await timers.fire_due() == 1
        assert await timers.fire_due() == 0
        assert await noted(store) == {7: 1}
        assert await timers.pending() == []

    async def test_two_firers_commit_one_effect(self, store: fabula.Store) -> None:
        """Two Timers over one store, firing at once, commit each timer's effect once."""
        now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
        one, two = self.timers(store, now), self.timers(store, now)
        for n in range(10):
            await one.schedule(f"t-{n}", at=now[0], command=Note(tally=f"t-{n}", source=n))
        fired = await asyncio.gather(one.fire_due(), two.fire_due())
        assert sum(fired) == 10
        assert await noted(store) == dict.fromkeys(range(10), 1)

    async def test_a_timer_fired_twice_commits_once(self, store: fabula.Store) -> None:
        """A timer whose claim lapsed mid-firing fires again with the same key: one effect."""
        now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
        timers = self.timers(store, now)
        await timers.schedule("t", at=now[0], command=Note(tally="t", source=1))
        (timer,) = await store.load_timers()
        await timers.bus.dispatch(timers._command(timer))  # a firing that died before finishing
        assert await timers.fire_due() == 1
        assert await noted(store) == {1: 1}

    async def test_a_refused_command_ends_the_timer(self, store: fabula.Store) -> None:
        """A DomainError from the command is the timer's outcome: it is removed, not retried."""
        now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
        timers = self.timers(store, now)
        await timers.schedule("t", at=now[0], command=Note(tally="t", source=1, amount="refuse"))
        assert await timers.fire_due() == 1
        assert await timers.pending() == []

    async def test_a_failing_command_is_retried_with_backoff(self, store: fabula.Store) -> None:
        """Any other failure keeps the timer, due again later, with the error shown."""
        now = [datetime(2026, 3, 1, 12, tzinfo=UTC)]
        timers = Timers(store, fabula.CommandBus(), clock=lambda: now[0], retry_delay=10)
        await timers.schedule("t", at=now[0], command=Note(tally="t", source=1))
        assert await timers.fire_due() == 1
        (timer,) = await timers.pending()
        assert timer.attempts == 1
        assert timer.due_at == now[0] + timedelta(seconds=10)
        assert timer.last_error is not None
        assert "no handler" in timer.last_error

    async def test_bad_schedules_are_refused(self, store: fabula.Store) -> None:
        """A naive time, an empty name or a non-command is refused before anything is kept."""
        timers = self.timers(store, [datetime(2026, 3, 1, tzinfo=UTC)])
        command = Note(tally="t", source=1)
        with pytest.raises(ValueError, match="timezone-aware"):
            await timers.schedule("t", at=datetime(2026, 3, 1), command=command)  # noqa: DTZ001 - the naive time refused
        with pytest.raises(ValueError, match="name"):
            await timers.schedule("", at=datetime(2026, 3, 1, tzinfo=UTC), command=command)
        with pytest.raises(TypeError):
            await timers.schedule("t", at=datetime(2026, 3, 1, tzinfo=UTC), command="x")  # type: ignore[arg-type] # the refused value
        assert await timers.pending() == []


class TestTimersAcrossRestarts:
    async def test_a_timer_due_while_down_fires_on_start(self, tmp_path: Path) -> None:
        """A timer kept in the file fires when a new process opens it after its time."""
        path = tmp_path / "e.db"
        async with SQLiteEventStore(path) as store:
            timers = Timers(store, make_bus(store))
            past = datetime.now(UTC) + timedelta(milliseconds=50)
            await timers.schedule("t", at=past, command=Note(tally="t", source=3))
        await asyncio.sleep(0.1)
        async with SQLiteEventStore(path) as store:
            timers = Timers(store, make_bus(store), poll_interval=0.02)
            task = asyncio.create_task(timers.run())
            try:
                async with asyncio.timeout(10):
                    while await timers.pending():  # noqa: ASYNC110 - polling the store is the point
                        await asyncio.sleep(0.02)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await noted(store) == {3: 1}


class TestReactorSettings:
    def test_the_bus_must_be_idempotent(self) -> None:
        """A Reactor over a bus without Idempotency is refused: effects could repeat."""
        store = InMemoryEventStore()
        with pytest.raises(TypeError, match="Idempotency"):
            Reactor(store, fabula.CommandBus(), [Mirror()])

    def test_names_are_checked_and_unique(self) -> None:
        """A reaction needs a valid name, and two reactions cannot share one."""
        store = InMemoryEventStore()

        class Nameless(fabula.Reaction):
            pass

        with pytest.raises(EventTypeError, match="name"):
            Reactor(store, make_bus(store), [Nameless()])
        with pytest.raises(EventTypeError, match="two reactions"):
            Reactor(store, make_bus(store), [Mirror(), Mirror()])

    def test_requests_are_recorded_on_the_store(self) -> None:
        """ParkRequest values are the words stored and shown."""
        assert [str(r) for r in ParkRequest] == ["retry", "skip"]


CHILD = Path(__file__).parent / "support" / "reactor_child.py"


async def start_child(*args: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), *args, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
    return child


async def state_line(child: asyncio.subprocess.Process, wanted: bytes) -> None:
    assert child.stdout is not None
    while (line := await child.stdout.readline()) != wanted:
        assert line, f"the child ended before printing {wanted!r}"


class TestKilled:
    def test_kill_9_at_any_moment_loses_and_repeats_no_effect(self, tmp_path: Path) -> None:
        """A reactor process killed at random moments, restarted each time, on one SQLite file:
        every deposit is noted exactly once and every process decided once."""
        path = str(tmp_path / "e.db")
        rng = random.Random(19)

        async def scenario() -> tuple[dict[int, int], list[int], dict[str, tuple[int, int]]]:
            async with SQLiteEventStore(path) as store:
                positions: list[int] = []
                versions: dict[str, int] = {}
                for _ in range(6):
                    child = await start_child("sqlite", path)
                    for _ in range(40):
                        stream = f"acc-{rng.randrange(8)}"
                        version = versions.get(stream, 0)
                        done = await store.append(stream, [deposit()], expected_version=version)
                        versions[stream] = version + 1
                        positions.append(done.position)
                    await asyncio.sleep(rng.uniform(0.01, 0.3))
                    child.kill()
                    await child.wait()
                await reactor(store, Mirror(), Pairs()).catch_up()
                pairs = {
                    stream: (len(await store.read_stream(f"pair-{stream}")), min(version, 2) // 2)
                    for stream, version in versions.items()
                }
                return await noted(store), positions, pairs

        counts, positions, pairs = asyncio.run(asyncio.wait_for(scenario(), timeout=240))
        assert counts == dict.fromkeys(positions, 1)
        assert all(found == wanted for found, wanted in pairs.values()), pairs

    def test_the_standby_takes_over_from_a_killed_reactor(self, schemas: list[str]) -> None:
        """Two reactor processes on PostgreSQL: one runs, one stands by. SIGKILL the active one
        mid-stream; the other takes over from the checkpoint, and no effect is lost or doubled."""
        url = require_postgres()
        schemas.append(new_schema())

        async def scenario() -> tuple[dict[int, int], list[int]]:
            async with PostgresEventStore(url, schema=schemas[-1]) as store:
                positions = await deposits(store, streams=5, each=20)
                children = [await start_child("postgres", url, schemas[-1]) for _ in range(2)]

                async def first_running() -> int:
                    waits = {
                        asyncio.create_task(state_line(child, b"running\n")): n
                        for n, child in enumerate(children)
                    }
                    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for task in pending:
                        task.cancel()
                    return waits[done.pop()]

                first = await asyncio.wait_for(first_running(), 30)
                more = [
                    (await store.append(f"acc-{s}", [deposit()], expected_version=20 + n)).position
                    for n in range(10)
                    for s in range(5)
                ]
                children[first].kill()
                await children[first].wait()
                survivor = children[1 - first]
                await asyncio.wait_for(state_line(survivor, b"running\n"), 60)
                head = max(more)
                for _ in range(600):
                    if await store.load_checkpoint(checkpoint_name("mirror")) >= head:
                        break
                    await asyncio.sleep(0.1)
                survivor.kill()
                await survivor.wait()
                assert await store.load_checkpoint(checkpoint_name("mirror")) >= head
                return await noted(store), positions + more

        counts, positions = asyncio.run(asyncio.wait_for(scenario(), timeout=180))
        assert counts == dict.fromkeys(positions, 1)


TIMERS_CHILD = Path(__file__).parent / "support" / "timers_child.py"


class TestTimersInSeveralProcesses:
    def test_each_timer_fires_once_across_processes_and_a_kill(self, schemas: list[str]) -> None:
        """Two processes fire one schema's timers; one is killed mid-way. Every timer's command
        commits once: the survivor takes over the dead one's claims when they lapse."""
        url = require_postgres()
        schemas.append(new_schema())

        async def scenario() -> dict[int, int]:
            async with PostgresEventStore(url, schema=schemas[-1]) as store:
                timers = Timers(store, make_bus(store))
                start = datetime.now(UTC)
                for n in range(120):
                    at = start + timedelta(milliseconds=10 * n)
                    await timers.schedule(f"t-{n}", at=at, command=Note(tally=f"t-{n}", source=n))
                children = []
                for _ in range(2):
                    child = await asyncio.create_subprocess_exec(
                        sys.executable, str(TIMERS_CHILD), url, schemas[-1],
                        stdout=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    assert child.stdout is not None
                    assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
                    children.append(child)
                await asyncio.sleep(0.4)
                children[0].kill()  # mid-way: some of its timers are claimed, some fired
                await children[0].wait()
                async with asyncio.timeout(60):
                    while await store.load_timers():  # noqa: ASYNC110 - polling the store
                        await asyncio.sleep(0.05)
                children[1].kill()
                await children[1].wait()
                return await noted(store)

        assert asyncio.run(asyncio.wait_for(scenario(), timeout=120)) == dict.fromkeys(
            range(120), 1
        )


class Early(fabula.Reaction):
    """Its handler names an event class defined after it."""

    name = "early"

    @fabula.reacts
    async def _late(self, event: "LateEvent", ctx: fabula.ReactionContext) -> None:
        del event, ctx


@fabula.event("tests.LateEvent")
@attrs.frozen
class LateEvent(fabula.DomainEvent[str]):
    pass


class Unknown(fabula.Reaction):
    """Its handler names a class that never exists."""

    name = "unknown"

    @fabula.reacts
    async def _never(self, event: "NoSuchEvent", ctx: fabula.ReactionContext) -> None:  # type: ignore[name-defined]  # noqa: F821 - the unresolvable name under test
        del event, ctx


class TestHandlers:
    def test_a_handler_may_name_an_event_defined_later(self) -> None:
        """The annotation is resolved on first use, once the module has defined the class."""
        assert list(Early().handlers()) == [LateEvent]

    def test_an_annotation_that_never_resolves_is_a_clear_error(self) -> None:
        """A name that is still unknown on use is an EventTypeError naming the class."""
        with pytest.raises(EventTypeError, match="cannot resolve a handler annotation of Unknown"):
            Unknown().handlers()
