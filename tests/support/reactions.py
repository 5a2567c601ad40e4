"""A small reacting domain: deposits noted in a tally per account, by a reaction or a process.

`Mirror` reacts to each `Deposited` by sending `Note`, whose handler
records `Noted` in the tally stream `tally-<account>`. Counting `Noted`
events per source position shows whether an effect was committed once,
twice or never.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

import fabula
from fabula.testing import Deposited


@fabula.event("tests.Noted")
@attrs.frozen(kw_only=True)
class Noted(fabula.DomainEvent[str]):
    source: int
    amount: str


class NoteRefused(fabula.DomainError):
    """The tally refuses a note (a command's rule, not a failure)."""


@attrs.define
class Tally(fabula.Aggregate[str]):
    sources: list[int] = attrs.Factory(list)

    def note(self, source: int, amount: str) -> None:
        if amount == "refuse":
            msg = "this note is refused"
            raise NoteRefused(msg)
        self.record(Noted(source=source, amount=amount))

    @fabula.apply
    def _noted(self, event: Noted) -> None:
        self.sources.append(event.source)


@attrs.frozen(kw_only=True)
class Note(fabula.Command[int]):
    tally: str
    source: int
    amount: str = "1"


def make_bus(store: fabula.Store) -> fabula.CommandBus:
    """A bus with the idempotency middleware and the `Note` handler."""
    repo = fabula.Repository(store)
    bus = fabula.CommandBus()
    bus.use(fabula.Idempotency(store))

    async def note(command: Note) -> int:
        try:
            tally = await repo.get(Tally, command.tally)
        except fabula.AggregateNotFoundError:
            tally = Tally(id=command.tally)
        tally.note(command.source, command.amount)
        await repo.save(tally)
        return len(tally.sources)

    bus.register(Note, note)
    return bus


async def noted(store: fabula.Store) -> dict[int, int]:
    """How many times each source was noted, `Pairs`' notes (`pair-*`, `reminder-*`) aside.

    Reads up to the head: on PostgreSQL, a transaction open elsewhere on
    the server holds readers back for a moment, and this waits it out.
    """
    head = await store.head_position()
    counts: dict[int, int] = {}
    after = 0
    while after < head:
        page = await store.read_log(after=after, limit=10_000, event_types=[Noted])
        for recorded in page.events:
            note = recorded.event
            if isinstance(note, Noted) and not recorded.stream_id.startswith(
                ("pair-", "reminder-")
            ):
                counts[note.source] = counts.get(note.source, 0) + 1
        if page.position == after:
            await store.wait_for_commit(after, 0.05)
        after = page.position
    return counts


class Mirror(fabula.Reaction):
    """Notes every deposit in its account's tally; fails where `fails` says."""

    name = "mirror"

    def __init__(
        self, fails: Callable[[fabula.RecordedEvent], bool] | None = None, pause: float = 0
    ) -> None:
        self.fails = fails
        self.pause = pause
        self.handled: list[tuple[str, int]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @fabula.reacts
    async def _deposited(self, event: Deposited, ctx: fabula.ReactionContext) -> None:
        recorded = ctx.recorded
        if self.fails is not None and self.fails(recorded):
            msg = f"cannot handle {recorded.position}"
            raise RuntimeError(msg)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.pause:
                await asyncio.sleep(self.pause)
            await ctx.send(
                Note(
                    tally=f"tally-{recorded.stream_id}", source=recorded.position, amount=event.note
                )
            )
        finally:
            self.in_flight -= 1
        self.handled.append((recorded.stream_id, recorded.position))


@attrs.frozen
class Pairing:
    """A process's state: the deposits seen, and whether a pair was noted."""

    seen: tuple[int, ...] = ()


class Pairs(fabula.ProcessManager[Pairing]):
    """Per account: after two deposits, notes the second and finishes; schedules a reminder."""

    name = "pairs"
    state = Pairing

    def __init__(self, remind_at: datetime | None = None) -> None:
        self.remind_at = remind_at
        self.decided = 0

    def process_id(self, recorded: fabula.RecordedEvent) -> str | None:
        return recorded.stream_id if recorded.stream_id.startswith("acc-") else None

    @fabula.reacts
    async def _deposited(self, event: Deposited, process: fabula.Process[Pairing]) -> None:
        self.decided += 1
        seen = (*process.state.seen, event.version)
        process.state = Pairing(seen)
        if len(seen) == 1 and self.remind_at is not None:
            reminder = Note(tally=f"reminder-{process.id}", source=0, amount="reminder")
            process.schedule(f"remind-{process.id}", at=self.remind_at, command=reminder)
        if len(seen) == 2:
            process.cancel(f"remind-{process.id}")
            process.send(Note(tally=f"pair-{process.id}", source=event.version, amount="pair"))
            process.finish()


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]
