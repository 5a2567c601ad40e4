"""Parked events and timers in a SQL database: one implementation for SQLite and PostgreSQL.

Both drivers' connections run `conn.execute(sql, params).fetchall()`, so
the jobs here run unchanged on either; a backend supplies its statements
(`ReactionStatements`, in its own schema module), how it runs a job in a
write transaction and on a read connection, how it keeps times, and its
checkpoint's lock and save. `ReactionsForwarded` gives a store the
`ReactionStore` and `TimerStore` methods, forwarded to its side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeAlias, TypeVar
from uuid import UUID

import attrs

from fabula._guards import utcnow
from fabula._projection_store import require_checkpoint
from fabula._reaction_store import (
    ParkedEvent,
    ParkRequest,
    Timer,
    checkpoint_name,
    skips_name,
)

__all__ = ["ReactionStatements", "ReactionsForwarded", "SqlReactionSide"]

T = TypeVar("T")


class Connection(Protocol):
    """What both drivers' connections offer the jobs: `execute` returning a cursor."""

    def execute(self, statement: Any, parameters: Any = ..., /) -> Any:  # noqa: ANN401 - either driver's
        """Run one statement."""
        ...


Run: TypeAlias = Callable[[Callable[[Any], T]], Awaitable[T]]


@attrs.frozen
class ReactionStatements:
    """One backend's statements for parked events and timers (its own placeholders).

    Parameters are positional, in the order each statement's comment in the
    backend's schema module gives.
    """

    insert_parked: str
    load_parked: str
    load_parked_of: str
    request_parked: str
    repark: str
    release_parked: str
    record_skip: str
    schedule_timer: str
    timer_state: str
    cancel_timer: str
    bury_timer: str
    claim_timers: str
    finish_timer: str
    retry_timer: str
    load_timers: str


