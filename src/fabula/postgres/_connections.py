"""The store's connection pool, and psycopg's errors mapped to fabula's in one place.

Every statement the store sends goes through `Connections`: a pooled
connection (in a transaction or not) whose driver errors leave as
fabula's, most specific first, like httpx's `map_httpcore_exceptions()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeAlias

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from fabula.exceptions import FabulaError, StoreError, StoreUnavailableError

__all__ = [
    "ConnectionLostError",
    "Connections",
    "check_conninfo",
    "map_errors",
    "redacted",
    "storage_failure",
    "unknown_outcome",
]


class ConnectionLostError(StoreUnavailableError):
    """The connection broke during a call: the server's side of it is gone or going."""


_AnyConnection: TypeAlias = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def _none() -> None:
    return None


@contextlib.contextmanager
def map_errors(
    connect_timeout: float,
    used: Callable[[], _AnyConnection | None] = _none,
    *,
    pool: psycopg_pool.AsyncConnectionPool[Any] | None = None,
) -> Iterator[None]:
    """Turn psycopg's errors into fabula's, most specific first.

    Args:
        connect_timeout: How long a connection was waited for (for the message).
        used: Returns the connection the block was handed, if any: a broken
            one means the server's side is gone (`ConnectionLostError`).
        pool: The pool the block takes its connection from: a timeout's
            message then says how the pool stood.
    """
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        whose = "the store's pool"
        state = "" if pool is None else f" ({describe_pool(pool, whose)})"
        msg = f"no PostgreSQL connection within {connect_timeout} s: {exc}{state}"
        raise StoreUnavailableError(msg) from exc
    except psycopg.OperationalError as exc:
        msg = f"PostgreSQL is unavailable: {exc}"
        conn = used()
        if conn is not None and conn.broken:
            raise ConnectionLostError(msg) from exc
        # The server answered (a lock or statement timeout, say) and the
        # session goes on: whatever the statement did was rolled back.
        raise StoreUnavailableError(msg) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL error: {exc}") from exc


def describe_pool(
    pool: psycopg_pool.AsyncConnectionPool[Any] | psycopg_pool.ConnectionPool[Any], whose: str
) -> str:
    """What a pool that gave no connection in time was doing, in a few words."""
    stats = pool.get_stats()
    return (
        f"{whose} had {stats.get('pool_size', 0)} of {stats.get('pool_max', 0)} "
        f"connections, {stats.get('pool_available', 0)} free, "
        f"{stats.get('requests_waiting', 0)} requests waiting, "
        f"{stats.get('connections_errors', 0)} failed connection attempts"
    )


# A password in a URL (scheme://user:secret@host) or a keyword (password=secret).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)")


def redacted(text: str, conninfo: str) -> str:
    """`text` with every password masked: the one in `conninfo`, and any a URL or keyword holds.

    For messages that may quote a connection string (psycopg's parse
    errors do, password and all) on their way to a log or a terminal.
    """
    masked = _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        password = None
    if password:
        masked = masked.replace(str(password), "***")
    return masked


def check_conninfo(conninfo: str) -> None:
    """Check that `conninfo` parses as a PostgreSQL connection string (a URL or key=value pairs).

    Raises:
        ValueError: It does not; the message says why, without its password.
    """
    try:
        conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        msg = f"not a PostgreSQL connection string: {redacted(str(exc).strip(), conninfo)}"
        raise ValueError(msg) from None  # the cause quotes the password


