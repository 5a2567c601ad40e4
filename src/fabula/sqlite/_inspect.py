"""The `fabula` command's read-only view of a SQLite store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from fabula._inspect import (
    Checkpoint,
    Inspector,
    StoredEvent,
    StoreInfo,
    StreamSummary,
    _moment,
    _stored,
    _summaries,
)
from fabula.exceptions import StoreError, StoreUnavailableError
from fabula.sqlite import _schema as schema

__all__ = ["SQLiteInspector"]

_MAX_POSITION = 2**63 - 1

_EVENT_COLUMNS = "position, stream_id, version, event_id, type, schema_version, timestamp, data, "
_EVENT_COLUMNS += "metadata"


# A grouped stream's first event's type, through the (stream_id, version) index.
_FIRST_TYPE = (
    "(SELECT f.type FROM fabula_events f WHERE f.stream_id = g.stream_id AND f.version = 1)"
)


class SQLiteInspector(Inspector):
    """Reads a SQLite store through a read-only connection.

    Args:
        path: The database file.

    Raises:
        StoreError: The file does not exist or holds no fabula store.
    """

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.location = path
        if not Path(path).is_file():
            raise StoreError(f"there is no SQLite store at {path!r}: no such file")
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            found = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'fabula_events'"
            ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path!r} is not a SQLite database: {exc}") from exc
        if not found:
            self._conn.close()
            raise StoreError(f"{path!r} is a SQLite database, but holds no fabula store")

    def _rows(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(statement, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"cannot read {self.location!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.location!r}: {exc}") from exc

    def info(self) -> StoreInfo:
        """The store's kind, schema version, counts, head position and size."""
        version = self._rows("SELECT value FROM fabula_meta WHERE key = 'schema_version'")
        events, streams, head = self._rows(
            "SELECT count(*), count(DISTINCT stream_id), coalesce(max(position), 0) "
            "FROM fabula_events"
        )[0]
        files = [Path(self.location + suffix) for suffix in ("", "-wal", "-shm")]
        size = sum(file.stat().st_size for file in files if file.exists())
        return StoreInfo(
            kind=self.kind,
            location=self.location,
            schema_version=int(version[0][0]) if version else 1,
            events=events,
            streams=streams,
            head=head,
            size_bytes=size,
        )

    # With max(version), SQLite takes the bare timestamp from that row: the
    # stream's last event, whatever its offset makes its text sort as.

    def streams(self, prefix: str, limit: int) -> list[StreamSummary]:
        """Streams whose id starts with `prefix`, by id."""
        rows = self._rows(
            f"SELECT stream_id, max(version), timestamp, {_FIRST_TYPE} FROM fabula_events g "  # noqa: S608 - a constant
            "WHERE substr(stream_id, 1, length(?)) = ? "
            "GROUP BY stream_id ORDER BY stream_id LIMIT ?",
            (prefix, prefix, limit),
        )
        return _summaries(rows)

    def largest_streams(self, limit: int) -> list[StreamSummary]:
        """The streams with the most events."""
        rows = self._rows(
            f"SELECT stream_id, max(version) AS n, timestamp, {_FIRST_TYPE} FROM fabula_events g "  # noqa: S608
            "GROUP BY stream_id ORDER BY n DESC, stream_id LIMIT ?",
            (limit,),
        )
        return _summaries(rows)

    def events(self, stream_id: str, from_version: int, limit: int | None) -> list[StoredEvent]:
        """A stream's events from `from_version` (none if the stream does not exist)."""
        rows = self._rows(schema.READ_STREAM, (stream_id, from_version, limit or -1))
        return [_stored(row) for row in rows]

    def log(
        self, after: int, limit: int, types: Sequence[str] | None
    ) -> tuple[list[StoredEvent], int]:
        """Up to `limit` events after `after` (rowid order is commit order on SQLite)."""
        if types:
            rows = self._rows(schema.READ_ALL_OF_TYPES, (after, json.dumps(types), limit))
        else:
            rows = self._rows(schema.READ_ALL, (after, limit))
        events = [_stored(row) for row in rows]
        return events, events[-1].position if events else after

    def readable_head(self) -> int:
        """The head: on SQLite every committed event is readable."""
        return int(self._rows(schema.HEAD_POSITION)[0][0])

    def count_after(
        self, position: int, types: Sequence[str] | None, *, upto: int | None = None
    ) -> int:
        """How many events (of `types`) come after `position` (and at or before `upto`)."""
        statement = "SELECT count(*) FROM fabula_events WHERE position > ? AND position <= ?"
        params: list[object] = [position, _MAX_POSITION if upto is None else upto]
        if types:
            statement += " AND type IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(types)))
        return int(self._rows(statement, params)[0][0])

    def by_type(self) -> list[tuple[str, int]]:
        """Events per stored type name, most first."""
        rows = self._rows(
            "SELECT type, count(*) AS n FROM fabula_events GROUP BY type ORDER BY n DESC, type"
        )
        return [(str(type_name), int(n)) for type_name, n in rows]

    def by_day(self) -> list[tuple[date, int]]:
        """Events per day (UTC), oldest first."""
        rows = self._rows(
            # date() turns a +HH:MM offset into the UTC date; an offset with
            # seconds (rare, historical) it cannot read keeps its own date.
            "SELECT coalesce(date(timestamp), substr(timestamp, 1, 10)) AS day, count(*) "
            "FROM fabula_events GROUP BY day ORDER BY day"
        )
        return [(date.fromisoformat(day), int(n)) for day, n in rows]

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every stored projection checkpoint, by projection name."""
        rows = self._rows("SELECT name, position, updated_at FROM fabula_checkpoints")
        return {
            str(name): Checkpoint(str(name), int(position), _moment(moved))
            for name, position, moved in rows
        }

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
