"""The `fabula` command's read-only view of a PostgreSQL store (needs `fabula[postgres]`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "reading a PostgreSQL store needs psycopg: pip install 'fabula[postgres]'"
    raise ImportError(msg) from exc

from fabula._inspect import (
    Checkpoint,
    Inspector,
    LeaseHolder,
    StoredEvent,
    StoreInfo,
    StreamSummary,
    _moment,
    _stored,
    _summaries,
)
from fabula.exceptions import StoreError, StoreUnavailableError
from fabula.postgres import _schema as sql
from fabula.postgres._connections import check_conninfo, redacted
from fabula.postgres._projections import lease_key

__all__ = ["PostgresInspector"]


class PostgresInspector(Inspector):
    """Reads a PostgreSQL store's schema over one read-only, autocommit connection.

    Args:
        url: The server's connection string.
        schema: The schema that holds the store's tables.

    Raises:
        ValueError: `schema` is not a plain identifier.
        StoreUnavailableError: The server cannot be reached.
        StoreError: The schema holds no fabula store.
    """

    kind = "postgresql"

    def __init__(self, url: str, *, schema: str = "public") -> None:
        sql.check_schema_name(schema)
        self.schema = schema
        self._sql = sql.Statements.for_schema(schema)
        self._table = f"{self._sql.schema}.fabula_events"
        # A grouped stream's first event's type, through the (stream_id, version) index.
        self._first_type = (
            f"(SELECT f.type FROM {self._table} f "  # noqa: S608 - a checked identifier
            "WHERE f.stream_id = g.stream_id AND f.version = 1)"
        )
        check_conninfo(url)
        self.location = f"{redacted(url, url)} (schema {schema})"
        try:
            self._conn = psycopg.connect(
                url, autocommit=True, connect_timeout=5, application_name="fabula-cli"
            )
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = redacted(first.removeprefix("connection is bad: "), url)
            raise StoreUnavailableError(f"cannot connect to PostgreSQL: {first}") from None
        self._conn.read_only = True
        found = self._rows(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{self._sql.schema}.fabula_meta",)
        )
        if not found[0][0]:
            self._conn.close()
            raise StoreError(f"there is no fabula store in schema {schema!r}")

    def _rows(
        self, statement: str, params: Sequence[object] | dict[str, object] = ()
    ) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(statement, params).fetchall()
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"PostgreSQL is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    def info(self) -> StoreInfo:
        """The store's kind, schema version, counts, head position and size."""
        version = self._rows(self._sql.schema_version)
        events, streams, head = self._rows(
            f"SELECT count(*), count(DISTINCT stream_id), coalesce(max(position), 0) "  # noqa: S608 - a checked identifier
            f"FROM {self._table}"
        )[0]
        size = self._rows(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (self.schema,),
        )[0][0]
        return StoreInfo(
            kind=self.kind,
            location=self.location,
            schema_version=int(version[0][0]) if version else 0,
            events=int(events),
            streams=int(streams),
            head=int(head),
            size_bytes=int(size),
        )

    def streams(self, prefix: str, limit: int) -> list[StreamSummary]:
        """Streams whose id starts with `prefix`, by id."""
        rows = self._rows(
            f"SELECT stream_id, max(version), max(timestamp), {self._first_type} "  # noqa: S608
            f"FROM {self._table} g WHERE left(stream_id, length(%s)) = %s "
            "GROUP BY stream_id ORDER BY stream_id LIMIT %s",
            (prefix, prefix, limit),
        )
        return _summaries(rows)

    def largest_streams(self, limit: int) -> list[StreamSummary]:
        """The streams with the most events."""
        rows = self._rows(
            f"SELECT stream_id, max(version) AS n, max(timestamp), {self._first_type} "  # noqa: S608
            f"FROM {self._table} g GROUP BY stream_id ORDER BY n DESC, stream_id LIMIT %s",
            (limit,),
        )
        return _summaries(rows)

    def events(self, stream_id: str, from_version: int, limit: int | None) -> list[StoredEvent]:
        """A stream's events from `from_version` (none if the stream does not exist)."""
        rows = self._rows(self._sql.read_stream, (stream_id, from_version, limit))
        return [_stored(row) for row in rows]

    def log(
        self, after: int, limit: int, types: Sequence[str] | None
    ) -> tuple[list[StoredEvent], int]:
        """Up to `limit` events after `after`, below the horizon the store's readers use."""
        params: dict[str, object] = {"after": after, "limit": limit}
        statement = self._sql.scan
        if types:
            params["types"] = sorted(types)
            statement = self._sql.scan_types
        rows = self._rows(statement, params)
        horizon, head = rows[0][0], rows[0][1]
        events = [_stored(row[2:]) for row in rows if row[2] is not None]
        if len(events) == limit:
            return events, events[-1].position
        return events, sql.read_up_to(after, horizon, head)

    def readable_head(self) -> int:
        """The last position below the horizon: nothing can commit at or below it later."""
        return int(self._rows(self._sql.readable_head)[0][0])

    def count_after(
        self, position: int, types: Sequence[str] | None, *, upto: int | None = None
    ) -> int:
        """How many events (of `types`) come after `position` (and at or before `upto`)."""
        statement = f"SELECT count(*) FROM {self._table} WHERE position > %s"  # noqa: S608
        params: list[object] = [position]
        if upto is not None:
            statement += " AND position <= %s"
            params.append(upto)
        if types:
            statement += " AND type = ANY(%s)"
            params.append(list(types))
        return int(self._rows(statement, params)[0][0])

    def by_type(self) -> list[tuple[str, int]]:
        """Events per stored type name, most first."""
        rows = self._rows(
            f"SELECT type, count(*) AS n FROM {self._table} GROUP BY type ORDER BY n DESC, type"  # noqa: S608
        )
        return [(str(type_name), int(n)) for type_name, n in rows]

    def by_day(self) -> list[tuple[date, int]]:
        """Events per day (UTC), oldest first."""
        rows = self._rows(
            f"SELECT (timestamp AT TIME ZONE 'UTC')::date AS day, count(*) FROM {self._table} "  # noqa: S608
            "GROUP BY day ORDER BY day"
        )
        return [(day, int(n)) for day, n in rows]

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every stored projection checkpoint, by projection name."""
        rows = self._rows(
            f"SELECT name, position, updated_at FROM {self._sql.schema}.fabula_checkpoints"  # noqa: S608
        )
        return {
            str(name): Checkpoint(str(name), int(position), _moment(moved))
            for name, position, moved in rows
        }

    def lease_holders(self, names: Sequence[str]) -> dict[str, LeaseHolder]:
        """The sessions that hold the advisory locks `Projector.run` leases projections with."""
        keys = {lease_key(self.schema, name): name for name in names}
        if not keys:
            return {}
        # An advisory lock on a bigint key shows its high half as classid and
        # its low half as objid (objsubid 1); hashtext's int4 widens with its sign.
        rows = self._rows(
            "SELECT k.key, l.pid, host(a.client_addr), a.backend_start "
            "FROM unnest(%s::text[]) AS k(key) "
            "JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(k.key)::bigint "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid",
            (list(keys),),
        )
        return {
            keys[key]: LeaseHolder(int(pid), client, None if since is None else _moment(since))
            for key, pid, client, since in rows
        }

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
