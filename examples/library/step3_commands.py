"""Step 3: commands through a bus; a keyed command sent twice runs once."""

import asyncio
import tempfile
from datetime import date
from pathlib import Path
from uuid import UUID

from desk import AddBook, JoinLibrary, LendBook, command_bus

import fabula
from fabula.sqlite import SQLiteEventStore

DUNE = UUID("00000000-0000-4000-8000-000000000001")
ADA = UUID("00000000-0000-4000-8000-00000000000a")


async def main(folder: Path) -> None:
    """Run the step on a database file in `folder`."""
    async with SQLiteEventStore(folder / "library.db") as store:
        bus = command_bus(store)
        await bus.dispatch(JoinLibrary(member_id=ADA, name="Ada"))
        await bus.dispatch(AddBook(book_id=DUNE, title="Dune"))

        lend = LendBook(book_id=DUNE, member_id=ADA, today=date(2027, 1, 1), idempotency_key="l-1")
        print("due", await bus.dispatch(lend))
        print("due", await bus.dispatch(lend))  # a retry: the same answer, nothing new stored
        print("events in Dune's stream:", len(await store.read_stream(str(DUNE))))

        try:
            await bus.dispatch(LendBook(book_id=DUNE, member_id=ADA, today=date(2027, 1, 2)))
        except fabula.DomainError as refused:
            print("refused:", refused)


with tempfile.TemporaryDirectory() as scratch:
    asyncio.run(main(Path(scratch)))
