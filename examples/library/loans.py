"""A lending library's domain: books and members, the events they record, their rules.

Step 1 of the tutorial (docs/tutorial.md). Ids are UUIDs (the default of
`fabula.Aggregate` and `fabula.DomainEvent`).
"""

from datetime import date
from uuid import UUID

import attrs

import fabula


class LibraryError(fabula.DomainError):
    """A rule of the library refused a command."""


@fabula.event("library.MemberJoined")
@attrs.frozen
class MemberJoined(fabula.DomainEvent):
    """Someone joined the library."""

    name: str


@fabula.event("library.BookAdded")
@attrs.frozen
class BookAdded(fabula.DomainEvent):
    """A book was put on the shelves."""

    title: str


@fabula.event("library.BookLent")
@attrs.frozen
class BookLent(fabula.DomainEvent):
    """A book was lent to a member, until a date."""

    member_id: UUID
    due: date


@fabula.event("library.BookReturned")
@attrs.frozen
class BookReturned(fabula.DomainEvent):
    """A book came back from the member who had it."""

    member_id: UUID


@attrs.define
class Member(fabula.Aggregate):
    """A member of the library."""

    name: str = ""

    @classmethod
    def join(cls, member_id: UUID, name: str) -> "Member":
        """A new member, who must have a name."""
        if not name.strip():
            raise LibraryError("a member needs a name")
        member = cls(id=member_id)
        member.record(MemberJoined(name=name))
        return member

    @fabula.apply
    def _joined(self, event: MemberJoined) -> None:
        self.name = event.name


@attrs.define
class Book(fabula.Aggregate):
    """A book: on the shelf, or lent to one member."""

    title: str = ""
    borrower: UUID | None = None

    @classmethod
    def add(cls, book_id: UUID, title: str) -> "Book":
        """A new book on the shelf."""
        book = cls(id=book_id)
        book.record(BookAdded(title=title))
        return book

    def lend(self, member_id: UUID, due: date) -> None:
        """Lend the book until `due`; a book already lent cannot be."""
        if self.borrower is not None:
            raise LibraryError(f"{self.title!r} is already lent")
        self.record(BookLent(member_id=member_id, due=due))

    def give_back(self) -> None:
        """The book comes back; one that is not lent cannot."""
        if self.borrower is None:
            raise LibraryError(f"{self.title!r} is not lent")
        self.record(BookReturned(member_id=self.borrower))

    @fabula.apply
    def _added(self, event: BookAdded) -> None:
        self.title = event.title

    @fabula.apply
    def _lent(self, event: BookLent) -> None:
        self.borrower = event.member_id

    @fabula.apply
    def _returned(self, _: BookReturned) -> None:
        self.borrower = None
