"""The library's commands and their handlers: what a desk can do.

Step 3 of the tutorial. `LendBook` carries an idempotency key: sent twice
(a retry after a timeout, say), it lends the book once and answers both.
"""

from datetime import date, timedelta
from uuid import UUID

import attrs
from loans import Book, Member

import fabula

LOAN_DAYS = 21


@attrs.frozen(kw_only=True)
class JoinLibrary(fabula.Command[UUID]):
    """Make someone a member; answers their id."""

    member_id: UUID
    name: str


@attrs.frozen(kw_only=True)
class AddBook(fabula.Command[UUID]):
    """Put a book on the shelves; answers its id."""

    book_id: UUID
    title: str


@attrs.frozen(kw_only=True)
class LendBook(fabula.Command[date]):
    """Lend a book; answers its due date."""

    book_id: UUID
    member_id: UUID
    today: date


@attrs.frozen(kw_only=True)
class ReturnBook(fabula.Command[None]):
    """Take a book back."""

    book_id: UUID


@attrs.define
class Desk:
    """Handles the commands: load, decide, save."""

    repo: fabula.Repository

    def register(self, bus: fabula.CommandBus) -> None:
        """Register each command's handler on `bus`."""
        bus.register(JoinLibrary, self.join)
        bus.register(AddBook, self.add)
        bus.register(LendBook, self.lend)
        bus.register(ReturnBook, self.give_back)

    async def join(self, command: JoinLibrary) -> UUID:
        """Handle `JoinLibrary`."""
        await self.repo.save(Member.join(command.member_id, command.name))
        return command.member_id

    async def add(self, command: AddBook) -> UUID:
        """Handle `AddBook`."""
        await self.repo.save(Book.add(command.book_id, command.title))
        return command.book_id

    async def lend(self, command: LendBook) -> date:
        """Handle `LendBook`: the member must exist, the book be on the shelf."""
        await self.repo.get(Member, command.member_id)  # an unknown member: AggregateNotFoundError
        book = await self.repo.get(Book, command.book_id)
        due = command.today + timedelta(days=LOAN_DAYS)
        book.lend(command.member_id, due)
        await self.repo.save(book)
        return due

    async def give_back(self, command: ReturnBook) -> None:
        """Handle `ReturnBook`."""
        book = await self.repo.get(Book, command.book_id)
        book.give_back()
        await self.repo.save(book)


def command_bus(store: fabula.Store) -> fabula.CommandBus:
    """The library's command bus: retries lost races, runs keyed commands once."""
    bus = fabula.CommandBus()
    bus.use(fabula.RetryOnConflict())
    bus.use(fabula.Idempotency(store))
    Desk(fabula.Repository(store)).register(bus)
    return bus
