"""Step 6: the library's tests, with fabula.testing (run: `pytest test_library.py`)."""

import asyncio
from datetime import date
from pathlib import Path
from uuid import UUID, uuid4

from loans import Book, BookAdded, BookLent, BookReturned, LibraryError
from shelf import Shelf, loans_of

import fabula
from fabula.sqlite import SQLiteEventStore
from fabula.testing import scenario

ADA, BOB = uuid4(), uuid4()
DUE = date(2027, 1, 22)


def test_a_book_on_the_shelf_is_lent() -> None:
    """A book on the shelf is lent: BookLent, to whom and until when."""
    scenario(Book, BookAdded(title="Dune")).when(lambda book: book.lend(ADA, DUE)).then(
        BookLent(member_id=ADA, due=DUE)
    )


def test_a_lent_book_cannot_be_lent_again() -> None:
    """The rule holds: a LibraryError, and nothing recorded."""
    history = (BookAdded(title="Dune"), BookLent(member_id=ADA, due=DUE))
    scenario(Book, *history).when(lambda book: book.lend(BOB, DUE)).then_raises(
        LibraryError, match="already lent"
    )


def test_a_returned_book_names_who_had_it() -> None:
    """Giving a book back records who had it."""
    history = (BookAdded(title="Dune"), BookLent(member_id=ADA, due=DUE))
    scenario(Book, *history).when(lambda book: book.give_back()).then(BookReturned(member_id=ADA))


def test_the_shelf_lists_a_members_loans(tmp_path: Path) -> None:
    """The read model and its query, on a real SQLite file."""

    async def run() -> list[str]:
        async with SQLiteEventStore(tmp_path / "library.db") as store:
            repo = fabula.Repository(store)
            for title in ("Emma", "Dune"):
                book = Book.add(uuid4(), title)
                book.lend(ADA, DUE)
                await repo.save(book)
            await fabula.Projector(store, [Shelf()]).catch_up()
            codec = fabula.CursorCodec()
            page = await loans_of(store.read_model(), codec, ADA)
            assert page.next_cursor is None
            assert await loans_of(store.read_model(), codec, BOB) == fabula.Page(())
            return sorted(loan.title for loan in page.items)

    assert asyncio.run(run()) == ["Dune", "Emma"]


def test_ids_come_back_as_uuids() -> None:
    """Events carry the aggregate's id as a UUID."""
    book = Book.add(UUID(int=7), "Kim")
    assert isinstance(book.pending_events[0].aggregate_id, UUID)
