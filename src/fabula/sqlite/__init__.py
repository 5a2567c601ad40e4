"""SQLiteEventStore: the durable, embedded default store (stdlib `sqlite3` only).

The package's parts, each doing the I/O for decisions made in the kernel:

- `_store`: the `SQLiteEventStore` facade: appends, reads, snapshots and
  idempotency records.
- `_writer`: the writer task, group commit and WAL checkpoints.
- `_projections`: checkpoints, skips and side-file rebuilds.
- `_schema`: the schema, its migrations and every statement.
- `_errors`: sqlite3's errors mapped to fabula's, in one place.
- `_inspect`: the `fabula` command's read-only view.
"""

from fabula._public import publish as _publish
from fabula.sqlite._store import SQLiteEventStore, Synchronous

__all__ = ["SQLiteEventStore", "Synchronous"]

_publish(__name__, globals(), __all__)
