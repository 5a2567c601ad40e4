"""The library's read model: who has which book, and a member's loans a page at a time.

Step 4 of the tutorial. One `fabula.SqlProjection` and one query, the same
on SQLite and PostgreSQL: named parameters, portable column types, rows
read into attrs classes.
"""

from datetime import date
from uuid import UUID

import attrs
from loans import BookAdded, BookLent, BookReturned

import fabula


class Shelf(fabula.SqlProjection):
    """Keeps `books` (every title) and `loans` (the books out, with their borrower)."""

    name = "shelf"
    tables = ("books", "loans")
    definitions = (
        "CREATE TABLE IF NOT EXISTS books (id {uuid} PRIMARY KEY, title {text} NOT NULL)",
        (
            "CREATE TABLE IF NOT EXISTS loans "
            "(book_id {uuid} PRIMARY KEY, member_id {uuid} NOT NULL, due {date} NOT NULL)"
        ),
    )

    @fabula.handles
    def _added(self, event: BookAdded, sql: fabula.Sql) -> None:
        sql.execute(
            "INSERT INTO books VALUES (:id, :title) ON CONFLICT (id) DO NOTHING",
            {"id": event.aggregate_id, "title": event.title},
        )

    @fabula.handles
    def _lent(self, event: BookLent, sql: fabula.Sql) -> None:
        sql.execute(
            "INSERT INTO loans VALUES (:book, :member, :due) ON CONFLICT (book_id) DO NOTHING",
            {"book": event.aggregate_id, "member": event.member_id, "due": event.due},
        )

    @fabula.handles
    def _returned(self, event: BookReturned, sql: fabula.Sql) -> None:
        sql.execute("DELETE FROM loans WHERE book_id = :book", {"book": event.aggregate_id})


@attrs.frozen
class Loan:
    """A book a member has, as the query returns it."""

    book_id: UUID
    title: str
    due: date


async def loans_of(
    tables: fabula.ReadModel,
    codec: fabula.CursorCodec,
    member_id: UUID,
    *,
    page_size: int = 10,
    cursor: str | None = None,
) -> fabula.Page[Loan]:
    """A member's loans, soonest due first, a page at a time.

    Raises:
        InvalidPageSizeError: `page_size` is not between 1 and 50.
        InvalidCursorError: `cursor` was altered, or comes from another member's listing.
    """
    size = fabula.check_page_size(page_size, maximum=50)
    scope = f"loans-of:{member_id}"  # a cursor works only for this member's listing
    where, params = "l.member_id = :member", dict[str, object](member=member_id, limit=size + 1)
    if cursor is not None:
        due, book_id = codec.decode(cursor, (str, UUID), scope=scope)
        where += " AND (l.due, l.book_id) > (:due, :book)"
        params |= {"due": date.fromisoformat(due), "book": book_id}
    statement = (
        "SELECT l.book_id, b.title, l.due FROM loans l JOIN books b ON b.id = l.book_id "  # noqa: S608 - our own SQL
        f"WHERE {where} ORDER BY l.due, l.book_id LIMIT :limit"
    )
    rows = await tables.fetch_all(statement, params, row=Loan)
    return fabula.Page.from_rows(
        rows, size, key=lambda loan: (loan.due.isoformat(), loan.book_id), codec=codec, scope=scope
    )
