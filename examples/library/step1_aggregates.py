"""Step 1: aggregates record events and enforce their rules; no store yet."""

from datetime import date
from uuid import UUID

from loans import Book, LibraryError

DUNE = UUID("00000000-0000-4000-8000-000000000001")
ADA = UUID("00000000-0000-4000-8000-00000000000a")

book = Book.add(DUNE, "Dune")
book.lend(ADA, due=date(2027, 1, 15))
for event in book.pending_events:
    print(event.version, type(event).__name__)
print("borrower is Ada:", book.borrower == ADA)

try:
    book.lend(ADA, due=date(2027, 2, 1))
except LibraryError as refused:
    print("refused:", refused)
