"""Step 2: keep the events in SQLite; load an aggregate back; a stale write is refused."""

import asyncio
import tempfile
from datetime import date
from pathlib import Path
from uuid import UUID

from loans import Book

import fabula
from fabula.sqlite import SQLiteEventStore

DUNE = UUID("00000000-0000-4000-8000-000000000001")
ADA = UUID("00000000-0000-4000-8000-00000000000a")
BOB = UUID("00000000-0000-4000-8000-00000000000b")


async def main(folder: Path) -> None:
    """Run the step on a database file in `folder`."""
    async with SQLiteEventStore(folder / "library.db") as store:
        repo = fabula.Repository(store)
        await repo.save(Book.add(DUNE, "Dune"))

        book = await repo.get(Book, DUNE)
        print(f"loaded {book.title!r} at version {book.version}")

        # Two desks load the same book; the first to save wins.
        first, second = await repo.get(Book, DUNE), await repo.get(Book, DUNE)
        first.lend(ADA, due=date(2027, 1, 15))
        second.lend(BOB, due=date(2027, 1, 20))
        await repo.save(first)
        try:
            await repo.save(second)
        except fabula.ConcurrencyError:
            print("the second desk's loan was refused: the book had changed")

        again = await repo.get(Book, "00000000-0000-4000-8000-000000000001")  # text works too
        print("lent to Ada:", again.borrower == ADA, "| id is a UUID:", isinstance(again.id, UUID))


with tempfile.TemporaryDirectory() as scratch:
    asyncio.run(main(Path(scratch)))