def storage_failure(exc: BaseException) -> FabulaError | None:
    """The store's error behind `exc`, if a statement in it met an unavailable server.

    For a projection handler's exception: a lost connection, a server
    shutting down, a full disk or a deadlock met by the handler's own
    statement (psycopg's `OperationalError`: SQLSTATE classes 08, 40, 53,
    57) is the store's failure, to wait out, not the handler's, to stop at.
    Follows the chain of causes, as far as a handler may wrap them.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, psycopg.OperationalError):
            return StoreUnavailableError(f"PostgreSQL is unavailable: {seen}")
        seen = seen.__cause__ or seen.__context__
    return None


def unknown_outcome(why: str) -> StoreUnavailableError:
    """The error for an append whose COMMIT got no answer and whose fate cannot be told."""
    return StoreUnavailableError(
        f"the append's outcome is unknown: its COMMIT got no answer and the server cannot "
        f"tell ({why}); retrying it with the same events is safe, a retry is recognised "
        f"by their ids"
    )


class Connections:
    """The store's pool of autocommit connections.

    Args:
        pool: The pool (the store's own, or one the user opened).
        own_pool: Whether the store opens and closes it.
        conninfo: The connection string, when there is one to listen on and
            to open dedicated connections with.
        connect_timeout: Seconds to wait for a connection.
    """

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        *,
        own_pool: bool,
        conninfo: str | None,
        connect_timeout: float,
    ) -> None:
        self.pool = pool
        self.own_pool = own_pool
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout

    @classmethod
    def to(
        cls,
        conninfo: str | psycopg_pool.AsyncConnectionPool[Any],
        *,
        application_name: str,
        min_size: int,
        max_size: int,
        connect_timeout: float,
    ) -> Connections:
        """Connections through the user's own pool, or through a pool made (not yet opened) here.

        A pool whose connection string is computed cannot be listened on
        (`conninfo` is then None): subscriptions poll.
        """
        if isinstance(conninfo, psycopg_pool.AsyncConnectionPool):
            given = conninfo.conninfo if isinstance(conninfo.conninfo, str) else None
            return cls(conninfo, own_pool=False, conninfo=given, connect_timeout=connect_timeout)
        check_conninfo(conninfo)
        pool = psycopg_pool.AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "application_name": application_name[:63]},
            timeout=connect_timeout,
            open=False,
            name="fabula",
        )
        return cls(pool, own_pool=True, conninfo=conninfo, connect_timeout=connect_timeout)

    async def open(self) -> None:
        """Open the pool if the store made it.

        Raises:
            StoreUnavailableError: The server cannot be reached in time.
        """
        if not self.own_pool:
            return
        assert self.conninfo is not None  # noqa: S101 - a pool made here has it
        # One connection first: a refused password, an unknown host or a bad
        # option (sslmode=bogus) is reported at once, as the server said it,
        # rather than as a pool that did not fill in `connect_timeout`.
        try:
            probe = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(self._cannot_connect(exc)) from None
        await probe.close()
        try:
            await self.pool.open(wait=True, timeout=self.connect_timeout)
        except (psycopg_pool.PoolTimeout, psycopg.Error) as exc:
            await self.pool.close()
            raise StoreUnavailableError(self._cannot_connect(exc)) from None

    def _cannot_connect(self, exc: Exception) -> str:
        why = str(exc).strip().removeprefix("connection is bad: ") or type(exc).__name__
        return f"cannot connect to PostgreSQL: {redacted(why, self.conninfo or '')}"

    async def close(self) -> None:
        """Close the pool if the store made it."""
        if self.own_pool:
            await self.pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in a transaction; database errors become fabula's."""
        async with self._connection(transaction=True) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def single(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for statements that are each their own transaction."""
        async with self._connection(transaction=False) as conn:
            yield conn

    async def query(
        self, statement: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (none for a write).

        A connection whose server process has ended fails its first
        statement; the statement is then run once more on a fresh one. Safe:
        these statements are reads, or writes that are harmless to repeat.
        """
        try:
            return await self._query_once(statement, params)
        except ConnectionLostError:
            await self.discard_dead()
            return await self._query_once(statement, params)

    async def discard_dead(self) -> None:
        """One pooled connection was dead: check the others before trying again.

        What ends one server process (a restart, an operator) has usually
        ended them all; a retry must not land on the next dead one.
        """
        with contextlib.suppress(psycopg.Error, psycopg_pool.PoolTimeout):
            await self.pool.check()

    async def _query_once(
        self, statement: str, params: Sequence[Any] | dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        async with self.single() as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchall() if cursor.description is not None else []

    @contextlib.asynccontextmanager
    async def _connection(
        self, *, transaction: bool
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        task = asyncio.current_task()
        cancels = 0 if task is None else task.cancelling()
        used: psycopg.AsyncConnection[Any] | None = None
        # `used` is read when an error leaves the block: the lambda sees its last value.
        with map_errors(self.connect_timeout, lambda: used, pool=self.pool):
            async with self.pool.connection() as conn:
                used = conn
                if task is not None and task.cancelling() > cancels:
                    # The pool waits with asyncio.wait_for, which on Python 3.11
                    # can hand over a connection and drop a cancellation that
                    # came in the same tick (python/cpython#86296): deliver it.
                    raise asyncio.CancelledError
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
