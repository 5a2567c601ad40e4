"""Step 4: a projection keeps a read model; a paginated query reads it."""

import asyncio
import tempfile
from datetime import date
from pathlib import Path
from uuid import UUID

from desk import AddBook, JoinLibrary, LendBook, ReturnBook, command_bus
from shelf import Shelf, loans_of

import fabula
from fabula.sqlite import SQLiteEventStore

ADA = UUID("00000000-0000-4000-8000-00000000000a")
TITLES = ["Dune", "Emma", "Kim", "Ulysses", "Walden"]
BOOKS = [UUID(f"00000000-0000-4000-8000-00000000000{n}") for n in range(1, 6)]


async def tour(store: fabula.SqlStore) -> None:
    """Fill the library, project it, and page through Ada's loans: on any SQL store."""
    bus = command_bus(store)
    await bus.dispatch(JoinLibrary(member_id=ADA, name="Ada"))
    for book_id, title in zip(BOOKS, TITLES, strict=True):
        await bus.dispatch(AddBook(book_id=book_id, title=title))
    for day, book_id in enumerate(BOOKS, start=1):
        await bus.dispatch(LendBook(book_id=book_id, member_id=ADA, today=date(2027, 1, day)))
    await bus.dispatch(ReturnBook(book_id=BOOKS[2]))  # Kim comes back

    projector = fabula.Projector(store, [Shelf()])
    await projector.catch_up()  # a service runs `projector.run()` instead

    codec = fabula.CursorCodec(secret=b"keep me on the server")
    page = await loans_of(store.read_model(), codec, ADA, page_size=2)
    while True:
        print([f"{loan.title} due {loan.due}" for loan in page.items])
        if page.next_cursor is None:
            break
        page = await loans_of(store.read_model(), codec, ADA, page_size=2, cursor=page.next_cursor)


async def main(folder: Path) -> None:
    """Run the step on a database file in `folder`."""
    async with SQLiteEventStore(folder / "library.db") as store:
        await tour(store)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(scratch)))