@attrs.define
class SqlReactionSide:
    """The `ReactionStore` and `TimerStore` methods over one SQL database.

    Args:
        statements: The backend's statements.
        write: Runs a job in a write transaction, returning its result.
        read: Runs a job on a read connection.
        lock_checkpoint: Reads (and locks, where the database has row locks)
            a checkpoint inside a write job.
        save_checkpoint: Sets a checkpoint inside a write job.
        to_db: Turns an aware datetime into what the database keeps.
        from_db: Turns what the database gives back into an aware datetime.
    """

    statements: ReactionStatements
    write: Run[Any]
    read: Run[Any]
    lock_checkpoint: Callable[[Any, str], int]
    save_checkpoint: Callable[[Any, str, int], None]
    to_db: Callable[[datetime], object]
    from_db: Callable[[Any], datetime]

    async def commit_reaction(
        self, reaction: str, *, expected: int, position: int, parked: Sequence[ParkedEvent]
    ) -> None:
        """Move `reaction`'s checkpoint and keep `parked`, in one transaction (`ReactionStore`)."""
        name = checkpoint_name(reaction)
        rows = [self._parked_row(event) for event in parked]

        def job(conn: Connection) -> None:
            stored = self.lock_checkpoint(conn, name)
            require_checkpoint(name, stored, expected=expected, moving_to=position)
            for row in rows:
                conn.execute(self.statements.insert_parked, row)
            self.save_checkpoint(conn, name, position)

        await self.write(job)

    async def load_parked(self, reaction: str | None = None) -> list[ParkedEvent]:
        """Return parked events, by reaction and position (see `ReactionStore`)."""
        st = self.statements

        def job(conn: Connection) -> list[Any]:
            if reaction is None:
                return list(conn.execute(st.load_parked).fetchall())
            return list(conn.execute(st.load_parked_of, (reaction,)).fetchall())

        return [self._parked(row) for row in await self.read(job)]

    async def request_parked(
        self, reaction: str, position: int, request: ParkRequest, reason: str | None
    ) -> bool:
        """Record an operator's request on a parked event (see `ReactionStore`)."""
        parameters = (str(request), reason, reaction, position)

        def job(conn: Connection) -> bool:
            return bool(conn.execute(self.statements.request_parked, parameters).fetchall())

        return bool(await self.write(job))

    async def repark(self, reaction: str, position: int, *, error: str, attempts: int) -> None:
        """Record that a parked event failed again (see `ReactionStore`)."""
        parameters = (error, attempts, reaction, position)
        await self.write(lambda conn: conn.execute(self.statements.repark, parameters))

    async def release_parked(
        self, reaction: str, position: int, *, skipped: tuple[str, str] | None = None
    ) -> None:
        """Remove a parked event, recording a skip (see `ReactionStore`)."""
        st = self.statements
        now = self.to_db(utcnow())

        def job(conn: Connection) -> None:
            conn.execute(st.release_parked, (reaction, position))
            if skipped is not None:
                event_class, reason = skipped
                name = skips_name(reaction)
                conn.execute(st.record_skip, (name, position, event_class, reason, now))

        await self.write(job)

    async def schedule_timer(self, timer: Timer) -> None:
        """Keep `timer`, replacing one of the same name (see `TimerStore`)."""
        row = (
            timer.name,
            self.to_db(timer.due_at),
            timer.command_type,
            timer.command,
            str(timer.generation),
            timer.sequence,
        )
        await self.write(lambda conn: conn.execute(self.statements.schedule_timer, row))

    async def cancel_timer(self, name: str, *, sequence: int | None = None) -> bool:
        """Cancel timer `name`, as of `sequence` (see `TimerStore`)."""
        st = self.statements
        now = self.to_db(utcnow())

        def job(conn: Connection) -> bool:
            found = conn.execute(st.timer_state, (name,)).fetchone()
            if found is None:
                if sequence is not None:  # remembered, so an older schedule replayed stays off
                    conn.execute(st.bury_timer, (name, now, sequence))
                return False
            done, stored = found
            if sequence is not None and stored is not None and sequence < stored:
                return False  # a newer schedule stands
            conn.execute(st.cancel_timer, (sequence, name))
            return done is None

        return bool(await self.write(job))

    async def claim_timers(self, now: datetime, *, until: datetime, limit: int) -> list[Timer]:
        """Claim due timers until `until` (see `TimerStore`)."""
        at = self.to_db(now)
        parameters = (self.to_db(until), at, at, limit)

        def job(conn: Connection) -> list[Any]:
            return list(conn.execute(self.statements.claim_timers, parameters).fetchall())

        timers = [self._timer(row) for row in await self.write(job)]
        return sorted(timers, key=lambda timer: (timer.due_at, timer.name))

    async def finish_timer(self, name: str, generation: UUID) -> None:
        """Remove timer `name` if it is still `generation` (see `TimerStore`)."""
        parameters = (name, str(generation))
        await self.write(lambda conn: conn.execute(self.statements.finish_timer, parameters))

    async def retry_timer(
        self, name: str, generation: UUID, *, due_at: datetime, error: str
    ) -> None:
        """Record a failed firing (see `TimerStore`)."""
        parameters = (self.to_db(due_at), error, name, str(generation))
        await self.write(lambda conn: conn.execute(self.statements.retry_timer, parameters))

    async def load_timers(self) -> list[Timer]:
        """Return the pending timers, soonest first (see `TimerStore`)."""

        def job(conn: Connection) -> list[Any]:
            return list(conn.execute(self.statements.load_timers).fetchall())

        return [self._timer(row) for row in await self.read(job)]

    def parking_work(
        self,
        work: Callable[[Any], None],
        park: Sequence[ParkedEvent],
        release: Sequence[tuple[str, int]],
    ) -> Callable[[Any], None]:
        """`work`, then `park` kept and `release` removed, on the same transaction."""
        rows = [self._parked_row(event) for event in park]
        st = self.statements

        def job(conn: Connection) -> None:
            work(conn)
            for row in rows:
                conn.execute(st.insert_parked, row)
            for key in release:
                conn.execute(st.release_parked, key)

        return job

    def _parked_row(self, event: ParkedEvent) -> tuple[object, ...]:
        return (
            event.reaction,
            event.position,
            event.stream_id,
            event.version,
            event.event_class,
            event.error,
            event.attempts,
            self.to_db(event.parked_at),
            None if event.request is None else str(event.request),
            event.reason,
        )

    def _parked(self, row: Sequence[Any]) -> ParkedEvent:
        reaction, position, stream, version, kind, error, attempts, at, request, reason = row
        return ParkedEvent(
            reaction=reaction,
            position=int(position),
            stream_id=stream,
            version=int(version),
            event_class=kind,
            error=error,
            attempts=int(attempts),
            parked_at=self.from_db(at),
            request=None if request is None else ParkRequest(request),
            reason=reason,
        )

    def _timer(self, row: Sequence[Any]) -> Timer:
        name, due_at, kind, command, generation, attempts, error, claimed, sequence = row
        return Timer(
            name=name,
            due_at=self.from_db(due_at),
            command_type=kind,
            command=command,
            generation=UUID(str(generation)),
            attempts=int(attempts),
            last_error=error,
            claimed_until=None if claimed is None else self.from_db(claimed),
            sequence=None if sequence is None else int(sequence),
        )


