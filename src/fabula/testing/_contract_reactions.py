"""The ReactionStore and TimerStore contracts: parked events with checkpoints, durable timers.

Subclass `ReactionStoreContract` and `TimerStoreContract` beside
`EventStoreContract`; they build their stores with the
`reaction_store_factory` fixture, which by default is your
`event_store_factory`. A reaction's checkpoint is a projection checkpoint
(`checkpoint_name(reaction)`), so the store is a `ProjectionStore` too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeAlias
from uuid import uuid4

import pytest

from fabula._reaction_store import (
    ParkedEvent,
    ParkRequest,
    ReactionStore,
    Timer,
    TimerStore,
    checkpoint_name,
)
from fabula.exceptions import CheckpointError
from fabula.testing._suite import store_test

__all__ = ["ReactionStoreContract", "TimerStoreContract"]

_test = store_test("reaction_store_factory")
_Store: TypeAlias = Any  # a ReactionStore, TimerStore and ProjectionStore

_T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _parked(
    position: int,
    *,
    reaction: str = "r",
    stream: str = "s-1",
    error: str | None = None,
    attempts: int = 0,
) -> ParkedEvent:
    return ParkedEvent(
        reaction=reaction,
        position=position,
        stream_id=stream,
        version=position,
        event_class="Deposited",
        error=error,
        attempts=attempts,
        parked_at=_T0 + timedelta(seconds=position),
    )


def _timer(
    name: str = "t-1",
    *,
    due: datetime = _T0,
    command: str = '{"n": 1}',
    sequence: int | None = None,
) -> Timer:
    return Timer(
        name=name,
        due_at=due,
        command_type="app.commands:Expire",
        command=command,
        generation=uuid4(),
        sequence=sequence,
    )


class _Factory:
    @pytest.fixture
    def reaction_store_factory(self, event_store_factory: Any) -> Any:  # noqa: ANN401 - the fixture's value
        """Override to build reaction stores another way (default: `event_store_factory`)."""
        return event_store_factory


class ReactionStoreContract(_Factory):
    """The reaction store contract suite (see the module docstring for use)."""

    @_test
    async def test_is_a_reaction_store(self, store: _Store) -> None:
        """The store implements the ReactionStore protocol."""
        assert isinstance(store, ReactionStore)

    @_test
    async def test_nothing_is_parked_at_first(self, store: _Store) -> None:
        """A store never used has no parked events, for any reaction or all."""
        assert await store.load_parked() == []
        assert await store.load_parked("r") == []

    @_test
    async def test_a_commit_moves_the_checkpoint_and_keeps_the_parked(self, store: _Store) -> None:
        """commit_reaction sets the checkpoint and keeps parked events, as given, by position."""
        parked = [_parked(7, error="ValueError('no')", attempts=3), _parked(4)]
        await store.commit_reaction("r", expected=0, position=9, parked=parked)
        assert await store.load_checkpoint(checkpoint_name("r")) == 9
        assert await store.load_parked("r") == [parked[1], parked[0]]

    @_test
    async def test_parked_events_are_listed_by_reaction_then_position(self, store: _Store) -> None:
        """load_parked() lists every reaction's parked events; load_parked(name) one's."""
        await store.commit_reaction("b", expected=0, position=5, parked=[_parked(2, reaction="b")])
        await store.commit_reaction(
            "a", expected=0, position=5, parked=[_parked(3, reaction="a"), _parked(1, reaction="a")]
        )
        listed = [(p.reaction, p.position) for p in await store.load_parked()]
        assert listed == [("a", 1), ("a", 3), ("b", 2)]
        assert [p.position for p in await store.load_parked("b")] == [2]
        assert await store.load_parked("c") == []

    @_test
    async def test_a_commit_from_the_wrong_checkpoint_keeps_nothing(self, store: _Store) -> None:
        """A commit whose expected checkpoint is stale raises and parks nothing."""
        await store.commit_reaction("r", expected=0, position=3, parked=[])
        with pytest.raises(CheckpointError):
            await store.commit_reaction("r", expected=0, position=5, parked=[_parked(4)])
        assert await store.load_checkpoint(checkpoint_name("r")) == 3
        assert await store.load_parked("r") == []

    @_test
    async def test_two_commits_from_one_checkpoint_one_wins(self, store: _Store) -> None:
        """Of two concurrent commits from the same checkpoint, exactly one lands."""
        results = await asyncio.gather(
            store.commit_reaction("r", expected=0, position=4, parked=[_parked(2)]),
            store.commit_reaction("r", expected=0, position=6, parked=[_parked(5)]),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, CheckpointError)]
        assert len(failed) == 1
        won = 6 if results[0] is failed[0] else 4
        assert await store.load_checkpoint(checkpoint_name("r")) == won
        assert len(await store.load_parked("r")) == 1

    @_test
    async def test_a_request_is_recorded_on_a_parked_event(self, store: _Store) -> None:
        """request_parked keeps the request and reason; an event not parked answers False."""
        await store.commit_reaction("r", expected=0, position=5, parked=[_parked(3)])
        assert await store.request_parked("r", 3, ParkRequest.SKIP, "bad data") is True
        (row,) = await store.load_parked("r")
        assert (row.request, row.reason) == (ParkRequest.SKIP, "bad data")
        assert await store.request_parked("r", 4, ParkRequest.RETRY, None) is False
        assert await store.request_parked("other", 3, ParkRequest.RETRY, None) is False

    @_test
    async def test_repark_records_the_new_failure_and_clears_the_request(
        self, store: _Store
    ) -> None:
        """A repark keeps the latest error and attempts, and forgets the request carried out."""
        await store.commit_reaction("r", expected=0, position=5, parked=[_parked(3, attempts=2)])
        await store.request_parked("r", 3, ParkRequest.RETRY, None)
        await store.repark("r", 3, error="KeyError('x')", attempts=5)
        (row,) = await store.load_parked("r")
        assert (row.error, row.attempts, row.request, row.reason) == (
            "KeyError('x')",
            5,
            None,
            None,
        )

    @_test
    async def test_release_removes_and_a_skip_is_recorded(self, store: _Store) -> None:
        """release_parked removes an event; with a skip, the skip is kept under the checkpoint."""
        await store.commit_reaction("r", expected=0, position=5, parked=[_parked(2), _parked(3)])
        await store.release_parked("r", 2)
        await store.release_parked("r", 3, skipped=("Deposited", "operator: bad data"))
        assert await store.load_parked("r") == []
        (skip,) = await store.load_skips(checkpoint_name("r"))
        assert (skip.position, skip.event_class, skip.reason) == (
            3,
            "Deposited",
            "operator: bad data",
        )
        assert skip.skipped_at.utcoffset() is not None

    @_test
    async def test_a_projection_parks_with_its_checkpoint(self, store: _Store) -> None:
        """commit_projection_parked runs the work, keeps and releases parked events, atomically."""
        ran: list[object] = []
        parked = _parked(3, reaction="projection:p")
        await store.commit_projection_parked(
            "p", expected=0, position=5, work=ran.append, park=[parked]
        )
        assert (len(ran), await store.load_checkpoint("p")) == (1, 5)
        assert await store.load_parked("projection:p") == [parked]
        await store.commit_projection_parked(
            "p", expected=5, position=5, work=ran.append, release=[("projection:p", 3)]
        )
        assert (len(ran), await store.load_checkpoint("p")) == (2, 5)
        assert await store.load_parked("projection:p") == []
        with pytest.raises(CheckpointError):
            await store.commit_projection_parked(
                "p", expected=0, position=9, work=ran.append, park=[_parked(7, reaction="x")]
            )
        assert await store.load_parked() == []
        assert await store.load_checkpoint("p") == 5

    @_test
    async def test_times_come_back_aware_and_equal(self, store: _Store) -> None:
        """A parked event's time in another offset comes back as the same instant, aware."""
        at = datetime(2026, 5, 6, 7, 8, 9, 654321, tzinfo=timezone(timedelta(hours=2)))
        parked = ParkedEvent("r", 1, "s", 1, "Deposited", None, 0, at)
        await store.commit_reaction("r", expected=0, position=1, parked=[parked])
        (row,) = await store.load_parked("r")
        assert row.parked_at == at
        assert row.parked_at.utcoffset() is not None


