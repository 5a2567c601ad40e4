"""The PostgreSQL store's read model: portable read-model SQL beside the events.

Statements run on the projections' pool, whose `search_path` starts with
the store's schema, so unqualified table names are the read model's there;
each `transaction` is one database transaction in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fabula._sql import POSTGRESQL, ReadModel, Sql

__all__ = ["PostgresReadModel"]

R = TypeVar("R")


class PostgresReadModel(ReadModel):
    """A SQL read model in the PostgreSQL store's schema (`PostgresEventStore.read_model()`).

    Args:
        schema: The store's schema, where the tables are.
        run: Runs a job in one transaction on the projections' pool.
    """

    dialect = POSTGRESQL

    def __init__(self, schema: str, run: Callable[[Callable[[Any], Any]], Awaitable[Any]]) -> None:
        self.schema = schema
        self._run = run

    def __repr__(self) -> str:
        return f"<PostgresReadModel schema {self.schema!r}>"

    async def transaction(self, work: Callable[[Sql], R], *, write: bool = False) -> R:
        """Run `work` in one transaction, off the event loop (see `ReadModel.transaction`)."""

        def job(conn: Any) -> R:  # noqa: ANN401 - psycopg's connection
            if not write:
                conn.execute("SET TRANSACTION READ ONLY")
            return work(Sql(conn, POSTGRESQL))

        result: R = await self._run(job)
        return result
