"""The ProjectionStore contract: checkpoints, skips and the log as projectors read it.

Subclass `ProjectionStoreContract` beside `EventStoreContract`; it builds
its stores with the `projection_store_factory` fixture, which by default is
your `event_store_factory`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeAlias

import pytest

from fabula._projection_store import ProjectionStore
from fabula.exceptions import CheckpointError, InvalidReadError
from fabula.testing._contract_events import Deposited, Withdrawn
from fabula.testing._suite import deposit, store_test

__all__ = ["ProjectionStoreContract", "ProjectionStoreFactory"]

ProjectionStoreFactory: TypeAlias = Callable[[], Awaitable[Any]]
"""Builds a fresh, empty store that is a `ProjectionStore` and an `EventStore`."""

_test = store_test("projection_store_factory")
_Store: TypeAlias = Any  # a ProjectionStore that is also an EventStore


def _recording(ran: list[object]) -> Callable[[object], None]:
    return ran.append


class ProjectionStoreContract:
    """The projection store contract suite (see the module docstring for use)."""

    @pytest.fixture
    def projection_store_factory(self, event_store_factory: ProjectionStoreFactory) -> Any:  # noqa: ANN401 - the fixture's value
        """Override to build projection stores another way (default: `event_store_factory`)."""
        return event_store_factory

    @_test
    async def test_is_a_projection_store(self, store: _Store) -> None:
        """The store implements the ProjectionStore protocol, and says if it is transactional."""
        assert isinstance(store, ProjectionStore)
        assert isinstance(store.transactional, bool)

    @_test
    async def test_count_events_counts_events_not_positions(self, store: _Store) -> None:
        """count_events says how many events follow a position, of some types or all.

        It is a projection's lag, so it counts events even where positions
        are sparse (PostgreSQL's leave gaps between appends).
        """
        await store.append("acc-1", [deposit(1), Withdrawn(amount=Decimal(1))], expected_version=0)
        await store.append("acc-2", [deposit(2)], expected_version=0)
        await store.append("acc-1", [deposit(3), Withdrawn(amount=Decimal(2))], expected_version=2)
        log = await store.read_all()
        first, last = log[0].position, log[-1].position
        assert await store.count_events() == 5
        assert await store.count_events(after=first) == 4
        assert await store.count_events(after=log[2].position) == 2
        assert await store.count_events(after=last) == 0
        assert await store.count_events(after=first, event_types=[Deposited]) == 2
        assert await store.count_events(event_types={"fabula.testing.Withdrawn"}) == 2
        assert await store.count_events(event_types=[]) == 0
        with pytest.raises(InvalidReadError):
            await store.count_events(after=-1)

    @_test
    async def test_a_new_projection_starts_at_zero(self, store: _Store) -> None:
        """A projection never committed has checkpoint 0 and no skips."""
        assert await store.load_checkpoint("p") == 0
        assert await store.load_skips("p") == []

    @_test
    async def test_a_commit_runs_the_work_once_and_moves_the_checkpoint(
        self, store: _Store
    ) -> None:
        """commit_projection runs its work once, then the checkpoint is where it said."""
        ran: list[object] = []
        await store.commit_projection("p", expected=0, position=5, work=_recording(ran))
        assert (len(ran), await store.load_checkpoint("p")) == (1, 5)
        await store.commit_projection("p", expected=5, position=9, work=_recording(ran))
        assert (len(ran), await store.load_checkpoint("p")) == (2, 9)

    @_test
    async def test_a_checkpoint_moved_by_another_is_refused(self, store: _Store) -> None:
        """Expecting a checkpoint that has moved raises CheckpointError and runs nothing."""
        await store.commit_projection("p", expected=0, position=5, work=_recording([]))
        ran: list[object] = []
        with pytest.raises(CheckpointError) as refused:
            await store.commit_projection("p", expected=0, position=7, work=_recording(ran))
        assert (refused.value.name, refused.value.stored, refused.value.position) == ("p", 5, 7)
        assert ran == []
        assert await store.load_checkpoint("p") == 5

    @_test
    async def test_failing_work_leaves_the_checkpoint(self, store: _Store) -> None:
        """Work that raises propagates its error and does not move the checkpoint."""

        def fail(_: object) -> None:
            msg = "the handler failed"
            raise RuntimeError(msg)

        with pytest.raises(RuntimeError, match="the handler failed"):
            await store.commit_projection("p", expected=0, position=3, work=fail)
        assert await store.load_checkpoint("p") == 0

    @_test
    async def test_checkpoints_are_kept_per_projection(self, store: _Store) -> None:
        """Moving one projection's checkpoint leaves the others where they are."""
        await store.commit_projection("a", expected=0, position=4, work=_recording([]))
        await store.commit_projection("b", expected=0, position=2, work=_recording([]))
        assert (await store.load_checkpoint("a"), await store.load_checkpoint("b")) == (4, 2)

    @_test
    async def test_concurrent_commits_from_one_checkpoint_have_one_winner(
        self, store: _Store
    ) -> None:
        """Of several projectors committing from the same checkpoint, exactly one moves it."""
        outcomes = await asyncio.gather(
            *(
                store.commit_projection("p", expected=0, position=n, work=_recording([]))
                for n in range(1, 6)
            ),
            return_exceptions=True,
        )
        winners = [n for n, outcome in enumerate(outcomes, start=1) if outcome is None]
        assert len(winners) == 1
        assert all(isinstance(o, CheckpointError) for o in outcomes if o is not None)
        assert await store.load_checkpoint("p") == winners[0]

    @_test
    async def test_skip_moves_past_one_event_and_records_why(self, store: _Store) -> None:
        """skip_event moves the checkpoint by one and keeps the position, class and reason."""
        before = datetime.now(UTC) - timedelta(minutes=5)
        await store.commit_projection("p", expected=0, position=3, work=_recording([]))
        await store.skip_event("p", position=4, event_class="Deposited", reason="bad data")
        assert await store.load_checkpoint("p") == 4
        skipped = await store.load_skips("p")
        assert [(s.position, s.event_class, s.reason) for s in skipped] == [
            (4, "Deposited", "bad data")
        ]
        assert skipped[0].skipped_at.tzinfo is not None
        assert skipped[0].skipped_at > before

    @_test
    async def test_skip_needs_the_checkpoint_just_before(self, store: _Store) -> None:
        """Skipping an event the projection is not stopped before raises CheckpointError."""
        with pytest.raises(CheckpointError):
            await store.skip_event("p", position=5, event_class="Deposited", reason="no")
        assert await store.load_checkpoint("p") == 0
        assert await store.load_skips("p") == []

    @_test
    async def test_skips_are_listed_oldest_first_per_projection(self, store: _Store) -> None:
        """load_skips lists one projection's skips in position order."""
        for position in (1, 2, 3):
            await store.skip_event("p", position=position, event_class="E", reason=str(position))
        await store.skip_event("q", position=1, event_class="E", reason="other")
        assert [s.position for s in await store.load_skips("p")] == [1, 2, 3]
        assert [s.reason for s in await store.load_skips("q")] == ["other"]

    @_test
    async def test_read_log_says_how_far_it_read(self, store: _Store) -> None:
        """read_log with a type filter returns the matching events and where to resume."""
        await store.append("acc-1", [deposit(), deposit()], expected_version=0)
        last = await store.append(
            "acc-2", [Withdrawn(amount=Decimal(1)), deposit()], expected_version=0
        )
        page = await store.read_log(after=0, limit=10, event_types=[Withdrawn])
        assert [type(r.event) for r in page.events] == [Withdrawn]
        assert page.position == last.position
        rest = await store.read_log(after=page.position, limit=10, event_types=[Deposited])
        assert (rest.events, rest.position) == ([], page.position)

    @_test
    async def test_head_position_follows_appends(self, store: _Store) -> None:
        """head_position is 0 when empty, then the position of the last event appended."""
        assert await store.head_position() == 0
        result = await store.append("acc-1", [deposit()], expected_version=0)
        assert await store.head_position() == result.position

    @_test
    async def test_wait_for_commit_returns_when_an_event_lands(self, store: _Store) -> None:
        """A reader waiting for events returns soon after one is appended, not at its limit.

        A wait may also end early (a store may wake its waiters for other
        reasons), so the reader waits again until it sees the event, as
        projectors do.
        """
        head = await store.head_position()

        async def read_when_woken() -> None:
            while await store.head_position() <= head:
                await store.wait_for_commit(head, 60.0)

        reading = asyncio.create_task(read_when_woken())
        await asyncio.sleep(0.05)
        await store.append("acc-1", [deposit()], expected_version=0)
        await asyncio.wait_for(reading, 10.0)