class TimerStoreContract(_Factory):
    """The timer store contract suite (see the module docstring for use)."""

    @_test
    async def test_is_a_timer_store(self, store: _Store) -> None:
        """The store implements the TimerStore protocol."""
        assert isinstance(store, TimerStore)

    @_test
    async def test_a_scheduled_timer_is_pending(self, store: _Store) -> None:
        """A scheduled timer is listed as it was given, soonest first."""
        late, soon = _timer("late", due=_T0 + timedelta(hours=1)), _timer("soon")
        await store.schedule_timer(late)
        await store.schedule_timer(soon)
        assert await store.load_timers() == [soon, late]

    @_test
    async def test_scheduling_a_name_again_replaces_its_timer(self, store: _Store) -> None:
        """A name is one timer: scheduling it again replaces time, command and generation."""
        first = _timer()
        await store.schedule_timer(first)
        await store.claim_timers(_T0, until=_T0 + timedelta(seconds=30), limit=10)
        await store.retry_timer(first.name, first.generation, due_at=_T0, error="boom")
        second = _timer(due=_T0 + timedelta(minutes=5), command='{"n": 2}')
        await store.schedule_timer(second)
        assert await store.load_timers() == [second]

    @_test
    async def test_cancel_removes_a_timer_once(self, store: _Store) -> None:
        """cancel_timer answers whether the timer was pending."""
        await store.schedule_timer(_timer())
        assert await store.cancel_timer("t-1") is True
        assert await store.cancel_timer("t-1") is False
        assert await store.load_timers() == []

    @_test
    async def test_only_due_timers_are_claimed(self, store: _Store) -> None:
        """claim_timers takes timers due at `now`, soonest first, up to `limit`."""
        for n in range(4):
            await store.schedule_timer(_timer(f"t-{n}", due=_T0 + timedelta(seconds=n)))
        until = _T0 + timedelta(minutes=1)
        claimed = await store.claim_timers(_T0 + timedelta(seconds=2), until=until, limit=2)
        assert [t.name for t in claimed] == ["t-0", "t-1"]
        assert all(t.claimed_until == until for t in claimed)
        again = await store.claim_timers(_T0 + timedelta(seconds=2), until=until, limit=10)
        assert [t.name for t in again] == ["t-2"]

    @_test
    async def test_a_claim_holds_until_it_lapses(self, store: _Store) -> None:
        """A claimed timer is not claimed again before `until`, and is after it."""
        await store.schedule_timer(_timer())
        until = _T0 + timedelta(seconds=30)
        assert len(await store.claim_timers(_T0, until=until, limit=5)) == 1
        assert await store.claim_timers(_T0 + timedelta(seconds=29), until=until, limit=5) == []
        later = _T0 + timedelta(seconds=31)
        (taken,) = await store.claim_timers(later, until=later + timedelta(seconds=30), limit=5)
        assert taken.name == "t-1"

    @_test
    async def test_concurrent_claims_never_share_a_timer(self, store: _Store) -> None:
        """Claims made at once divide the due timers: none is handed out twice."""
        for n in range(20):
            await store.schedule_timer(_timer(f"t-{n:02}"))
        until = _T0 + timedelta(minutes=1)
        claims = await asyncio.gather(
            *(store.claim_timers(_T0, until=until, limit=6) for _ in range(5))
        )
        names = [t.name for claim in claims for t in claim]
        assert sorted(names) == [f"t-{n:02}" for n in range(20)]

    @_test
    async def test_finish_removes_only_its_generation(self, store: _Store) -> None:
        """finish_timer of a generation since replaced leaves the new timer pending."""
        old = _timer()
        await store.schedule_timer(old)
        new = _timer(due=_T0 + timedelta(hours=1))
        await store.schedule_timer(new)
        await store.finish_timer(old.name, old.generation)
        assert await store.load_timers() == [new]
        await store.finish_timer(new.name, new.generation)
        assert await store.load_timers() == []

    @_test
    async def test_a_failed_firing_is_due_again_with_its_error(self, store: _Store) -> None:
        """retry_timer moves the time, counts the attempt, keeps the error and drops the claim."""
        timer = _timer()
        await store.schedule_timer(timer)
        await store.claim_timers(_T0, until=_T0 + timedelta(hours=1), limit=1)
        again = _T0 + timedelta(seconds=10)
        await store.retry_timer(timer.name, timer.generation, due_at=again, error="OSError()")
        (row,) = await store.load_timers()
        assert (row.due_at, row.attempts, row.last_error, row.claimed_until) == (
            again,
            1,
            "OSError()",
            None,
        )
        (claimed,) = await store.claim_timers(again, until=again + timedelta(seconds=5), limit=1)
        assert claimed.attempts == 1
        await store.retry_timer(timer.name, uuid4(), due_at=_T0, error="other generation")
        assert (await store.load_timers())[0].last_error == "OSError()"

    @_test
    async def test_an_older_event_does_not_undo_a_newer_one(self, store: _Store) -> None:
        """With sequences, a schedule or cancel from an older event leaves a newer schedule."""
        newer = _timer(due=_T0 + timedelta(hours=2), sequence=5)
        await store.schedule_timer(newer)
        await store.schedule_timer(_timer(due=_T0, sequence=3))
        assert await store.cancel_timer("t-1", sequence=4) is False
        assert await store.load_timers() == [newer]
        assert await store.cancel_timer("t-1", sequence=5) is True
        assert await store.load_timers() == []

    @_test
    async def test_a_cancelled_or_fired_name_is_remembered(self, store: _Store) -> None:
        """An older schedule handled again after a cancel, or after the timer fired, stays off."""
        assert await store.cancel_timer("gone", sequence=7) is False
        await store.schedule_timer(_timer("gone", sequence=5))
        fired = _timer("fired", sequence=5)
        await store.schedule_timer(fired)
        await store.claim_timers(_T0, until=_T0 + timedelta(seconds=1), limit=5)
        await store.finish_timer("fired", fired.generation)
        await store.schedule_timer(_timer("fired", sequence=5))
        assert await store.load_timers() == []
        later = _timer("gone", sequence=8)
        await store.schedule_timer(later)
        assert await store.load_timers() == [later]

    @_test
    async def test_without_sequences_the_last_call_wins(self, store: _Store) -> None:
        """Schedules and cancels made outside reactions (no sequence) apply in call order."""
        await store.schedule_timer(_timer(sequence=9))
        assert await store.cancel_timer("t-1") is True
        again = _timer()
        await store.schedule_timer(again)
        assert await store.load_timers() == [again]

    @_test
    async def test_offsets_compare_as_instants(self, store: _Store) -> None:
        """A timer due in another offset is due by the instant, not by its wall-clock text."""
        east = timezone(timedelta(hours=5))
        await store.schedule_timer(_timer("east", due=datetime(2026, 1, 1, 12, 0, tzinfo=east)))
        await store.schedule_timer(_timer("utc", due=datetime(2026, 1, 1, 8, 0, tzinfo=UTC)))
        now = datetime(2026, 1, 1, 7, 30, tzinfo=UTC)
        claimed = await store.claim_timers(now, until=now + timedelta(minutes=1), limit=5)
        assert [t.name for t in claimed] == ["east"]
        assert [t.name for t in await store.load_timers()] == ["east", "utc"]