class ReactionsForwarded:
    """The `ReactionStore` and `TimerStore` methods of a store, forwarded to its SQL side.

    The store's own `commit_projection` runs the parking projections' commits.
    """

    _reaction_side: SqlReactionSide

    async def commit_projection(
        self, name: str, *, expected: int, position: int, work: Callable[[Any], None]
    ) -> None:
        """The store's own (this class only declares it)."""
        raise NotImplementedError

    async def commit_projection_parked(
        self,
        name: str,
        *,
        expected: int,
        position: int,
        work: Callable[[Any], None],
        park: Sequence[ParkedEvent] = (),
        release: Sequence[tuple[str, int]] = (),
    ) -> None:
        """`commit_projection`, keeping `park` and removing `release` in the same transaction.

        Raises:
            CheckpointError: Checkpoint `name` is not at `expected`.
        """
        job = self._reaction_side.parking_work(work, park, release)
        await self.commit_projection(name, expected=expected, position=position, work=job)

    async def commit_reaction(
        self, reaction: str, *, expected: int, position: int, parked: Sequence[ParkedEvent]
    ) -> None:
        """Move `reaction`'s checkpoint from `expected` to `position`, keep `parked`, atomically.

        Raises:
            CheckpointError: The checkpoint is not at `expected`.
        """
        await self._reaction_side.commit_reaction(
            reaction, expected=expected, position=position, parked=parked
        )

    async def load_parked(self, reaction: str | None = None) -> list[ParkedEvent]:
        """Return the parked events of `reaction` (None: of every reaction), by position."""
        return await self._reaction_side.load_parked(reaction)

    async def request_parked(
        self, reaction: str, position: int, request: ParkRequest, reason: str | None
    ) -> bool:
        """Record an operator's request on a parked event; return whether it is parked."""
        return await self._reaction_side.request_parked(reaction, position, request, reason)

    async def repark(self, reaction: str, position: int, *, error: str, attempts: int) -> None:
        """Record that a parked event failed again, clearing any request on it."""
        await self._reaction_side.repark(reaction, position, error=error, attempts=attempts)

    async def release_parked(
        self, reaction: str, position: int, *, skipped: tuple[str, str] | None = None
    ) -> None:
        """Remove a parked event: handled at last, or skipped (`(event_class, reason)` recorded)."""
        await self._reaction_side.release_parked(reaction, position, skipped=skipped)

    async def schedule_timer(self, timer: Timer) -> None:
        """Keep durable timer `timer`, replacing any timer of the same name."""
        await self._reaction_side.schedule_timer(timer)

    async def cancel_timer(self, name: str, *, sequence: int | None = None) -> bool:
        """Cancel timer `name` (as of log position `sequence`); return whether it was pending."""
        return await self._reaction_side.cancel_timer(name, sequence=sequence)

    async def claim_timers(self, now: datetime, *, until: datetime, limit: int) -> list[Timer]:
        """Claim up to `limit` timers due at `now` (and not held by a process) until `until`."""
        return await self._reaction_side.claim_timers(now, until=until, limit=limit)

    async def finish_timer(self, name: str, generation: UUID) -> None:
        """Remove timer `name` if it is still generation `generation` (it fired)."""
        await self._reaction_side.finish_timer(name, generation)

    async def retry_timer(
        self, name: str, generation: UUID, *, due_at: datetime, error: str
    ) -> None:
        """Record a failed firing of generation `generation`: due again at `due_at`."""
        await self._reaction_side.retry_timer(name, generation, due_at=due_at, error=error)

    async def load_timers(self) -> list[Timer]:
        """Return the pending timers, soonest first."""
        return await self._reaction_side.load_timers()
